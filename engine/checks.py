"""Shared checks for numbers that come from users (CLI options, config files): one line when a value is bad.

Torch-free. Every numeric option of every command goes through `whole` or `number`, so nan, inf, bools,
fractions where a count is needed and absurd sizes are refused the same way everywhere.
"""

from __future__ import annotations

import math
from dataclasses import fields

MAX_SEED = 2**63 - 1  # the largest seed: torch.Generator.manual_seed takes a signed 64-bit integer
SEED_RANGE = "a whole number from 0 to 2**63-1"  # what a seed may be, in words


def is_whole(value: object) -> bool:
    """True for an int (a bool is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for a finite int or float (not a bool, not nan or inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(name: str, value: object, low: int = 1, high: int = 10**9) -> int:
    """value if it is a whole number in [low, high], else ValueError naming it."""
    if not is_whole(value) or not low <= value <= high:  # type: ignore[operator]
        raise ValueError(f"{name} must be a whole number from {low:,} to {high:,}, got {value!r}")
    return value  # type: ignore[return-value]


def number(name: str, value: object, low: float, high: float, low_open: bool = False) -> float:
    """value if it is a finite number in [low, high] ((low, high] with low_open), else ValueError naming it."""
    ok = is_number(value) and (low < value if low_open else low <= value) and value <= high  # type: ignore[operator]
    if not ok:
        if math.isinf(high):
            raise ValueError(f"{name} must be a number {'>' if low_open else '≥'} {low:g}, got {value!r}")
        lo = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {lo}{low:g}, {high:g}], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def is_seed(value: object) -> bool:
    """True for a whole number from 0 to MAX_SEED (what every seed of Helium may be)."""
    return is_whole(value) and 0 <= value <= MAX_SEED  # type: ignore[operator]


def check_seed(value: object, name: str = "seed") -> int:
    """value if it is a seed (`is_seed`), else ValueError naming it."""
    if not is_seed(value):
        raise ValueError(f"{name} must be {SEED_RANGE}, got {value!r}")
    return value  # type: ignore[return-value]


def known_fields(cls: type, data: object, what: str) -> dict:
    """data if it is a dict whose keys are all fields of the dataclass cls (to build it with `cls(**data)`), else
    ValueError naming `what` ("model config") and the unknown keys."""
    if not isinstance(data, dict):
        raise ValueError(f"the {what} must be a JSON object")
    unknown = sorted(map(str, set(data) - {f.name for f in fields(cls)}))
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(unknown)}")
    return data
