"""Small modal questions shared by the library and the training monitor: yes/no, and one line of text.

Questions and defaults are plain text, never markup, and terminal-safe (they often hold story text, file or
model names): a control character in them is shown as U+FFFD.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from helium_tui.safe_text import terminal_safe
from helium_tui.widgets.safe_input import SafeInput


class ConfirmDialog(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True for yes."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = terminal_safe(question)  # the text shown above the buttons

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.question), id="question")
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Close the dialog with the answer."""
        self.dismiss(yes)


class AskDialog(ModalScreen["str | None"]):
    """Ask for one line (a path, a name); dismisses with the stripped text, or None when cancelled or empty."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, default: str, hint: str = "enter: save · escape: cancel") -> None:
        super().__init__()
        self.question = terminal_safe(question)  # the text above the input
        self.default = terminal_safe(default)  # the pre-filled value
        self.hint = terminal_safe(hint)  # the key help under the input

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(self.question))
            yield SafeInput(self.default, id="answer")
            yield Label(Text(self.hint, style="dim"))

    @on(Input.Submitted, "#answer")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """Close without an answer."""
        self.dismiss(None)
