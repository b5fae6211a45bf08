"""Human-readable numbers and counts shared by the trainer's log lines, the CLI, the dashboard and the TUI
(no torch import)."""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """3m10s, 1h02m, 45s ('?' when unknown)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def plural(count: int, noun: str, plural_form: str | None = None, thousands: bool = False) -> str:
    """'1 token', '2 tokens', '0 tokens' ('1,234 tokens' with thousands); plural_form for irregular nouns."""
    number = f"{count:,}" if thousands else str(count)
    return f"{number} {noun if count == 1 else plural_form or noun + 's'}"
