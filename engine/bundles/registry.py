"""Where model bundles live and how `--model NAME_OR_PATH` finds one.

Names resolve in the user data dir (platformdirs) first, then in the installed `assets/` package. No torch here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.bundles.info import CONFIG, read_config, read_metadata
from engine.errors import BundleError
from engine.paths import assets_dir, user_models_dir

DEFAULT_MODEL = "helium-default"


def search_dirs() -> list[Path]:
    """Directories searched for a model name, in order."""
    return [user_models_dir(), assets_dir()]


def resolve_model(name_or_path: str | None) -> Path:
    """A bundle directory for a path or a name; BundleError with guidance when none is found."""
    if not name_or_path:
        name_or_path = DEFAULT_MODEL
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.parent.joinpath(CONFIG).is_file():
        return path.parent  # a weights file inside a bundle
    if path.is_dir():
        return path
    if os.sep not in name_or_path:
        for base in search_dirs():
            candidate = base / name_or_path
            if candidate.joinpath(CONFIG).is_file():
                return candidate
    if name_or_path == DEFAULT_MODEL:
        raise BundleError(
            "no default model installed: import one with `helium import llama2c MODEL.bin --tokenizer TOK.bin "
            "--out DIR`, train one with `helium train`, then pass `--model DIR`"
        )
    names = ", ".join(m.name for m in list_models()) or "none installed"
    raise BundleError(f"{name_or_path}: no such model bundle (path or name; installed: {names})")


@dataclass(frozen=True)
class ModelInfo:
    """One installed bundle, for pickers and `helium models`."""

    name: str
    path: Path
    parameters: int
    vocab_size: int
    source: str  # "user" or "shipped"
    metadata: dict


def list_models() -> list[ModelInfo]:
    """Every readable bundle in the search dirs (a name found twice: the user's copy wins)."""
    found: dict[str, ModelInfo] = {}
    for base, source in zip(search_dirs(), ("user", "shipped"), strict=True):
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if d.name in found or not d.joinpath(CONFIG).is_file():
                continue
            try:
                config, _ = read_config(d)
            except BundleError:
                continue
            meta = read_metadata(d)
            found[d.name] = ModelInfo(d.name, d, config.parameters, config.vocab_size, source, meta)
    return list(found.values())
