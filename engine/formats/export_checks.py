"""Checks and facts shared by the GGUF and Hugging Face exports: what they refuse, what the bundle stores.

Both targets run Llama's architecture, which attends over the whole context: no sliding window.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from engine.bundles.bundle import Bundle
from engine.bundles.info import WEIGHTS
from engine.errors import BundleError
from engine.model.config import ModelConfig


def refuse_sliding_window(config: ModelConfig, target: str) -> None:
    """BundleError when the model attends through a window shorter than its context (target cannot run it)."""
    window = getattr(config, "sliding_window", None)
    if window is not None and window < config.context_length:
        raise BundleError(
            f"sliding-window attention (window {window} < context {config.context_length}) cannot be exported "
            f"to {target}: its Llama architecture attends over the whole context"
        )


def stored_dtype(bundle: Bundle) -> torch.dtype:
    """The dtype the bundle's weights file holds (float32 for the card's model.pt)."""
    path = bundle.path / WEIGHTS if bundle.path else None
    if path is None or not path.is_file():
        return torch.float32
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        first = next(iter(f.keys()))
        name = f.get_slice(first).get_dtype()
    return {"BF16": torch.bfloat16, "F16": torch.float16}.get(name, torch.float32)


def check_parent_writable(out: Path) -> None:
    """OSError naming the problem when out cannot be created: its nearest existing folder is a file or read-only."""
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OSError(f"{out}: cannot write there ({parent} is not a directory)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(f"{out}: cannot write there ({parent} is not writable)")
