"""The colour scales of the "Look inside" view, shared by its panes and its HTML export (hex strings).

`heat` maps a weight in [0, 1] from dark to bright (attention, probabilities); `signed` maps a push on a logit
to blue (down) or orange (up), brighter the larger it is against a scale.
"""

from __future__ import annotations

from functools import lru_cache

COLD = (22, 24, 38)  # weight 0: near the terminal's background
HOT = (255, 196, 64)  # weight 1: bright amber
MASKED = "#101014"  # a cell the query cannot see (the future, or outside the sliding window)
UP = (236, 132, 48)  # pushes the token's logit up
DOWN = (70, 140, 240)  # pushes it down
STEPS = 24  # colours per scale (styles are cached per colour)


def _blend(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> str:
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


@lru_cache(maxsize=STEPS + 1)
def _heat_step(step: int) -> str:
    return _blend(COLD, HOT, step / STEPS)


def heat(weight: float) -> str:
    """Hex colour for a weight in [0, 1]; the square root lifts small weights into view."""
    w = max(0.0, min(1.0, float(weight))) ** 0.5
    return _heat_step(round(w * STEPS))


@lru_cache(maxsize=2 * STEPS + 1)
def _signed_step(step: int) -> str:
    return _blend(COLD, UP if step > 0 else DOWN, abs(step) / STEPS)


def signed(value: float, scale: float) -> str:
    """Hex colour for a push of value against scale (the largest push shown): orange up, blue down."""
    t = 0.0 if scale <= 0 else max(-1.0, min(1.0, float(value) / scale))
    return _signed_step(round(t * STEPS))


def ink(background: str) -> str:
    """Black or white text, whichever reads on background (a #rrggbb colour)."""
    r, g, b = (int(background[i : i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def meter(value: float, width: int) -> str:
    """A bar of width cells filled in eighths for a value in [0, 1]."""
    eighths = round(max(0.0, min(1.0, float(value))) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width)[:width]
