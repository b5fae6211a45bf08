"""The story library: saved stories as one JSON file each, listed, reopened, deleted and exported.

No Textual here, so the CLI, the TUI and tests share it. Files are written atomically and never
rewritten or deleted because they could not be read.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path

from engine.files import atomic_write_text
from engine.paths import user_data_dir

FORMAT = "helium-story/1"
EXPORT_FORMATS = ("md", "txt")
ID_PATTERN = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$")


@dataclass
class Story:
    """One saved story: what was asked, what the model wrote and how."""

    prompt: str  # the opening the user typed
    text: str  # the generated continuation (the whole story is prompt + text)
    params: dict = field(default_factory=dict)  # sampling parameters (temperature, top_p, ...)
    model: str = ""  # name of the model bundle that wrote it
    seed: int | None = None  # sampling seed, when one was fixed
    created: str = ""  # ISO-8601 local time with offset; set on save when empty
    tokens: int = 0  # generated tokens
    finish_reason: str = ""  # why generation stopped: "eos", "length", "stopped", ...
    id: str = ""  # sortable by time, e.g. 20261123-204501-ab12; assigned on save

    @property
    def full_text(self) -> str:
        """The whole story: the prompt followed by the continuation."""
        return self.prompt + self.text

    @property
    def title(self) -> str:
        """The first few words of the story, for lists and export headings."""
        return first_words(self.full_text, 8) or "Untitled story"

    def to_dict(self) -> dict:
        """Plain dict for the story's JSON file."""
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Story:
        """Rebuild from a JSON object; ValueError when required fields are missing or of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("prompt", "text"):
            if not isinstance(values.get(key), str):
                raise ValueError(f"missing or invalid {key!r}")
        for key, kinds in FIELD_TYPES.items():
            if key in values and not isinstance(values[key], kinds):
                raise ValueError(f"{key!r} has the wrong type ({type(values[key]).__name__})")
        return cls(**values)


FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "params": dict,
    "model": str,
    "seed": (int, type(None)),
    "created": str,
    "tokens": int,
    "finish_reason": str,
    "id": str,
}  # the types a story file's optional fields must have


def first_words(text: str, n: int) -> str:
    """The first n words of text on one line, with an ellipsis when there are more."""
    words = text.split()
    return " ".join(words[:n]) + (" …" if len(words) > n else "")


def new_story_id(now: datetime | None = None) -> str:
    """A fresh id that sorts by creation time: YYYYMMDD-HHMMSS-xxxx."""
    now = now or datetime.now()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


class StoryStore:
    """Stories saved as `ROOT/<id>.json` (ROOT defaults to the user data dir's `stories/`)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else user_data_dir() / "stories"

    def path_for(self, story_id: str) -> Path:
        """The JSON file of a story id (ValueError for ids that are not ours, e.g. with slashes)."""
        if not ID_PATTERN.match(story_id):
            raise ValueError(f"not a story id: {story_id!r}")
        return self.root / f"{story_id}.json"

    def save(self, story: Story) -> Story:
        """Write story (a new id when it has none, `created` when empty); returns the saved copy."""
        now = datetime.now().astimezone()
        story = replace(story, created=story.created or now.isoformat(timespec="seconds"))
        if not story.id:
            story_id = new_story_id(now)
            while self.path_for(story_id).exists():
                story_id = new_story_id(now)
            story = replace(story, id=story_id)
        text = json.dumps(story.to_dict(), ensure_ascii=False, indent=2) + "\n"
        atomic_write_text(self.path_for(story.id), text)
        return story

    def list(self) -> tuple[list[Story], list[str]]:
        """All readable stories, newest first, and one warning per file that could not be read."""
        stories: list[Story] = []
        warnings: list[str] = []
        if not self.root.is_dir():
            return stories, warnings
        for path in sorted(self.root.glob("*.json")):
            try:
                story = self._read(path)
            except (OSError, ValueError, TypeError) as exc:
                warnings.append(f"skipped unreadable story {path}: {exc}")
                continue
            stories.append(story)
        stories.sort(key=lambda s: (s.created, s.id), reverse=True)
        return stories, warnings

    def get(self, story_id: str) -> Story:
        """The story with this id; KeyError when there is none, ValueError when its file is unreadable."""
        path = self.path_for(story_id)
        if not path.is_file():
            raise KeyError(story_id)
        return self._read(path)

    def delete(self, story_id: str) -> None:
        """Remove a story's file; KeyError when there is none."""
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
        """The story as Markdown: a title, the prompt in bold, the story, a parameters table."""
        prompt = story.prompt.strip()
        gap = story.prompt[len(story.prompt.rstrip()) :]  # keep the space between prompt and story
        body = f"**{_escape_md(prompt)}**{gap}" if prompt else ""
        body += _escape_md(story.text)
        rows = _parameter_rows(story)
        table = "| parameter | value |\n| --- | --- |\n" + "".join(
            f"| {name} | {_escape_cell(value)} |\n" for name, value in rows
        )
        return f"# {_escape_md(story.title)}\n\n{body.strip()}\n\n## Parameters\n\n{table}"

    @staticmethod
    def as_text(story: Story) -> str:
        """The story as plain text: the whole story, then one `name: value` line per parameter."""
        lines = [f"{name}: {value}" for name, value in _parameter_rows(story)]
        return story.full_text.strip() + "\n\n---\n" + "\n".join(lines) + "\n"

    @staticmethod
    def _read(path: Path) -> Story:
        """Parse one story file; the file name is the id."""
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        story = Story.from_dict(data)
        return replace(story, id=path.stem)


def _parameter_rows(story: Story) -> list[tuple[str, str]]:
    """(name, value) rows describing how a story was made."""
    rows = [("model", story.model or "?"), ("created", story.created), ("seed", _fmt(story.seed))]
    rows += [(str(k), _fmt(v)) for k, v in sorted(story.params.items()) if k != "seed"]  # seed: listed above
    rows += [("tokens", str(story.tokens)), ("finish reason", story.finish_reason or "?"), ("id", story.id)]
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
