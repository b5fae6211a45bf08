"""The help screen (f1): what the studio does and every key.

A modal page; escape, f1 or q closes it.
"""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS: list[tuple[str, str]] = [
    ("ctrl+g  ctrl+enter", "Generate a story from the prompt"),
    ("escape", "Stop the story being told"),
    ("ctrl+r", "Retell: same prompt, new seed unless fixed"),
    ("ctrl+n", "Continue: the story so far becomes the prompt"),
    ("f8", "Clear prompt and story"),
    ("f2", "Token inspector: colour tokens by probability"),
    ("← → home end", "Move between tokens (story focused)"),
    ("ctrl+o", "Choose a model"),
    ("ctrl+l", "Story library"),
    ("ctrl+t", "Training monitor"),
    ("ctrl+p", "Command palette: every action by name"),
    ("tab  shift+tab", "Focus: prompt, story, sliders, seed"),
    ("f1", "This help"),
    ("ctrl+q", "Quit"),
]

GUIDE = (
    "[b]Sliders[/b]: focus one with tab, then ← → (a step), pgup pgdn (a tenth), home end; or drag "
    "with the mouse. Temperature 0 is greedy; top-k 0 and top-p 1 switch those filters off. "
    "Turn on [b]Fixed seed[/b] to retell the same story every time.\n\n"
    "[b]Inspector[/b]: [on #1d5c3a] likely [/] … [on #7d1c2c] surprising [/] tokens; the panel lists "
    "the alternatives the model weighed."
)


def keys_table() -> Table:
    """The key list as a two-column grid."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold #ffa62b", no_wrap=True)
    table.add_column()
    for key, action in KEYS:
        table.add_row(key, action)
    return table


class HelpScreen(ModalScreen[None]):
    """Keys and a short guide."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("f1", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static("[b]Helium story studio[/b]  [dim]write an opening, press ctrl+g[/]",
                         id="help-title")
            yield Static(keys_table(), id="help-keys")
            yield Static(GUIDE, id="help-guide")

    def action_close(self) -> None:
        """Back to where we were."""
        self.dismiss(None)
