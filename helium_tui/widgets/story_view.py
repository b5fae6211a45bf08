"""The story pane: the prompt, then the generated tokens as they stream in.

With the inspector on, each token is coloured by its probability and can be selected (click or arrows).
Text is made terminal-safe when drawn (`helium_tui.safe_text`); `pieces` keep what the model wrote.
`StoryPane` scrolls the story and keeps following its end while new text arrives; `VariantColumn` is one in
the compare view.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from engine.generation.generate import TokenInfo
from helium_tui.safe_text import terminal_safe

# (lowest probability, background colour): a token's colour is the first row its probability reaches
PROB_COLOURS: list[tuple[float, str]] = [
    (0.75, "#1d5c3a"),
    (0.45, "#4a5c1a"),
    (0.20, "#6b5212"),
    (0.08, "#7a3414"),
    (0.0, "#7d1c2c"),
]


def prob_colour(prob: float) -> str:
    """Background colour for a token of this probability (green = likely, red = surprising)."""
    return next(colour for floor, colour in PROB_COLOURS if prob >= floor)


@dataclass
class Piece:
    """A run of generated text; `token` is set for a sampled token (None for a decoder tail)."""

    text: str
    token: TokenInfo | None = None


class StoryView(Widget, can_focus=True):
    """Renders prompt + generated pieces; keeps a token cursor for the inspector."""

    BINDINGS = [
        Binding("left", "move(-1)", "Prev token", show=False),
        Binding("right", "move(1)", "Next token", show=False),
        Binding("home", "move_to(0)", "First token", show=False),
        Binding("end", "move_to(-1)", "Last token", show=False),
    ]

    COMPONENT_CLASSES = {"story--prompt", "story--text", "story--cursor", "story--hint"}

    inspect: reactive[bool] = reactive(False)
    """Colour tokens by probability and allow selecting them."""
    cursor: reactive[int] = reactive(-1)
    """Index into `pieces` of the selected token (-1: none)."""

    @dataclass
    class TokenSelected(Message):
        """The token cursor moved onto a token."""

        index: int  # its index in StoryView.pieces
        token: TokenInfo  # the token and its alternatives

    def __init__(self, hint: str = "", id: str | None = None) -> None:
        super().__init__(id=id)
        self.hint = hint  # shown while there is neither prompt nor story
        self.prompt = ""  # the text the story continues (shown dimmed)
        self.pieces: list[Piece] = []  # generated text, in order

    @property
    def text(self) -> str:
        """The generated text so far (without the prompt)."""
        return "".join(p.text for p in self.pieces)

    @property
    def token_indices(self) -> list[int]:
        """Indices of pieces that are sampled tokens (what the cursor can select)."""
        return [i for i, p in enumerate(self.pieces) if p.token is not None]

    def reset(self, prompt: str) -> None:
        """Start a new story after prompt."""
        self.prompt = prompt
        self.pieces = []
        self.cursor = -1
        self.refresh(layout=True)

    def extend(self, pieces: list[Piece]) -> None:
        """Append streamed pieces and redraw once.

        A layout pass (the whole screen) costs more than the repaint: it is requested only when the story
        needs another line (`helium bench studio` at 160x48: median 247 -> 280 tok/s; at 80x24 no change).
        """
        if not pieces:
            return
        self.pieces.extend(pieces)
        self.refresh()  # repaint; this also drops the cached content size
        width, height = self.content_size
        if not width or self.get_content_height(self.size, self.app.size, width) != height:
            self.refresh(layout=True)

    def render(self) -> Text:
        if not self.prompt and not self.pieces:
            return Text(self.hint, style=self.get_component_rich_style("story--hint"))
        out = Text()
        out.append(terminal_safe(self.prompt), style=self.get_component_rich_style("story--prompt"))
        plain = self.get_component_rich_style("story--text")
        cursor_style = self.get_component_rich_style("story--cursor")
        if not self.inspect:
            out.append(terminal_safe(self.text), style=plain)
            return out
        for i, piece in enumerate(self.pieces):
            if piece.token is None:
                out.append(terminal_safe(piece.text), style=plain)
                continue
            style = plain + Style(bgcolor=prob_colour(piece.token.prob), meta={"@click": f"select({i})"})
            if i == self.cursor:
                style += cursor_style
            out.append(
                terminal_safe(piece.text) or "·", style=style
            )  # a token with no text yet still gets a cell
        return out

    def watch_inspect(self) -> None:
        self.refresh(layout=True)

    def watch_cursor(self, index: int) -> None:
        self.refresh()
        if 0 <= index < len(self.pieces) and (token := self.pieces[index].token) is not None:
            self.post_message(self.TokenSelected(index, token))

    def action_select(self, index: int) -> None:
        """Select the token at piece index (mouse click)."""
        if self.inspect and 0 <= index < len(self.pieces) and self.pieces[index].token is not None:
            self.focus()
            self.cursor = index

    def action_move(self, step: int) -> None:
        """Move the token cursor by step tokens."""
        indices = self.token_indices
        if not indices:
            return
        if not self.inspect:
            self.inspect = True
        if self.cursor not in indices:
            self.cursor = indices[0 if step > 0 else -1]
            return
        pos = indices.index(self.cursor) + step
        self.cursor = indices[max(0, min(len(indices) - 1, pos))]

    def action_move_to(self, where: int) -> None:
        """Select the first (0) or last (-1) token."""
        indices = self.token_indices
        if indices:
            self.inspect = True
            self.cursor = indices[where]


class StoryPane(VerticalScroll, can_focus=False):
    """Scrolls a StoryView; while the reader is at the end, new text keeps the end in view.

    Whether to follow is decided when the view scrolls (at the end: follow; scrolled up: stay put), and the
    scroll to the end happens when the content has grown, so text that arrives before the layout catches up
    cannot leave the view a line short.
    """

    def __init__(self, story: StoryView, id: str | None = None) -> None:
        super().__init__(story, id=id)
        self.story = story  # the view inside
        self.following = True  # the view stays at the end as the story grows

    def restart(self, prompt: str) -> None:
        """Empty the story for a new one after prompt, followed from the start."""
        self.story.reset(prompt)
        self.scroll_home(animate=False, immediate=True)
        self.following = True

    def append(self, pieces: list[Piece]) -> None:
        """Add pieces to the story (see the class: the view follows if the reader was at the end)."""
        self.story.extend(pieces)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.following = new_value >= self.max_scroll_y - 1

    def watch_virtual_size(self, size: Size) -> None:
        if self.following:
            self.scroll_end(animate=False)  # after this layout, so it scrolls to the new end


class VariantColumn(StoryPane):
    """A column of the compare view: one variant's text, following its end; a click chooses it."""

    @dataclass
    class Clicked(Message):
        """The user clicked the column."""

        index: int  # the column, from 0

    def __init__(self, index: int) -> None:
        story = StoryView(hint="…")
        story.can_focus = False  # ← → choose columns here; they never move a token cursor
        super().__init__(story, id=f"variant-{index}")
        self.index = index  # its column, from 0

    def on_click(self) -> None:
        self.post_message(self.Clicked(self.index))
