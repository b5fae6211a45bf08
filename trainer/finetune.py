"""Fine-tuning: a training run that starts from a model bundle's weights and shape, on data in its tokenizer.

Torch-free, for the CLI and the studio: the base model as its bundle describes it, the checks that a prepared
data dir and a run's options fit it, a fine-tune's config (its defaults are trainer.config's), and one call that
prepares stories for a model.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.bundles.info import PT_WEIGHTS, TOKENIZER, WEIGHTS, read_config, read_metadata
from engine.bundles.registry import resolve_model
from engine.checks import known_fields
from engine.errors import BundleError
from engine.files import atomic_write_text
from engine.humanize import plural
from engine.model.config import ModelConfig, get_preset
from engine.safe_read import sha256_file
from trainer.config import FINETUNE_DEFAULTS, FINETUNE_EPOCHS, MIN_FINETUNE_STEPS, TrainConfig
from trainer.manifest import MANIFEST, read_manifest

MIN_STORIES = 20  # fewer stories than this make a useless run: refused with a notice
VAL_SHARE = 0.1  # share of stories held out for the val loss (at least one context window of them)
MAX_VAL_SHARE = 1 / 3  # more than this for a single val window means too little text
STORIES_FILE = "stories.jsonl"  # the stories a prepared fine-tune dir was made from, one {"text": ...} a line
VAL_FILE = "val.jsonl"  # its held-out stories
STORY_SUFFIXES = (".txt", ".md", ".jsonl")  # story files taken from a folder
_NOT_SHAPE = ("vocab_size", "context_length", "dropout")  # ModelConfig fields a preset does not fix


class TooLittleText(ValueError):
    """Not enough stories for a fine-tune that would teach the model anything; the message says how many."""


@dataclass(frozen=True)
class BaseModel:
    """The model a fine-tune starts from, as its bundle describes it (the weights are not read here)."""

    name: str  # its name: the installed name, or the bundle dir's (a run's `bundle/` takes the run's name)
    path: Path  # the bundle dir (absolute; an installed link is kept, not followed)
    config: ModelConfig  # its shape
    bos_id: int | None  # its start token: written before every story of data prepared for it
    eos_id: int | None  # its end-of-story token
    metadata: dict  # its metadata.json

    @property
    def ref(self) -> str:
        """How to name it on a command line: the name when that finds this bundle, else the path."""
        try:
            return self.name if resolve_model(self.name).absolute() == self.path else str(self.path)
        except BundleError:
            return str(self.path)


def read_base(name_or_path: str | Path) -> BaseModel:
    """The bundle an installed name or a path names; BundleError (one line) when there is none."""
    path = resolve_model(str(name_or_path)).absolute()
    config, raw = read_config(path)
    if not (path / TOKENIZER).is_file():
        raise BundleError(f"{path / TOKENIZER}: missing")
    name = path.parent.name if path.name == "bundle" else path.name
    bos, eos = raw.get("bos_token_id"), raw.get("eos_token_id")
    return BaseModel(name, path, config, bos, eos, read_metadata(path))


def finetune_shape(cfg: TrainConfig, base: BaseModel) -> tuple[ModelConfig, int]:
    """(model config, training context) of a fine-tune: the base's shape with this run's dropout.

    A preset that names another shape is refused, and so is a context longer than the base model's.
    """
    if cfg.preset:
        preset = get_preset(cfg.preset)
        diff = [
            f"{f.name} {getattr(preset, f.name)} vs {getattr(base.config, f.name)}"
            for f in fields(ModelConfig)
            if f.name not in _NOT_SHAPE and getattr(preset, f.name) != getattr(base.config, f.name)
        ]
        if diff:
            raise ValueError(
                f"preset {cfg.preset!r} contradicts {base.name}'s shape ({', '.join(diff[:3])}); "
                "leave out --preset: a fine-tune keeps its base model's shape"
            )
    limit = base.config.context_length
    context = cfg.context or limit
    if context > limit:
        raise ValueError(
            f"context {context} is longer than {base.name}'s {limit} tokens; a fine-tune's context may only "
            f"shrink (give --context {limit} or less)"
        )
    return base.config.with_(dropout=cfg.dropout), context


def check_data_fits(base: BaseModel, data_dir: Path, manifest: dict) -> None:
    """ValueError (one line, naming the fix) unless the prepared data is in the base model's tokens: its
    tokenizer and the start/end tokens around each story."""
    fix = f"prepare the data for it: helium data prepare FILES --tokenizer {base.ref} --out DIR"
    if not same_tokenizer(data_dir / TOKENIZER, base.path / TOKENIZER):
        raise ValueError(f"{data_dir}: prepared with another tokenizer than {base.name}'s; {fix}")
    eot = manifest.get("eot_id", 0)
    marks = (manifest.get("bos_id", eot), manifest.get("eos_id", eot))
    if marks != (base.bos_id, base.eos_id):
        raise ValueError(
            f"{data_dir}: its stories are marked with start/end tokens {marks[0]}/{marks[1]}, {base.name} uses "
            f"{base.bos_id}/{base.eos_id}; {fix}"
        )


def finetune_metadata(base: BaseModel, data: Path) -> dict:
    """What a fine-tuned bundle's metadata.json adds: the base model it started from and the data it was tuned on."""
    try:
        manifest = read_manifest(data)
        train = _train_split(manifest, data)
        tuned_on = {"stories": train.get("stories"), "tokens": train["tokens"], "sources": manifest.get("sources", [])}
    except ValueError:
        tuned_on = {}
    weights = next((base.path / n for n in (WEIGHTS, PT_WEIGHTS) if (base.path / n).is_file()), None)
    return {
        "base_model": {
            "name": base.name,
            "path": str(base.path),
            "weights_sha256": _sha256(weights) if weights else None,
            "data": base.metadata.get("data"),
        },
        "tuned_on": {"data": str(data.resolve()), **tuned_on},
    }


def same_tokenizer(a: Path, b: Path) -> bool:
    """Whether two tokenizer.json files hold the same tokenizer (the same bytes, or the same once parsed)."""
    if _sha256(a) == _sha256(b):
        return True
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(a)).to_str() == Tokenizer.from_file(str(b)).to_str()
    except Exception:  # noqa: BLE001 - tokenizers raises a bare Exception for unreadable files
        return False


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file ("" when it is missing), read in 4 MiB blocks."""
    return sha256_file(path) if path.is_file() else ""


# ---------------------------------------------------------------- the run's config


def finetune_name(base_name: str, day: datetime.date | None = None) -> str:
    """The default name of a fine-tuned model: `<base>-tuned-<YYYY-MM-DD>`."""
    return f"{base_name}-tuned-{(day or datetime.date.today()).isoformat()}"


def finetune_steps(train_tokens: int, tokens_per_step: int, epochs: float = FINETUNE_EPOCHS) -> int:
    """The default length of a fine-tune: `epochs` passes over the train tokens, at least MIN_FINETUNE_STEPS."""
    return max(MIN_FINETUNE_STEPS, math.ceil(epochs * train_tokens / tokens_per_step))


def finetune_config(base: BaseModel, data: str | Path, out: str | Path, **overrides) -> TrainConfig:
    """The TrainConfig of a fine-tune of `base` on a prepared dir: FINETUNE_DEFAULTS, then `overrides` (None
    values ignored); without max_steps or max_tokens it trains FINETUNE_EPOCHS passes over the data."""
    cfg = TrainConfig(
        data=str(Path(data).absolute()), out=str(Path(out).absolute()), preset="", init_from=str(base.path)
    )
    cfg = cfg.with_(**(FINETUNE_DEFAULTS | {k: v for k, v in overrides.items() if v is not None}))
    if cfg.max_steps is None and cfg.max_tokens is None:
        context = cfg.context or base.config.context_length
        cfg = cfg.with_(max_steps=finetune_steps(train_tokens(data), cfg.tokens_per_step(context)))
    return cfg.validate()


def run_config(data: str | Path, out: str | Path, base: BaseModel | None = None, **choices: Any) -> TrainConfig:
    """The TrainConfig of a new run from a user's choices: the one builder behind `helium train` and the training
    monitor. A fresh run starts from TrainConfig's defaults, a fine-tune of `base` from `finetune_config`'s;
    `choices` are TrainConfig fields (None: the default). ValueError (one line) for unknown fields or bad values."""
    known_fields(TrainConfig, choices, "training config")
    data, out = Path(data).expanduser().resolve(), Path(out).expanduser().resolve()
    if base is not None:
        return finetune_config(base, data, out, **choices)
    return TrainConfig(data=str(data), out=str(out)).with_(**choices).validate()


def train_tokens(data: str | Path) -> int:
    """Tokens in a prepared dir's train split (ValueError when its manifest cannot say)."""
    return _train_split(read_manifest(data), data)["tokens"]


def _train_split(manifest: dict, data: str | Path) -> dict:
    """The train split of a manifest read by read_manifest (its fields checked); ValueError when it has none."""
    train = manifest["splits"].get("train")
    if train is None:
        raise ValueError(f"{data}: its {MANIFEST} has no train split; run `helium data prepare` again")
    return train


# ---------------------------------------------------------------- data for the studio


def _story_hash(story: str) -> bytes:
    """A stable pseudo-random key that orders stories for the val split."""
    return hashlib.blake2b(story.encode("utf-8"), digest_size=8).digest()


@dataclass
class FinetuneData:
    """What `prepare_finetune_data` made."""

    data_dir: Path  # the prepared dir (give it to `finetune_config`)
    train_stories: int  # stories trained on
    val_stories: int  # stories held out for the val loss
    train_tokens: int  # tokens in the train split
    manifest: dict  # the prepared dir's manifest


def collect_stories(texts: Iterable[str] = (), folder: str | Path | None = None) -> list[str]:
    """Normalized, unique stories from texts (e.g. the library's) and a folder of story files.

    In the folder (searched recursively) each `.txt` / `.md` file is one story unless it holds
    `<|endoftext|>` markers between stories; each `.jsonl` line is a story in its "text" field.
    """
    from trainer.text import detect_format, normalize, read_stories

    stories: list[str] = [normalize(t) for t in texts]
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in STORY_SUFFIXES)
        for path in files:
            stories += read_stories([path], detect_format(path, whole_if_unmarked=True))[0]
    return list(dict.fromkeys(s for s in stories if s))  # no empty stories or exact duplicates, in order


def prepare_finetune_data(
    base: BaseModel,
    out: str | Path,
    texts: Iterable[str] = (),
    folder: str | Path | None = None,
    context: int | None = None,
    min_stories: int = MIN_STORIES,
    progress=None,
) -> FinetuneData:
    """Prepare `out` for fine-tuning `base` on texts and/or a folder of stories (`collect_stories`).

    A tenth of the stories (at least one training window of `context` tokens, the base's by default) is held
    out for the val loss. TooLittleText when there are fewer than `min_stories` stories or the held-out
    window would take more than a third of them. Writes out/stories.jsonl and out/val.jsonl (the exact
    texts), then the shards and manifest as `helium data prepare --tokenizer BASE` does (an unchanged
    corpus is a no-op). Imports trainer.prepare, which loads torch: call it from a worker thread.
    """
    from trainer.prepare import PrepareOptions, load_tokenizer, prepare, story_markers, tokenizer_source

    stories = collect_stories(texts, folder)
    if len(stories) < min_stories:
        raise TooLittleText(
            f"only {plural(len(stories), 'story', 'stories')}: a fine-tune needs at least "
            f"{min_stories} to learn from (add stories to the library or a folder)"
        )
    tok = load_tokenizer(tokenizer_source(base.path))
    before, after = story_markers(tok)
    lengths = [len(before) + len(tok.encode(s, add_bos=False)) + len(after) for s in stories]
    order = sorted(range(len(stories)), key=lambda i: _story_hash(stories[i]))
    window = (context or base.config.context_length) + 1
    val: set[int] = set()
    for i in order:
        if len(val) >= max(1, round(VAL_SHARE * len(stories))) and sum(lengths[j] for j in val) >= window:
            break
        val.add(i)
    if len(val) > MAX_VAL_SHARE * len(stories):
        raise TooLittleText(
            f"too little text: {len(stories)} stories hold {sum(lengths):,} tokens, too few to hold out a "
            f"{window}-token window for the val loss and train on the rest (add stories)"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = [i for i in range(len(stories)) if i not in val]
    for name, chosen in ((STORIES_FILE, train), (VAL_FILE, sorted(val))):
        lines = "".join(json.dumps({"text": stories[i]}, ensure_ascii=False) + "\n" for i in chosen)
        atomic_write_text(out / name, lines)
    opts = PrepareOptions(tokenizer=base.path, val=out / VAL_FILE, fmt="jsonl", val_format="jsonl")
    result = prepare([out / STORIES_FILE], out, opts, progress or (lambda stage, done, total: None))
    splits = result.manifest["splits"]
    return FinetuneData(
        out, splits["train"]["stories"], splits["val"]["stories"], splits["train"]["tokens"], result.manifest
    )
