"""Training checkpoints: plain dicts of tensors, ints and floats, written atomically, loadable weights_only.

`RUN_DIR/checkpoints/step_000100.pt` every N steps (the last K kept) plus `best.pt` (lowest val loss).
`load_checkpoint` checks every field it returns, so a tampered file is one clear error, not a crash later.
"""

from __future__ import annotations

import errno
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import first_line
from engine.files import atomic_write
from engine.model.config import ModelConfig

FORMAT = "helium-ckpt/1"
BEST = "best.pt"
STEP_RE = re.compile(r"^step_(\d+)\.pt$")
MT_STATE_WORDS = 624  # numpy's MT19937 key length


def step_path(directory: Path, step: int) -> Path:
    """checkpoints/step_000100.pt."""
    return directory / f"step_{step:06d}.pt"


def step_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every step checkpoint in directory, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(directory: Path) -> Path | None:
    """The step checkpoint with the highest step, or None."""
    found = step_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(path: Path, state: dict) -> Path:
    """torch.save state to path atomically (temp file, fsync, rename); OSError (one line) if it cannot be written.

    torch reports a short write (a full disk, a file-size limit) as "unexpected pos" RuntimeError: that becomes
    an OSError saying so, and the previous checkpoints stay as they were.
    """
    try:
        return atomic_write(path, lambda tmp: torch.save(state, tmp))
    except RuntimeError:
        raise OSError(errno.ENOSPC, f"could not write {path.name}: the disk is full or the file too large") from None


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint dict loaded with weights_only=True and checked field by field; ValueError (one line) if not."""
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint missing")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zips, pickle refusals, etc.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if "weights_only" in first or "Unpickl" in first:
            first = "it holds objects other than tensors and plain values, which Helium never loads"
        raise ValueError(f"{path}: corrupt or unsafe checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a Helium training checkpoint")
    try:
        check_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: damaged checkpoint ({first_line(exc, 160)})") from None
    return state


def check_state(state: dict[str, Any]) -> None:
    """Raise (KeyError, TypeError or ValueError) unless a checkpoint's fields have the types training needs."""
    for key in ("step", "tokens"):
        if not _whole(state[key]) or state[key] < 0:
            raise ValueError(f"{key!r} must be a whole number ≥ 0")
    if not _finite(state["elapsed_s"]):
        raise ValueError("'elapsed_s' must be a number")
    for key in ("val_loss", "best_val_loss"):
        if state[key] is not None and not _finite(state[key]):
            raise ValueError(f"{key!r} must be a number or None")
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise ValueError("'model' must be a dict of tensors")
    if not isinstance(state["optimizer"], dict):
        raise ValueError("'optimizer' must be a dict")
    ModelConfig.from_dict(state["model_config"])
    check_rng_state(state["rng"])


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def prune(directory: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest keep_last step checkpoints (keep_last <= 0 keeps all); return deleted."""
    if keep_last <= 0:
        return []
    old = step_checkpoints(directory)[:-keep_last]
    for _, path in old:
        path.unlink(missing_ok=True)
    return [p for _, p in old]


def remove_stale_temps(directory: Path) -> None:
    """Delete temp files left by a save that was killed midway."""
    if directory.is_dir():
        for p in directory.glob(".*.tmp"):
            p.unlink(missing_ok=True)


# ---------------------------------------------------------------- RNG state as plain tensors


def rng_state(device: torch.device) -> dict:
    """torch (CPU and CUDA), numpy and python RNG states as tensors and numbers."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python_version": int(py_version),
        "python_internal": torch.tensor(py_internal, dtype=torch.int64),
        "python_gauss": py_gauss,
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def check_rng_state(state: Any) -> None:
    """Raise unless state has the shapes and types `set_rng_state` needs."""
    if not isinstance(state, dict):
        raise TypeError("'rng' must be a dict")
    for key in ("torch", "numpy_keys", "python_internal"):
        if not isinstance(state[key], torch.Tensor):
            raise TypeError(f"rng {key!r} must be a tensor")
    if state["numpy_keys"].numel() != MT_STATE_WORDS:
        raise ValueError(f"rng 'numpy_keys' must hold {MT_STATE_WORDS} words")
    if state["python_internal"].numel() != MT_STATE_WORDS + 1:
        raise ValueError(f"rng 'python_internal' must hold {MT_STATE_WORDS + 1} words")
    for key in ("numpy_pos", "numpy_has_gauss", "python_version"):
        if not _whole(state[key]):
            raise TypeError(f"rng {key!r} must be a whole number")
    if not _finite(state["numpy_gauss"]) or not (state["python_gauss"] is None or _finite(state["python_gauss"])):
        raise TypeError("rng gauss values must be numbers")


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what `rng_state` captured (checked by `check_rng_state` on load)."""
    torch.set_rng_state(state["torch"].cpu())
    keys = state["numpy_keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, int(state["numpy_pos"]), int(state["numpy_has_gauss"]), float(state["numpy_gauss"]))
    )
    internal = tuple(int(v) for v in state["python_internal"].tolist())
    random.setstate((int(state["python_version"]), internal, state["python_gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
