"""Small wording helpers for messages: counts with the right plural.

Torch-free; used by the CLI and the TUI.
"""

from __future__ import annotations


def plural(count: int, noun: str, plural_form: str | None = None, thousands: bool = False) -> str:
    """'1 token', '2 tokens', '0 tokens' ('1,234 tokens' with thousands); plural_form for irregular nouns."""
    number = f"{count:,}" if thousands else str(count)
    return f"{number} {noun if count == 1 else plural_form or noun + 's'}"
