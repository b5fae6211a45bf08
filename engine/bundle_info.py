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


def read_config(directory: Path) -> tuple[ModelConfig, dict]:
    """Parse config.json into the model config and the raw dict."""
    path = directory / CONFIG
    if not path.is_file():
        raise BundleError(f"{path}: missing (not a Helium model bundle)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ModelConfig.from_dict(raw["model"]), raw
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: bad model config ({exc})") from None


def read_metadata(directory: Path) -> dict:
    """metadata.json as a dict ({} when absent or unreadable)."""
    try:
        return json.loads((directory / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def is_bundle(directory: Path) -> bool:
    """True when directory looks like a bundle (it has a config.json)."""
    return directory.joinpath(CONFIG).is_file()
