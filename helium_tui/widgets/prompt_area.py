"""The studio's prompt editor: a TextArea that holds at most MAX_PROMPT_CHARS characters, none of them control codes.

A key in a TextArea costs time in proportion to the line it edits (wrapping, drawing), so the cap bounds what
one key costs; a paste or a loaded prompt that does not fit is cut, and a notification says so.
"""

from __future__ import annotations

import time

from textual.widgets import TextArea
from textual.widgets.text_area import Edit, EditResult

from helium_tui.safe_text import terminal_safe

# ~2,000-4,000 tokens: well over the context of every catalog model (256-1,024 tokens); a longer prompt would
# only be read from its end (engine/generation/generate.py keeps a long prompt's tail)
MAX_PROMPT_CHARS = 12_000
NOTICE_S = 6.0  # a notice lasts this long; the same one is not repeated meanwhile (keys into a full prompt)


def plain_prompt(text: str) -> str:
    """text with \\r and \\r\\n as newlines and every other control character shown as U+FFFD."""
    return terminal_safe(text.replace("\r\n", "\n").replace("\r", "\n"))


def fit_prompt(text: str) -> tuple[str, int]:
    """A whole prompt made plain and cut to MAX_PROMPT_CHARS, keeping its end (what the model reads); and how
    many characters were cut from its start."""
    text = plain_prompt(text)
    cut = max(0, len(text) - MAX_PROMPT_CHARS)
    return text[cut:], cut


class PromptArea(TextArea):
    """A TextArea for a story's prompt: plain text, at most MAX_PROMPT_CHARS characters."""

    def __init__(self, text: str = "", **kwargs: object) -> None:
        super().__init__(fit_prompt(text)[0], **kwargs)  # type: ignore[arg-type]
        self._last_notice = ("", float("-inf"))  # the last cut announced, and when

    def load_prompt(self, text: str) -> None:
        """Replace the whole prompt (cut to fit, keeping its end) and put the cursor at its end."""
        fitted, cut = fit_prompt(text)
        self.text = fitted
        self.move_cursor(self.document.end)
        if cut:
            self._announce(f"the first {cut:,} characters were left out (a model reads a long prompt's end)")

    def edit(self, edit: Edit) -> EditResult:
        """Every change (a key, a paste, a cut) inserts plain text and stops at MAX_PROMPT_CHARS."""
        text = plain_prompt(edit.text)
        replaced = len(self.document.get_text_range(edit.from_location, edit.to_location))
        room = max(0, MAX_PROMPT_CHARS - (len(self.text) - replaced))
        if len(text) > room:
            left_out = len(text) - room
            self._announce(f"{left_out:,} characters were left out" if len(text) > 1 else "it is full")
            text = text[:room]
        if text != edit.text:
            edit = Edit(text, edit.from_location, edit.to_location, edit.maintain_selection_offset)
        return super().edit(edit)

    def _announce(self, what: str) -> None:
        """Say that the prompt was cut (not again while the same notice shows: a held key must not pile them up)."""
        now = time.monotonic()
        if self._last_notice[0] != what or now - self._last_notice[1] >= NOTICE_S:
            self._last_notice = (what, now)
            self.notify(
                f"The prompt holds at most {MAX_PROMPT_CHARS:,} characters: {what}.",
                severity="warning",
                timeout=NOTICE_S,
                markup=False,
            )
