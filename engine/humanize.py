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


UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def human_bytes(n: int) -> str:
    """'512 B', '20.9 MiB', '1.5 GiB' (binary units)."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def parse_bytes(text: str) -> int:
    """A size with a unit: '800MiB', '2GiB', '2G', '1.5 GB' (binary units whatever the spelling); ValueError with
    the forms it takes for anything else (a bare number is refused: bytes or megabytes?)."""
    t = text.strip().lower().removesuffix("b").removesuffix("i").strip()
    try:
        value = float(t[:-1]) if t and t[-1] in UNITS else None
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        raise ValueError(f"{text!r} is not a size: give a number and a unit, e.g. 800MiB or 2GiB")
    return int(value * UNITS[t[-1]])
