"""The token inspector panel: the selected token, its probability and the top alternatives.

Filled from a `TokenInfo` that the generator computed when it sampled the token; token text is shown
terminal-safe, as Rich `Text` (never markup).
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.generation.generate import TokenInfo
from helium_tui.safe_text import terminal_safe
from helium_tui.widgets.story_view import prob_colour

BAR_WIDTH = 8  # cells of the probability bar


def visible(token_text: str) -> str:
    """Token text with whitespace made visible (· for spaces, ⏎ for newlines), other controls as �."""
    return terminal_safe(token_text.replace(" ", "·").replace("\n", "⏎").replace("\t", "⇥")) or "∅"


def bar(prob: float) -> str:
    """A bar of BAR_WIDTH cells, filled in eighths."""
    eighths = round(max(0.0, min(1.0, prob)) * BAR_WIDTH * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(BAR_WIDTH)


class InspectorPanel(Static):
    """Shows one token's probability and the alternatives the model weighed."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.token: TokenInfo | None = None  # the token on display

    def on_mount(self) -> None:
        self.border_title = "Token inspector"
        self.show(None)

    def show(self, token: TokenInfo | None, index: int | None = None) -> None:
        """Display token (None: a hint on how to pick one)."""
        self.token = token
        if token is None:
            self.update(Text("Select a token: click it, or focus the story and use ← →.", style="dim"))
            return
        head = Text.assemble(
            ("Token ", "dim"),
            (visible(token.text), f"bold on {prob_colour(token.prob)}"),
            f"  p={token.prob:.3f}",
        )
        table = Table.grid(padding=(0, 1))
        table.add_column(max_width=10, no_wrap=True)
        table.add_column(width=BAR_WIDTH, no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        for text, token_id, prob in token.top:
            mark = "bold" if token_id == token.id else ""
            table.add_row(
                Text(visible(text), style=mark), Text(bar(prob), style=prob_colour(prob)), Text(f"{prob:.3f}")
            )
        chosen = any(token_id == token.id for _, token_id, _ in token.top)
        note = Text("" if chosen else "(sampled outside the top list)", style="dim italic")
        self.update(Group(head, table) if chosen else Group(head, table, note))
