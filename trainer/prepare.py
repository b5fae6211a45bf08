"""`helium data prepare`: stories -> byte-level BPE (or a model's tokenizer) -> uint16 token shards + manifest.

Layout and manifest follow docs/INTERFACES.md. The old manifest is removed before any file is replaced and
the new one is written last (atomically), so an interrupted run never leaves a manifest over half-written shards.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.checks import check_seed, is_number, whole
from engine.files import atomic_write, atomic_write_text
from engine.model.tokenizer import MAX_TOKENIZER_BYTES, TextTokenizer, read_tokenizer
from engine.safe_read import check_regular, read_regular, reason
from engine.safe_read import sha256_file as safe_sha256
from engine.targets import check_no_control, contents, kind_of
from trainer.loader import FORMAT, MANIFEST, read_manifest
from trainer.text import FORMATS, NORMALIZE_VERSION, ReadStats, read_stories, split_stories
from trainer.tokenizer import EOT, MAX_VOCAB, train_bpe

TOKENIZER = "tokenizer.json"
SHARD_NAME = re.compile(r"^(train|val)_\d{3,}\.bin$")
ENCODE_BATCH = 1024  # stories per encode_batch call (tokenizers parallelizes inside a batch)

# progress(stage, done, total): stage is "hashing", "reading", "tokenizer", "encoding train", "encoding val"
Progress = Callable[[str, int, int | None], None]


def _no_progress(stage: str, done: int, total: int | None) -> None:
    """Default progress callback: report nothing."""


@dataclass
class PrepareOptions:
    """Everything `prepare` needs besides the input files and the output dir."""

    vocab_size: int = 4096  # BPE vocabulary to train (ignored with `tokenizer`); at most 65535 (uint16)
    tokenizer: str | Path | None = None  # use a model's (name or bundle dir) or a tokenizer.json; None: train one
    val: Path | None = None  # a separate validation file; None: hash-split the inputs by val_fraction
    val_fraction: float = 0.05  # share of stories put in the val split when no `val` file is given
    seed: int = 0  # seed of the hash split
    fmt: str = "auto"  # input format: auto, eot, blank, jsonl, stream
    val_format: str = "auto"  # format of `val`; auto treats a file without EOT markers as one stream
    shard_tokens: int = 1 << 26  # a new shard starts once a shard holds this many tokens (128 MiB)
    bpe_max_chars: int = 400_000_000  # train the BPE on the first stories up to this many characters
    workers: int = 0  # encoding threads (0: all cores); sets RAYON_NUM_THREADS for tokenizers

    def fingerprint(self, source: TokenizerSource | None) -> dict:
        """The options that change the output (recorded in the manifest; a change forces a rebuild)."""
        options = {
            "vocab_size": None if self.tokenizer else self.vocab_size,
            "tokenizer": source.kind if source else "trained",  # a given one is identified by its sha256
            "val_file": self.val is not None,  # the file itself is identified in "sources"
            "val_fraction": None if self.val else self.val_fraction,
            "seed": None if self.val else self.seed,
            "format": self.fmt,
            "val_format": self.val_format if self.val else None,
            "shard_tokens": self.shard_tokens,
            "bpe_max_chars": None if self.tokenizer else self.bpe_max_chars,
            "normalize": NORMALIZE_VERSION,
        }
        if source and source.kind == "model":  # the model's start/end tokens mark the stories
            options |= {"bos_id": source.bos_id, "eos_id": source.eos_id}
        return options


@dataclass
class TokenizerSource:
    """A tokenizer to encode with instead of training one: a model's (with its start/end tokens) or a file."""

    path: Path  # its tokenizer.json
    kind: str  # "model": a bundle's tokenizer; "given": a bare tokenizer.json (`<|endoftext|>` marks stories)
    bos_id: int | None  # written before each story
    eos_id: int | None  # the model's end-of-story token (written after each story when it is not bos_id)
    model: Path | None = None  # the bundle dir, for "model"


@dataclass
class PrepareResult:
    """What `prepare` did."""

    manifest: dict  # the manifest now in the output dir
    up_to_date: bool  # True when nothing had to be done
    seconds: float  # wall time of this call


def sha256_file(path: Path, progress: Progress = _no_progress) -> str:
    """Hex SHA-256 of a file, reporting its bytes as "hashing" progress."""
    return safe_sha256(path, lambda n: progress("hashing", n, None))


def tokenizer_source(spec: str | Path) -> TokenizerSource:
    """What `--tokenizer` names: a model (installed name or bundle dir; a bundle's own tokenizer.json counts
    too) gives its tokenizer with its start/end tokens, any other tokenizer.json uses `<|endoftext|>`."""
    from engine.bundles.info import TOKENIZER as BUNDLE_TOKENIZER
    from engine.bundles.info import is_bundle, read_config
    from engine.bundles.registry import resolve_model

    path = Path(spec).expanduser()
    if path.is_file() and not is_bundle(path.parent):
        return TokenizerSource(path, "given", None, None)
    if path.suffix == ".json" and not path.exists():
        raise ValueError(f"{path}: no such tokenizer file")
    bundle = (path.parent if path.is_file() else resolve_model(str(spec))).absolute()
    _, raw = read_config(bundle)
    bos, eos = raw.get("bos_token_id"), raw.get("eos_token_id")
    if bos is None and eos is None:
        raise ValueError(f"{bundle}: the model has no start or end token to tell stories apart with")
    return TokenizerSource(bundle / BUNDLE_TOKENIZER, "model", bos, eos, bundle)


def load_tokenizer(source: TokenizerSource) -> TextTokenizer:
    """The source's tokenizer; ValueError when unreadable, too large for uint16, or (a bare file) without
    `<|endoftext|>`."""
    path = source.path
    hf = read_tokenizer(path)  # TokenizerFileError (a ValueError) naming the file
    bos, eos = source.bos_id, source.eos_id
    if source.kind == "given":
        bos = eos = hf.token_to_id(EOT)
        if bos is None:
            raise ValueError(
                f"{path}: tokenizer has no {EOT} token (needed between stories); to prepare data for a "
                "model, pass the model itself (--tokenizer NAME_OR_BUNDLE_DIR)"
            )
    tok = TextTokenizer(hf, bos_id=bos, eos_id=eos)
    if tok.vocab_size > MAX_VOCAB:
        raise ValueError(f"{path}: vocab size {tok.vocab_size} > {MAX_VOCAB} (ids are stored as uint16)")
    return tok


def story_markers(tok: TextTokenizer) -> tuple[list[int], list[int]]:
    """The ids written before and after every story: the start token, and the end token if it is another.

    With one token for both (`<|endoftext|>` = 0 for Helium's BPE, `<s>` = 1 for llama2.c models) stories
    follow each other as `<s> story <s> story`, as the model was trained; with no start token (HeliumLM)
    each story ends with the end token.
    """
    before = [tok.bos_id] if tok.bos_id is not None else []
    after = [tok.eos_id] if tok.eos_id is not None and tok.eos_id != tok.bos_id else []
    return before, after


def check_inputs(files: list[Path], out: Path, opts: PrepareOptions) -> dict | None:
    """Validate everything before any work; return the existing manifest (None when there is none)."""
    if opts.tokenizer is None:
        whole("vocab size", opts.vocab_size, low=257, high=MAX_VOCAB)  # ids are stored as uint16
    if not (is_number(opts.val_fraction) and 0 <= opts.val_fraction < 1):
        raise ValueError(f"val fraction must be in [0, 1), got {opts.val_fraction}")
    check_seed(opts.seed)
    whole("workers", opts.workers, low=0, high=1024)
    whole("shard tokens", opts.shard_tokens, high=1 << 31)
    if not files:
        raise ValueError("no input files given")
    for path in [*files, *([opts.val] if opts.val else [])]:
        try:
            check_regular(path)
        except OSError as exc:
            raise ValueError(f"{path}: {reason(exc)}") from None
    for fmt in (opts.fmt, opts.val_format):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    check_no_control(str(out), "the output path")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and kind_of(out.resolve()) != "data":  # never among the user's files
        raise ValueError(f"{out}: holds {contents(out)}, not a prepared data dir; choose a new or empty --out")
    if not (out / MANIFEST).exists():
        return None
    try:
        return read_manifest(out)
    except ValueError:
        raise ValueError(
            f"{out / MANIFEST}: corrupt manifest; delete it or choose another --out (nothing was changed)"
        ) from None


def is_up_to_date(out: Path, old: dict | None, sources: list[dict], options: dict) -> bool:
    """Whether the prepared dir already holds exactly what these inputs and options would produce."""
    if (
        not old
        or _source_keys(old.get("sources", [])) != _source_keys(sources)
        or old.get("options") != options
    ):
        return False
    tok_path = out / TOKENIZER
    if not tok_path.is_file() or sha256_file(tok_path) != old.get("tokenizer_sha256"):
        return False
    if set(old["splits"]) != {"train", "val"}:
        return False
    for split in old["splits"].values():
        sizes = [(out / name).stat().st_size if (out / name).is_file() else -1 for name in split["shards"]]
        if -1 in sizes or sum(sizes) != 2 * int(split["tokens"]):
            return False
    return True


def _source_keys(sources: list[dict]) -> list[tuple]:
    """What identifies the inputs: content and role, not the path they were read from."""
    return [(s.get("sha256"), s.get("bytes"), s.get("role")) for s in sources]


class ShardWriter:
    """Collects encoded stories of one split and writes `split_NNN.bin` files atomically."""

    def __init__(self, out: Path, split: str, shard_tokens: int) -> None:
        self.out = out  # the prepared dir
        self.split = split  # "train" or "val"
        self.shard_tokens = shard_tokens  # flush a shard once it holds this many tokens
        self.pending: list[np.ndarray] = []  # arrays of the shard being built
        self.pending_tokens = 0  # tokens in `pending`
        self.names: list[str] = []  # shard files written so far
        self.tokens = 0  # tokens written in all shards

    def add(self, ids: np.ndarray) -> None:
        """Append one story's ids (with its markers); stories never straddle two shards."""
        self.pending.append(ids)
        self.pending_tokens += len(ids)
        if self.pending_tokens >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        """Write the pending tokens as the next shard."""
        if not self.pending:
            return
        data = np.concatenate(self.pending).astype(np.uint16)
        name = f"{self.split}_{len(self.names):03d}.bin"
        try:
            atomic_write(self.out / name, data.tofile)
        except OSError as exc:  # numpy reports a short write as "N requested and M written", without an errno
            if exc.errno is None and "written" in str(exc):
                raise OSError(errno.ENOSPC, f"could not write {name}: the disk is full") from None
            raise
        self.names.append(name)
        self.tokens += len(data)
        self.pending, self.pending_tokens = [], 0


def encode_split(tok: TextTokenizer, stories: list[str], writer: ShardWriter, progress: Progress) -> int:
    """Encode stories as `start story [end]` (`story_markers`) into the writer (parallel inside each batch);
    return text bytes."""
    before, after = story_markers(tok)
    text_bytes = 0
    stage = f"encoding {writer.split}"
    progress(stage, 0, len(stories))
    for start in range(0, len(stories), ENCODE_BATCH):
        batch = stories[start : start + ENCODE_BATCH]
        for story, enc in zip(batch, tok.hf.encode_batch(batch, add_special_tokens=False), strict=True):
            ids = np.empty(len(before) + len(enc.ids) + len(after), dtype=np.uint16)
            ids[: len(before)] = before
            ids[len(before) : len(ids) - len(after)] = enc.ids
            ids[len(ids) - len(after) :] = after
            writer.add(ids)
            text_bytes += len(story.encode("utf-8"))
        progress(stage, len(batch), len(stories))
    writer.flush()
    return text_bytes


def prepare(
    files: list[Path], out: Path, opts: PrepareOptions, progress: Progress = _no_progress
) -> PrepareResult:
    """Prepare `out` from files (see module docstring); a no-op when it is already up to date."""
    started = time.perf_counter()
    files = [Path(f) for f in files]
    out = Path(out)
    old = check_inputs(files, out, opts)
    source = tokenizer_source(opts.tokenizer) if opts.tokenizer else None
    tokenizer = load_tokenizer(source) if source else None
    if opts.workers > 0:
        os.environ["RAYON_NUM_THREADS"] = str(opts.workers)  # read by tokenizers when its pool starts

    inputs = [(p, "train") for p in files] + ([(opts.val, "val")] if opts.val else [])
    progress("hashing", 0, sum(p.stat().st_size for p, _ in inputs))
    sources = [
        {
            "path": str(p.resolve()),
            "sha256": sha256_file(p, progress),
            "bytes": p.stat().st_size,
            "role": role,
        }
        for p, role in inputs
    ]
    options = opts.fingerprint(source)
    if source:
        options["tokenizer_sha256"] = sha256_file(source.path)
    if is_up_to_date(out, old, sources, options):
        return PrepareResult(old, True, time.perf_counter() - started)

    progress("reading", 0, sum(s["bytes"] for s in sources))
    on_bytes = lambda n: progress("reading", n, None)  # noqa: E731
    stats = ReadStats()
    stories, stats = read_stories(files, opts.fmt, stats=stats, on_bytes=on_bytes)
    if opts.val:
        train = stories
        val, stats = read_stories(
            [opts.val], opts.val_format, whole_if_unmarked=True, stats=stats, on_bytes=on_bytes
        )
    else:
        train, val = split_stories(stories, opts.val_fraction, opts.seed)
    if not train:
        raise ValueError(f"no stories found in {', '.join(map(str, files))} (after dropping empty ones)")

    if tokenizer is None:
        progress("tokenizer", 0, None)
        tokenizer = train_bpe(_first_chars(train, opts.bpe_max_chars), opts.vocab_size)
        progress("tokenizer", 1, 1)

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here on the old shards are being replaced
    if source:  # the very bytes, so the data's tokenizer is the model's
        tok_bytes = read_regular(source.path, MAX_TOKENIZER_BYTES)
        atomic_write(out / TOKENIZER, lambda p: p.write_bytes(tok_bytes))
    else:
        atomic_write_text(out / TOKENIZER, tokenizer.hf.to_str())

    splits = {}
    for name, split_stories_ in (("train", train), ("val", val)):
        writer = ShardWriter(out, name, opts.shard_tokens)
        text_bytes = encode_split(tokenizer, split_stories_, writer, progress)
        splits[name] = {
            "shards": writer.names,
            "tokens": writer.tokens,
            "stories": len(split_stories_),
            "text_bytes": text_bytes,
        }

    manifest = {
        "format": FORMAT,
        "vocab_size": tokenizer.vocab_size,
        "eot_id": tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
        "tokenizer_model": str(source.model) if source and source.model else None,
        "tokenizer_sha256": sha256_file(out / TOKENIZER),
        "sources": sources,
        "splits": splits,
        "stats": {
            "stories_read": stats.stories_read,
            "empty_dropped": stats.empty_dropped,
            "duplicates_dropped": stats.duplicates_dropped,
            "formats": stats.formats,
        },
        "options": options,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    keep = {n for s in splits.values() for n in s["shards"]}
    for stale in out.iterdir():
        if SHARD_NAME.match(stale.name) and stale.name not in keep:
            stale.unlink()
    return PrepareResult(manifest, False, time.perf_counter() - started)


def _first_chars(stories: list[str], max_chars: int) -> list[str]:
    """The leading stories holding at most max_chars characters (at least one story)."""
    total = 0
    for i, story in enumerate(stories):
        total += len(story)
        if total > max_chars:
            return stories[: max(i, 1)]
    return stories


def markers_per_story(manifest: dict) -> int:
    """How many marker tokens (start, end) each story of a prepared dir carries besides its text."""
    eot = manifest.get("eot_id", 0)
    bos, eos = manifest.get("bos_id", eot), manifest.get("eos_id", eot)
    return (bos is not None) + (eos is not None and eos != bos)


def bytes_per_token(split: dict, markers: int = 1) -> float | None:
    """UTF-8 text bytes per story token (not counting each story's `markers` start/end tokens); None for an
    empty split."""
    story_tokens = int(split["tokens"]) - markers * int(split["stories"])
    return split["text_bytes"] / story_tokens if story_tokens > 0 and "text_bytes" in split else None
