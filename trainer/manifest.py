"""A prepared data dir's manifest.json, read and checked field by field (shard names confined to the dir).

Torch-free, so the fine-tune planner and the training monitor read it without the loader's imports.
"""

from __future__ import annotations

from pathlib import Path

from engine.jsonfile import REQUIRED, JsonFileError, field, need_object, read_json, shown
from engine.safe_read import inside

MANIFEST = "manifest.json"
FORMAT = "helium-data/1"
MAX_MANIFEST_BYTES = 16 << 20  # a manifest lists a few hundred shards at most


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest of a prepared data dir, every field Helium reads checked (shard names confined to the dir);
    ValueError with a one-line message when missing or corrupt."""
    path = Path(data_dir) / MANIFEST
    if not (path.exists() or path.is_symlink()):
        raise ValueError(f"{data_dir}: not a prepared data dir (no {MANIFEST}; run `helium data prepare`)")
    try:
        manifest = need_object(read_json(path, max_bytes=MAX_MANIFEST_BYTES), path)
    except JsonFileError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: unreadable manifest ({reason}); run `helium data prepare` again") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest; run `helium data prepare` again")
    try:
        _check_fields(manifest, path)
    except JsonFileError as exc:
        raise ValueError(f"{path}: corrupt manifest ({str(exc).removeprefix(f'{path}: ')}); "
                         "run `helium data prepare` again") from None  # fmt: skip
    return manifest


def _check_fields(manifest: dict, path: Path) -> None:
    """JsonFileError naming the first field of the manifest that is missing or of the wrong kind."""
    field(manifest, "vocab_size", int, source=path, low=1, high=65536)
    for key in ("eot_id", "bos_id", "eos_id"):
        field(manifest, key, int, None, source=path, low=0, high=65535)
    for key in ("tokenizer_model", "tokenizer_sha256"):
        field(manifest, key, str, None, source=path)
    for i, source in enumerate(field(manifest, "sources", list, [], source=path)):
        need_object(source, path, f"sources[{i}]")
    splits = field(manifest, "splits", dict, source=path)
    for name in splits:
        split = field(splits, name, dict, source=path, label=f"splits.{name}")
        for i, shard in enumerate(field(split, "shards", list, source=path, label=f"splits.{name}.shards")):
            if not isinstance(shard, str):
                raise JsonFileError(f"{path}: splits.{name}.shards[{i}] must be a file name, got {shown(shard)}")
            shard_path(path.parent, shard)
        for key in ("tokens", "stories", "text_bytes"):
            default = REQUIRED if key == "tokens" else None
            field(split, key, int, default, source=path, low=0, label=f"splits.{name}.{key}")


def shard_path(data_dir: Path, name: str) -> Path:
    """data_dir / name for a shard the manifest names; ValueError when the name leads outside data_dir."""
    try:
        return inside(data_dir, name, "shard")
    except ValueError:
        raise ValueError(
            f"{data_dir / MANIFEST}: the shard {name[:80]!r} is outside the data dir (refused); "
            "run `helium data prepare` again"
        ) from None
