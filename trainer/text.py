"""Story text for data preparation: read the input formats, normalize, drop empties and duplicates, split.

Formats: `<|endoftext|>`-separated text (TinyStories), blank-line-separated stories, `.jsonl` with a `text`
field, and `stream` (a whole file is one document, e.g. TinyStories' valid.txt without story markers).
"""

from __future__ import annotations

import hashlib
import mmap
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.jsonfile import JsonFileError, parse
from trainer.tokenizer import EOT

FORMATS = ("auto", "eot", "blank", "jsonl", "stream")
NORMALIZE_VERSION = 1  # bump when normalize() changes, so prepared dirs are rebuilt

_SPACES = re.compile(r"[ \t\f\v]+")
_BREAKS = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """NFC, `\\n` line endings, runs of spaces/tabs collapsed, lines stripped, at most one blank line."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").replace(EOT, "")
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BREAKS.sub("\n\n", text).strip()


def has_eot(path: Path) -> bool:
    """Whether the file contains the `<|endoftext|>` marker anywhere (a memory-mapped scan)."""
    if path.stat().st_size == 0:
        return False
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return m.find(EOT.encode()) >= 0


def detect_format(path: Path, fmt: str = "auto", whole_if_unmarked: bool = False) -> str:
    """The concrete format of path: jsonl by extension, eot when markers are present, else blank (or stream)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt != "auto":
        return fmt
    if path.suffix.lower() == ".jsonl":
        return "jsonl"
    if has_eot(path):
        return "eot"
    return "stream" if whole_if_unmarked else "blank"


def _lines(path: Path, on_bytes: Callable[[int], None] | None) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its newline); ValueError naming the line when it is not UTF-8."""
    pending = 0  # bytes read but not yet reported (reports come per MiB, not per line)
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            pending += len(raw)
            if on_bytes and pending >= 1 << 20:
                on_bytes(pending)
                pending = 0
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{number}: not UTF-8 text") from None
    if on_bytes and pending:
        on_bytes(pending)


def iter_chunks(path: Path, fmt: str, on_bytes: Callable[[int], None] | None = None) -> Iterator[str]:
    """Raw (unnormalized) stories of one file in a concrete format."""
    if fmt == "eot":
        yield from _eot_chunks(_lines(path, on_bytes))
    elif fmt == "blank":
        buf: list[str] = []
        for _, line in _lines(path, on_bytes):
            if line.strip():
                buf.append(line)
            elif buf:
                yield "".join(buf)
                buf = []
        if buf:
            yield "".join(buf)
    elif fmt == "jsonl":
        for number, line in _lines(path, on_bytes):
            if not line.strip():
                continue
            try:
                record = parse(line, f"{path}:{number}")
            except JsonFileError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f'{path}:{number}: expected a JSON object with a "text" string')
            yield record["text"]
    elif fmt == "stream":
        yield "".join(line for _, line in _lines(path, on_bytes))
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _eot_chunks(lines: Iterable[tuple[int, str]]) -> Iterator[str]:
    """Text between `<|endoftext|>` markers; blank text before the first or after the last is no story."""
    buf: list[str] = []
    first = True
    for _, line in lines:
        while EOT in line:
            before, line = line.split(EOT, 1)
            buf.append(before)
            chunk = "".join(buf)
            buf = []
            if not (first and not chunk.strip()):
                yield chunk
            first = False
        buf.append(line)
    tail = "".join(buf)
    if tail.strip():
        yield tail


def story_key(story: str) -> bytes:
    """A 16-byte digest identifying a normalized story (for exact-duplicate removal)."""
    return hashlib.blake2b(story.encode("utf-8"), digest_size=16).digest()


@dataclass
class ReadStats:
    """Counts from reading stories."""

    stories_read: int = 0  # raw stories found in the inputs
    empty_dropped: int = 0  # stories empty after normalization
    duplicates_dropped: int = 0  # exact duplicates (after normalization) of an earlier story
    formats: dict[str, str] = field(default_factory=dict)  # path -> concrete format used


def read_stories(
    paths: Iterable[Path],
    fmt: str = "auto",
    whole_if_unmarked: bool = False,
    stats: ReadStats | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[list[str], ReadStats]:
    """Normalized, non-empty, unique stories of all paths in order, and the counts."""
    stats = stats or ReadStats()
    seen: set[bytes] = set()
    stories: list[str] = []
    for path in paths:
        concrete = detect_format(path, fmt, whole_if_unmarked)
        stats.formats[str(path)] = concrete
        for chunk in iter_chunks(path, concrete, on_bytes):
            stats.stories_read += 1
            story = normalize(chunk)
            if not story:
                stats.empty_dropped += 1
                continue
            key = story_key(story)
            if key in seen:
                stats.duplicates_dropped += 1
                continue
            seen.add(key)
            stories.append(story)
    return stories, stats


def is_val(story: str, fraction: float, seed: int) -> bool:
    """Whether a story belongs to the validation split: a hash of (seed, text), so the split is stable."""
    digest = hashlib.blake2b(story.encode("utf-8"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def split_stories(stories: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) by story hash; the same stories and seed always give the same split."""
    if not 0 <= fraction < 1:
        raise ValueError(f"val fraction must be in [0, 1), got {fraction}")
    train: list[str] = []
    val: list[str] = []
    for story in stories:
        (val if fraction and is_val(story, fraction, seed) else train).append(story)
    return train, val
