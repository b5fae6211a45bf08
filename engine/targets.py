"""Where Helium may write: an output path is absent, an empty directory, or (with --force) something Helium wrote.

What Helium writes is recognised by its files: a model bundle, a transformers directory from `helium export hf`,
a GGUF file, a prepared data dir. Anything else (a folder of the user's files, a link, a name with control
characters) is refused with one line naming what is there; nothing is ever deleted that Helium did not write.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.bundles.info import CONFIG, METADATA, PT_WEIGHTS, TOKENIZER, WEIGHTS, read_json

CARDS = ("MODEL_CARD.md", "README.md")  # model cards a bundle carries along
BUNDLE_FILES = frozenset({CONFIG, WEIGHTS, PT_WEIGHTS, TOKENIZER, METADATA, *CARDS})
HF_FILES = frozenset(
    {CONFIG, WEIGHTS, TOKENIZER, "tokenizer_config.json", "generation_config.json", *CARDS}
)  # what `helium export hf` writes
HF_CARD_MARK = "made with Helium"  # in the README.md that `helium export hf` writes (engine.formats.hf.model_card)
# a prepared data dir (trainer.prepare), with the stories a fine-tune's dir is prepared from (trainer.finetune)
DATA_FILES = re.compile(r"^(tokenizer\.json|manifest\.json|(train|val)_\d{3,}\.bin|stories\.jsonl|val\.jsonl)$")
TEMP_NAME = re.compile(r"^\..+\.(tmp|old|installing)$")  # what an interrupted atomic write leaves (engine.files)
GGUF_MAGIC = b"GGUF"
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # no name or path Helium creates holds one of these

KIND_WORDS = {
    "bundle": "a Helium model bundle",
    "hf": "a transformers export from Helium",
    "gguf": "a GGUF file",
    "data": "a prepared data dir",
}
KNOWN_NAMES = {"bundle": BUNDLE_FILES, "hf": HF_FILES}  # listed last when a folder is refused
DIR_KINDS = ("bundle", "hf")  # what an importer, `models install` or `export hf` may replace with --force


def check_no_control(text: str, what: str) -> str:
    """text unless it holds a control character (ESC, BEL, newline, ...): ValueError naming what it is."""
    if CONTROL.search(text):
        raise ValueError(f"{what} {CONTROL.sub('?', text)!r} holds control characters; choose another")
    return text


def check_folder(path: Path, what: str = "the output folder") -> Path:
    """path unless it cannot be a folder Helium writes files into by fixed names (`data download`, `bench gpu`):
    a control character, a link (never written through) or something other than a directory: ValueError."""
    path = Path(path)
    check_no_control(str(path), what)
    if path.is_symlink():
        raise ValueError(f"{path}: is a symbolic link; give the real path (Helium does not write through links)")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a directory (give a new or empty directory)")
    return path


def kind_of(path: Path) -> str | None:
    """Which of Helium's outputs path is ("bundle", "hf", "gguf", "data"), or None (absent, a link, or not ours)."""
    if path.is_symlink() or not path.exists():
        return None
    if path.is_file():
        return "gguf" if _starts_with(path, GGUF_MAGIC) else None
    if not path.is_dir():
        return None
    names = {p.name for p in path.iterdir() if not TEMP_NAME.match(p.name)}
    regular = all((path / n).is_file() for n in names)
    if regular and CONFIG in names and names <= BUNDLE_FILES and _is_bundle_config(path):
        return "bundle"
    if regular and CONFIG in names and names <= HF_FILES and _has_card_mark(path / "README.md"):
        return "hf"
    if names and regular and all(DATA_FILES.match(n) for n in names):
        return "data"
    return None


def check_target(path: Path, force: bool, kinds: tuple[str, ...], directory: bool = True, links: bool = False) -> bool:
    """ValueError unless Helium may write `path`; returns whether something is there to be replaced.

    Absent or an empty directory: yes. One of `kinds` of Helium's outputs: with force. A link: only where
    links are Helium's own (links=True: the models dir); never one the user gave. Anything else: never, and
    the message lists what is there. directory: the output is a directory (else a file).
    """
    path = Path(path)
    check_no_control(str(path), "the output path")
    if path.is_symlink():
        if links:
            return _needs_force(path, force, "an installed link to a bundle")
        raise ValueError(f"{path}: is a symbolic link; give the real path (Helium does not write through links)")
    if not path.exists():
        return False
    if directory and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a directory (give a new or empty directory)")
    if not directory and path.is_dir():
        raise ValueError(f"{path}: is a directory (give the path of the file to write)")
    if directory and not any(path.iterdir()):
        return False
    kind = kind_of(path)
    if kind in kinds:
        return _needs_force(path, force, KIND_WORDS[kind])
    wanted = " or ".join(KIND_WORDS[k] for k in kinds)
    known = frozenset().union(*(KNOWN_NAMES.get(k, frozenset()) for k in kinds))
    held = f"holds {contents(path, known)}" if path.is_dir() else "is not one"
    raise ValueError(f"{path}: already exists and {held}; --force replaces only {wanted}: choose another path")


def contents(directory: Path, known: frozenset[str] = frozenset(), limit: int = 4) -> str:
    """A few names in a directory for a message, those not in known first: 'notes.txt, sub/ and 3 more'."""
    entries = sorted(directory.iterdir(), key=lambda p: (p.name in known, p.name))
    names = [p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in entries]
    shown = ", ".join(CONTROL.sub("?", n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _needs_force(path: Path, force: bool, what: str) -> bool:
    if not force:
        raise ValueError(f"{path}: already exists ({what}; use --force to replace it)")
    return True


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _is_bundle_config(directory: Path) -> bool:
    try:
        raw = read_json(directory / CONFIG)
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and isinstance(raw.get("model"), dict)


def _has_card_mark(readme: Path) -> bool:
    if not readme.is_file() or readme.stat().st_size > 1 << 20:
        return False
    try:
        return HF_CARD_MARK in readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
