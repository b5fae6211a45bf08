"""Reading story files defensively: regular files only, a bounded head for lists, every field checked.

Whatever a story file holds (any JSON, megabytes of text, nesting 100k deep, a FIFO in its place), reading it
gives clean values or raises `StoryFileError` with one line; it never raises anything else and never blocks.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from engine.checks import is_seed
from engine.generation.sampling import SamplingParams
from engine.jsonfile import JsonFileError, parse
from engine.safe_read import open_regular, reason

HEAD_BYTES = 64 * 1024  # a list reads at most this much of each story file
MAX_FILE_BYTES = 16 * 1024 * 1024  # a larger story file is listed (from its head) but not opened
MAX_DEPTH = 32  # a story nests two levels (params); a deeper file is refused, never recursed into
MAX_TOKENS = 10**12  # a larger `tokens` count is not believed
MAX_PARAMS = 32  # parameters kept per story; more are dropped
MAX_PARAM_TEXT = 200  # a string parameter longer than this is dropped
SAMPLING_KEYS = frozenset(f.name for f in fields(SamplingParams))  # params checked by SamplingParams.validate
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON may hold "\ud800"; UTF-8 cannot
_WS = " \t\n\r"


class StoryFileError(ValueError):
    """A story file that cannot be read (one line, for a warning)."""


def read_file(path: Path, limit: int) -> tuple[bytes, int]:
    """At most `limit` bytes of a regular file and its full size; StoryFileError for FIFOs, devices, dirs
    (refused at once through `engine.safe_read.open_regular`, never waiting for a writer)."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            return f.read(min(limit, size)), size
    except OSError as exc:
        raise StoryFileError(reason(exc)) from None


def decode(data: bytes, whole: bool) -> str:
    """UTF-8 text (a leading BOM dropped); when not whole, a character cut at the end is left out."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=whole)
    except UnicodeDecodeError:
        raise StoryFileError("not UTF-8 text") from None
    return text.removeprefix("\ufeff")


def load_json(text: str) -> Any:
    """Parse a whole story file; StoryFileError for anything that is not JSON (or is absurdly nested)."""
    try:
        return parse(text, "story file", max_depth=MAX_DEPTH)
    except JsonFileError as exc:
        raise StoryFileError(str(exc).removeprefix("story file: ")) from None


def parse_head(text: str) -> dict[str, Any]:
    """The fields of a JSON object cut short at some byte: every complete `"key": value` pair, and a string
    value cut by the end kept as the prefix that was read. Stops quietly at the first value it cannot read."""
    decoder = json.JSONDecoder()
    out: dict[str, Any] = {}
    i = _skip_ws(text, 0)
    if not text.startswith("{", i):
        raise StoryFileError("not a JSON object")
    i += 1
    try:
        while True:
            i = _skip_ws(text, i)
            if text.startswith("}", i) or i >= len(text):
                return out
            key, i = decoder.raw_decode(text, i)
            i = _skip_ws(text, i)
            if not isinstance(key, str) or not text.startswith(":", i):
                return out
            i = _skip_ws(text, i + 1)
            try:
                value, i = decoder.raw_decode(text, i)
            except (ValueError, RecursionError):
                if text.startswith('"', i):
                    prefix = _string_prefix(text[i + 1 :])
                    if prefix is not None:
                        out[key] = prefix
                return out
            out[key] = value
            i = _skip_ws(text, i)
            if not text.startswith(",", i):
                return out
            i += 1
    except (ValueError, RecursionError):
        return out


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _string_prefix(body: str) -> str | None:
    """The JSON string body that was cut by the end of the read (an escape cut in half dropped); None if the
    body is not the start of a JSON string."""
    for cut in range(min(12, len(body) + 1)):  # the longest cut escape is a surrogate pair: 12 characters
        try:
            text = json.loads('"' + body[: len(body) - cut] + '"')
        except ValueError:
            continue
        return text[:-1] if text and "\ud800" <= text[-1] <= "\udbff" else text  # half a pair: drop it
    return None


def clean_fields(data: Any, whole: bool) -> tuple[dict[str, Any], list[str]]:
    """Story keyword arguments from a decoded file, and the names of fields ignored as invalid.

    `prompt` and `text` must be strings (text may be missing from a head that was cut before it) or the
    file is not a story (StoryFileError); any other field of the wrong type or range is dropped and named.
    """
    if not isinstance(data, dict):
        raise StoryFileError("not a JSON object")
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for key in ("prompt", "text"):
        value = data.get(key, None if whole or key == "prompt" else "")
        if not isinstance(value, str):
            raise StoryFileError(f"missing or invalid {key!r}")
        values[key] = no_lone_surrogates(value)
    for key in ("model", "created", "finish_reason"):
        if key in data:
            if isinstance(data[key], str):
                values[key] = no_lone_surrogates(data[key])
            else:
                ignored.append(key)
    for key, fits in (("tokens", _is_count), ("chars_cut", _is_count), ("seed", is_seed)):
        if key in data and data[key] is not None:
            if fits(data[key]):
                values[key] = data[key]
            else:
                ignored.append(key)
    if "params" in data:
        values["params"], bad = clean_params(data["params"])
        ignored += [f"params.{name}" for name in bad]
    return values, ignored


def clean_params(value: Any) -> tuple[dict[str, Any], list[str]]:
    """The sampling parameters worth keeping: SamplingParams keys with values it accepts, other keys with
    short scalar values; returns them and the names of the ones dropped."""
    if not isinstance(value, dict):
        return {}, ["(not an object)"]
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, v in value.items():
        if len(kept) >= MAX_PARAMS:
            dropped.append(f"(+{len(value) - MAX_PARAMS} more)")
            break
        if _good_param(key, v):
            kept[key] = v
        else:
            dropped.append(key[:40])
    return kept, dropped


def _good_param(key: str, value: Any) -> bool:
    if key == "stop_at_eos":
        return isinstance(value, bool)
    if key in SAMPLING_KEYS:
        try:
            replace(SamplingParams(), **{key: value}).validate()
        except (ValueError, TypeError):
            return False
        return True
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return len(value) <= MAX_PARAM_TEXT
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value) and abs(value) <= MAX_TOKENS


def _is_count(value: Any) -> bool:
    return _is_int(value) and 0 <= value <= MAX_TOKENS


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def no_lone_surrogates(text: str) -> str:
    """text with unpaired surrogates (legal in JSON, not in UTF-8) replaced by U+FFFD, so it can be saved."""
    return LONE_SURROGATE.sub("\ufffd", text) if LONE_SURROGATE.search(text) else text
