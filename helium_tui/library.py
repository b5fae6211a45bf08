"""The story library: saved stories as one JSON file each, listed, reopened, deleted and exported.

No Textual here, so the CLI, the TUI and tests share it. Files are written atomically and never rewritten or
deleted because they could not be read; lists read a bounded head of each file (`helium_tui.story_file`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.files import atomic_write_text
from engine.paths import user_data_dir
from helium_tui.safe_text import terminal_safe
from helium_tui.story_file import (
    HEAD_BYTES,
    MAX_FILE_BYTES,
    StoryFileError,
    clean_fields,
    decode,
    load_json,
    no_lone_surrogates,
    parse_head,
    read_file,
)

FORMAT = "helium-story/1"
EXPORT_FORMATS = ("md", "txt")
ID_PATTERN = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$")  # the ids new stories get
MAX_STORY_CHARS = 1_000_000  # what one story (prompt + text) may hold when saved or opened
MAX_ID_BYTES = 200  # a longer file name is not a story id


@dataclass
class Story:
    """One saved story: what was asked, what the model wrote and how."""

    prompt: str  # the opening the user typed
    text: str  # the generated continuation (the whole story is prompt + text)
    params: dict = field(default_factory=dict)  # sampling parameters (temperature, top_p, ...)
    model: str = ""  # name of the model bundle that wrote the text
    seed: int | None = None  # sampling seed, when one was fixed
    created: str = ""  # ISO-8601 local time with offset; set on save when empty
    tokens: int = 0  # generated tokens
    finish_reason: str = ""  # why generation stopped: "eos", "length", "stopped", ...
    id: str = ""  # the file name without .json; new ones sort by time, e.g. 20261123-204501-ab12
    chars_cut: int = 0  # characters cut off the end to fit MAX_STORY_CHARS

    @property
    def full_text(self) -> str:
        """The whole story: the prompt followed by the continuation."""
        return self.prompt + self.text

    @property
    def title(self) -> str:
        """The first few words of the story, for lists and export headings."""
        return first_words(self.full_text[:2000], 8) or "Untitled story"

    def to_dict(self) -> dict:
        """Plain dict for the story's JSON file: the short fields first, so a list can read them from the
        file's head, then the prompt and the text."""
        head = {k: v for k, v in vars(self).items() if k not in ("prompt", "text")}
        return {"format": FORMAT, **head, "prompt": self.prompt, "text": self.text}

    @classmethod
    def from_dict(cls, data: Any, whole: bool = True) -> Story:
        """Rebuild from decoded JSON; ValueError when it is not a story (invalid optional fields are dropped).

        whole=False accepts a head cut before the text (see `helium_tui.story_file.parse_head`).
        """
        values, _ = clean_fields(data, whole)
        return cls(**values)


@dataclass(frozen=True)
class StoryHead:
    """A listed story, read from the head of its file; open it whole with `StoryStore.get(story.id)`."""

    story: Story  # its fields; prompt and text may be cut short when not complete
    complete: bool  # the whole file was read
    size: int  # the file's size in bytes


def first_words(text: str, n: int) -> str:
    """The first n words of text on one line, with an ellipsis when there are more."""
    words = text.split()
    return " ".join(words[:n]) + (" …" if len(words) > n else "")


def one_line(text: str, width: int) -> str:
    """text on one line (runs of whitespace become one space), terminal-safe, cut to width with '…'."""
    flat = " ".join(terminal_safe(text[: width * 8]).split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def opening(story: Story, width: int) -> str:
    """What tells stories apart in a list: the generated text from its first whole word (not ", there was" nor
    the rest of a word the prompt began), or the prompt when there is none."""
    text = story.text[:4000]
    if story.prompt[-1:].isalnum() and text[:1].isalnum():  # the prompt ended mid-word: skip the word's rest
        text = re.sub(r"^\w+", "", text)
    text = re.sub(r"^[\s,.;:!?…—–-]+", "", text)  # what continues the prompt's sentence: commas, stops, spaces
    return one_line(text if text.strip() else story.prompt, width)


def created_at(story: Story) -> datetime | None:
    """When the story was made, as local time: from `created`, else from a time-sortable id; None if neither."""
    try:
        when = datetime.fromisoformat(story.created)
        return datetime.fromtimestamp(when.timestamp())
    except (ValueError, OverflowError, OSError):
        pass
    if ID_PATTERN.match(story.id):
        try:
            return datetime.strptime(story.id[:15], "%Y%m%d-%H%M%S")
        except ValueError:
            return None
    return None


def short_date(story: Story) -> str:
    """'YYYY-MM-DD HH:MM' local time, or '?' when the story does not say."""
    when = created_at(story)
    return f"{when:%Y-%m-%d %H:%M}" if when is not None else "?"


def capped(story: Story, limit: int = MAX_STORY_CHARS) -> Story:
    """story cut to at most limit characters (the end of the text first), counting the cut in chars_cut."""
    extra = len(story.prompt) + len(story.text) - limit
    if extra <= 0:
        return story
    prompt = story.prompt[:limit]
    text = story.text[: limit - len(prompt)]
    return replace(story, prompt=prompt, text=text, chars_cut=story.chars_cut + extra)


def new_story_id(now: datetime | None = None) -> str:
    """A fresh id that sorts by creation time: YYYYMMDD-HHMMSS-xxxx."""
    now = now or datetime.now()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _sort_key(story: Story) -> tuple[float, str]:
    when = created_at(story)
    try:
        return (when.timestamp() if when is not None else float("-inf"), story.id)
    except (OverflowError, OSError, ValueError):
        return (float("-inf"), story.id)


class StoryStore:
    """Stories saved as `ROOT/<id>.json` (ROOT defaults to the user data dir's `stories/`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else user_data_dir() / "stories"

    def path_for(self, story_id: str) -> Path:
        """The JSON file of a story id: a plain file name, no folders (ValueError otherwise, e.g. `../x`)."""
        if (
            not story_id
            or story_id.startswith(".")
            or "/" in story_id
            or os.sep in story_id
            or "\0" in story_id
            or len(story_id.encode("utf-8", "surrogateescape")) > MAX_ID_BYTES
        ):
            raise ValueError(f"not a story id: {terminal_safe(story_id[:60])!r}")
        return self.root / f"{story_id}.json"

    def save(self, story: Story) -> Story:
        """Write story (a new id when it has none, `created` when empty); returns the saved copy.

        A story longer than MAX_STORY_CHARS is cut to it: the copy's `chars_cut` says by how much, so the
        caller can tell the user.
        """
        now = datetime.now().astimezone()
        story = capped(story)
        story = replace(
            story,
            prompt=no_lone_surrogates(story.prompt),
            text=no_lone_surrogates(story.text),
            created=story.created or now.isoformat(timespec="seconds"),
        )
        if not story.id:
            story_id = new_story_id(now)
            while self.path_for(story_id).exists():
                story_id = new_story_id(now)
            story = replace(story, id=story_id)
        text = json.dumps(story.to_dict(), ensure_ascii=False, indent=2) + "\n"
        atomic_write_text(self.path_for(story.id), text)
        return story

    def scan(self) -> tuple[list[StoryHead], list[str]]:
        """Every story file read from its head (at most HEAD_BYTES), newest first, and one warning per file
        skipped or shown without some invalid field. Never blocks, whatever the files are."""
        heads: list[StoryHead] = []
        warnings: list[str] = []
        for path in self._files():
            try:
                data, size = read_file(path, HEAD_BYTES)
                whole = len(data) == size
                text = decode(data, whole)
                values = load_json(text) if whole else parse_head(text)
                story, ignored = self._story(values, path, whole)
            except StoryFileError as exc:
                warnings.append(f"skipped {_name(path)}: {exc}")
                continue
            if ignored:
                warnings.append(f"{_name(path)}: ignored invalid {', '.join(ignored)}")
            heads.append(StoryHead(story, whole, size))
        heads.sort(key=lambda h: _sort_key(h.story), reverse=True)
        return heads, warnings

    def list(self) -> tuple[list[Story], list[str]]:
        """Every story read whole (up to MAX_FILE_BYTES each), newest first, and one warning per file that
        could not be read or was shown without some invalid field. For scripts and tests; the library
        screen uses scan()."""
        stories: list[Story] = []
        warnings: list[str] = []
        for path in self._files():
            try:
                story, ignored = self._read(path)
            except StoryFileError as exc:
                warnings.append(f"skipped {_name(path)}: {exc}")
                continue
            if ignored:
                warnings.append(f"{_name(path)}: ignored invalid {', '.join(ignored)}")
            stories.append(story)
        stories.sort(key=_sort_key, reverse=True)
        return stories, warnings

    def get(self, story_id: str) -> Story:
        """The story with this id, whole; KeyError when there is none, ValueError (StoryFileError) when its
        file cannot be read or is larger than MAX_FILE_BYTES."""
        path = self.path_for(story_id)
        if not path.exists():
            raise KeyError(story_id)
        return self._read(path)[0]

    def delete(self, story_id: str) -> None:
        """Remove a story's file; KeyError when there is none, ValueError for an id that is not a file name."""
        path = self.path_for(story_id)
        try:
            path.unlink()
        except FileNotFoundError:
            raise KeyError(story_id) from None

    def export(self, story: Story, path: str | Path, fmt: str = "md") -> Path:
        """Write story to path as Markdown ("md") or plain text ("txt"), atomically; returns the path."""
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}")
        text = self.as_markdown(story) if fmt == "md" else self.as_text(story)
        return atomic_write_text(Path(path).expanduser(), text)

    @staticmethod
    def as_markdown(story: Story) -> str:
        """The story as Markdown: a title, the prompt in bold, the story, a parameters table (terminal-safe)."""
        prompt = story.prompt.strip()
        gap = story.prompt[len(story.prompt.rstrip()) :]  # keep the space between prompt and story
        body = f"**{_escape_md(prompt)}**{gap}" if prompt else ""
        body += _escape_md(story.text)
        rows = _parameter_rows(story)
        table = "| parameter | value |\n| --- | --- |\n" + "".join(
            f"| {_escape_cell(name)} | {_escape_cell(value)} |\n" for name, value in rows
        )
        return terminal_safe(f"# {_escape_md(story.title)}\n\n{body.strip()}\n\n## Parameters\n\n{table}")

    @staticmethod
    def as_text(story: Story) -> str:
        """The story as plain text: the whole story, then one `name: value` line per parameter (terminal-safe)."""
        lines = [f"{name}: {value}" for name, value in _parameter_rows(story)]
        return terminal_safe(story.full_text.strip() + "\n\n---\n" + "\n".join(lines) + "\n")

    def _files(self) -> list[Path]:
        """The story files' paths by name (`*.json`, not hidden: temp files of atomic writes are)."""
        try:
            names = sorted(e.name for e in os.scandir(self.root) if e.name.endswith(".json"))
        except OSError:  # no library yet, or not a readable directory
            return []
        return [self.root / n for n in names if not n.startswith(".") and len(n) > len(".json")]

    def _read(self, path: Path) -> tuple[Story, list[str]]:
        """One story file, whole, and its fields ignored as invalid (StoryFileError when it cannot be read,
        e.g. larger than MAX_FILE_BYTES)."""
        data, size = read_file(path, MAX_FILE_BYTES)
        if size > MAX_FILE_BYTES:
            raise StoryFileError(f"too large to open ({size / 1e6:.1f} MB; at most {MAX_FILE_BYTES // 2**20} MiB)")
        return self._story(load_json(decode(data, True)), path, True)

    @staticmethod
    def _story(values: Any, path: Path, whole: bool) -> tuple[Story, list[str]]:
        """A Story from a decoded file (the file name is the id) and the fields ignored as invalid."""
        kwargs, ignored = clean_fields(values, whole)
        return Story(**kwargs, id=path.name[: -len(".json")]), ignored


def _name(path: Path) -> str:
    """A file name fit for a one-line warning."""
    return one_line(path.name, 80)


def _parameter_rows(story: Story) -> list[tuple[str, str]]:
    """(name, value) rows describing how a story was made."""
    rows = [("model", story.model or "?"), ("created", story.created), ("seed", _fmt(story.seed))]
    rows += [(str(k), _fmt(v)) for k, v in sorted(story.params.items()) if k != "seed"]  # seed: listed above
    rows += [("tokens", str(story.tokens)), ("finish reason", story.finish_reason or "?"), ("id", story.id)]
    if story.chars_cut:
        rows.append(("cut when saved", f"{story.chars_cut:,} characters"))
    return rows


def _fmt(value: object) -> str:
    """A parameter value as short text."""
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _escape_md(text: str) -> str:
    """Escape the characters that would turn story text into Markdown markup."""
    return re.sub(r"([\\`*_#\[\]<>|])", r"\\\1", text)


def _escape_cell(text: str) -> str:
    """A value that is safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace(os.linesep, " ").replace("\n", " ")
