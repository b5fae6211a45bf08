"""An Input that never holds a control character: defaults, typed and pasted text, and placeholders alike.

Whatever sets its value (the code, a paste, a key) goes through `helium_tui.safe_text.terminal_safe`, so an
escape sequence in a file name or a pasted path is shown (and returned) as U+FFFD, never sent to the terminal.
"""

from __future__ import annotations

from textual.widgets import Input

from helium_tui.safe_text import terminal_safe


class SafeInput(Input):
    """A one-line Input whose value and placeholder are terminal-safe."""

    def validate_value(self, value: str) -> str:
        return terminal_safe(value)

    def validate_placeholder(self, placeholder: str) -> str:
        return terminal_safe(placeholder)
