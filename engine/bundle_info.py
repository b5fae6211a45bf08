"""What a model bundle directory holds, read without torch: file names, config.json and metadata.json.

A bundle is `config.json` + `model.safetensors` + `tokenizer.json` + `metadata.json` (docs/INTERFACES.md);
`engine.bundle` loads and saves the weights, this module only reads the small JSON files.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.config import ModelConfig
from engine.errors import BundleError

CONFIG, WEIGHTS, TOKENIZER, METADATA = "config.json", "model.safetensors", "tokenizer.json", "metadata.json"
PT_WEIGHTS = "model.pt"  # the model card's plain PyTorch state dict, accepted instead of safetensors
FORMAT = "helium-bundle/1"


MAX_JSON_BYTES = 1 << 20  # config.json and metadata.json are small; anything bigger is not a bundle's


def read_json(path: Path) -> object:
    """A small JSON file: regular files only (a FIFO never blocks us), at most MAX_JSON_BYTES; ValueError if bad."""
    if not path.is_file():
        raise FileNotFoundError(path)
    with open(path, "rb") as f:
        data = f.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES // 1024} KB")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_config(directory: Path) -> tuple[ModelConfig, dict]:
    """Parse config.json into the model config and the raw dict (start/end token ids checked too)."""
    path = directory / CONFIG
    try:
        raw = read_json(path)
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (not a Helium model bundle)") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BundleError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    try:
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        config = ModelConfig.from_dict(raw["model"])
        for key in ("bos_token_id", "eos_token_id"):
            value = raw.get(key)
            if value is not None and (type(value) is not int or not 0 <= value < config.vocab_size):
                raise ValueError(f"{key} must be a token id from 0 to {config.vocab_size - 1} or null, got {value!r}")
        return config, raw
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: bad model config ({str(exc).splitlines()[0][:200]})") from None


def read_metadata(directory: Path) -> dict:
    """metadata.json as a dict ({} when absent, unreadable or not an object)."""
    try:
        meta = read_json(directory / METADATA)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def is_bundle(directory: Path) -> bool:
    """True when directory looks like a bundle (it has a config.json)."""
    return directory.joinpath(CONFIG).is_file()


def check_bundle_target(out_dir: Path, force: bool = False) -> bool:
    """Where an importer may write a new bundle: out_dir absent or an empty directory, or with force something
    Helium wrote there (a bundle or an export; never a folder of other files, never a link); else BundleError.
    Returns whether something is replaced (engine.targets has the rules)."""
    from engine.targets import DIR_KINDS, check_target

    try:
        return check_target(out_dir, force, DIR_KINDS)
    except ValueError as exc:
        raise BundleError(str(exc)) from None
