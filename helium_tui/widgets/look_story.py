"""The story pane of the "Look inside" view: the story's tokens, each earlier token shaded by how much the
selected token's position attends to it; the selected token in reverse, a click selects another.

Text is terminal-safe and never markup; a special token with no text (the start token) shows as ◆.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.geometry import Region
from textual.message import Message
from textual.widget import Widget

from helium_tui.safe_text import terminal_safe
from helium_tui.widgets.heat import heat, ink

EMPTY = "◆"  # a token that adds no text of its own (the start token, a byte held back)
NEXT = "▏next?"  # the slot after the story: the token the model would write next


class LookStory(Widget):
    """Renders pieces with attention shading; `select(i)` by click posts `Selected`."""

    @dataclass
    class Selected(Message):
        """The user clicked a token."""

        index: int  # its position in the look (len(pieces): the next-token slot)

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.pieces: list[str] = []  # the text each token adds
        self.weights: list[float] = []  # attention of the selected token's query to each earlier token
        self.selected = -1  # the selected token (len(pieces): the next-token slot)
        self.cut = 0  # story tokens left out before the first piece

    def show(self, pieces: list[str], weights: list[float], selected: int, cut: int) -> None:
        """Draw pieces shaded by weights (one per earlier token) with selected marked."""
        self.pieces, self.weights, self.selected, self.cut = pieces, weights, selected, cut
        self.refresh(layout=True)
        self.call_after_refresh(self.keep_selected_in_view)

    def render(self) -> Text:
        out = Text()
        out.append(self.cut_note(), "dim italic")
        top = max(self.weights, default=0.0) or 1.0
        for i, piece in enumerate(self.pieces):
            text = terminal_safe(piece) or EMPTY
            style = Style(meta={"@click": f"select({i})"})
            if i < len(self.weights) and self.weights[i] > 0:
                background = heat(self.weights[i] / top)
                style += Style(bgcolor=background, color=ink(background))
            if i == self.selected:
                style += Style(reverse=True, bold=True, underline=True)
            out.append(text, style)
        slot = Style(meta={"@click": f"select({len(self.pieces)})"}, dim=self.selected != len(self.pieces))
        out.append(NEXT, slot + Style(reverse=self.selected == len(self.pieces)))
        return out

    def cut_note(self) -> str:
        """What is said before the pieces when the story is longer than the model's context."""
        return (
            f"(… {self.cut} earlier tokens: the model sees the last {len(self.pieces)}) " if self.cut else ""
        )

    def action_select(self, index: int) -> None:
        """A click on a token."""
        self.post_message(self.Selected(index))

    def keep_selected_in_view(self) -> None:
        """Scroll the pane so the selected token's line shows (its line found by wrapping the text)."""
        width = self.content_size.width
        if width <= 0 or self.parent is None:
            return
        text = self.render()
        offset = len(self.cut_note()) + sum(
            len(terminal_safe(p) or EMPTY) for p in self.pieces[: self.selected]
        )
        line, seen = 0, 0
        for i, part in enumerate(text.wrap(self.app.console, width)):
            if seen + len(part.plain) > offset:
                line = i
                break
            seen += len(part.plain)
            line = i
        scroll = getattr(self.parent, "scroll_to_region", None)
        if scroll is not None:
            scroll(Region(0, line, 1, 1), animate=False, immediate=True)
