"""JSON files from outside Helium, read one way: a regular file, a size cap, a depth cap, then typed fields.

Every problem is a `JsonFileError`, one line naming the file and (for a field) the key; readers raise nothing
else whatever the file holds. It is a `BundleError` and a `ValueError`, so bundle and data readers pass it on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

from engine.errors import BundleError, first_line
from engine.safe_read import read_regular, unreadable

MAX_BYTES = 1 << 20  # a config or metadata file is a few KB; anything this big is not one
MAX_DEPTH = 32  # no file Helium reads nests deeper than a few levels
REQUIRED: Any = object()  # field()'s default: the key must be present
KIND_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", list: "a list",
              dict: "a JSON object"}  # fmt: skip


class JsonFileError(BundleError, ValueError):
    """A JSON file that cannot be used; the message is one line naming the file (and the key)."""


def read_json(path: str | Path, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The value in a JSON file; JsonFileError when it is missing, not a regular file, too large, not UTF-8,
    not JSON or nested more than max_depth levels."""
    try:
        data = read_regular(path, max_bytes)
    except OSError as exc:
        raise JsonFileError(unreadable(path, exc)) from None
    return parse(data, path, max_depth)


def parse(data: bytes | str, source: str | Path, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of data (UTF-8, a BOM allowed); JsonFileError naming source when it is not JSON or too deep."""
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
        value = json.loads(text)
    except RecursionError:
        raise JsonFileError(f"{source}: not valid JSON (nested too deeply)") from None
    except UnicodeDecodeError:
        raise JsonFileError(f"{source}: not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise JsonFileError(f"{source}: not valid JSON ({first_line(exc, 160)})") from None
    if depth(value) > max_depth:
        raise JsonFileError(f"{source}: nested more than {max_depth} levels deep (not a file Helium reads)")
    return value


def depth(value: Any) -> int:
    """How deeply lists and objects nest in value (0 for a scalar, 1 for a flat list), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def need_object(value: Any, source: str | Path, what: str = "") -> dict:
    """value if it is a JSON object, else JsonFileError ("source: what is not a JSON object")."""
    if not isinstance(value, dict):
        raise JsonFileError(f"{source}: {what or 'the file'} must be a JSON object, got {shown(value)}")
    return value


def field(
    obj: dict,
    key: str,
    kind: type | tuple[type, ...],
    default: Any = REQUIRED,
    *,
    source: str | Path,
    low: float | None = None,
    high: float | None = None,
    choices: Collection | None = None,
    label: str | None = None,
) -> Any:
    """obj[key] checked: of kind (int excludes bools, float takes finite ints and floats), within [low, high]
    and among choices; absent or null gives default (JsonFileError when REQUIRED). label names the key in the
    message (e.g. "rope_parameters.rope_type")."""
    name = label or key
    value = obj.get(key)
    if value is None:
        if default is REQUIRED:
            raise JsonFileError(f"{source}: {name} is missing")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not any(_is(value, k) for k in kinds):
        want = " or ".join(KIND_NAMES.get(k, k.__name__) for k in kinds)
        raise JsonFileError(f"{source}: {name} must be {want}, got {shown(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"from {low:g} to {high:g}" if low is not None and high is not None else (
            f"at least {low:g}" if low is not None else f"at most {high:g}")  # fmt: skip
        raise JsonFileError(f"{source}: {name} must be {span}, got {shown(value)}")
    if choices is not None and value not in choices:
        raise JsonFileError(f"{source}: {name} must be one of {', '.join(map(repr, choices))}, got {shown(value)}")
    return value


def _is(value: Any, kind: type) -> bool:
    if kind is int:
        return type(value) is int
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value)
    if kind is bool:
        return type(value) is bool
    return isinstance(value, kind)


def shown(value: Any) -> str:
    """A short repr of a JSON value for a message."""
    text = json.dumps(value, ensure_ascii=True, default=str) if depth(value) < 8 else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."

