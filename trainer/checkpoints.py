"""Training checkpoints: plain dicts of tensors, ints and floats, written atomically, loadable weights_only.

`RUN_DIR/checkpoints/step_000100.pt` every N steps (the last K kept) plus `best.pt` (lowest val loss).
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from engine.files import atomic_write

FORMAT = "helium-ckpt/1"
BEST = "best.pt"
STEP_RE = re.compile(r"^step_(\d+)\.pt$")
PAUSE_ENV = "HELIUM_TEST_CKPT_PAUSE"  # tests: seconds to sleep after writing the temp file, before the rename


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
    """torch.save state to path atomically (temp file, fsync, rename)."""

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        pause = os.environ.get(PAUSE_ENV)
        if pause:  # lets a test kill the process while only the temp file exists
            print(f"checkpoint-temp-written {tmp}", file=sys.stderr, flush=True)
            time.sleep(float(pause))

    return atomic_write(path, write)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """A checkpoint dict loaded with weights_only=True; ValueError with one line if unusable."""
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint missing")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zips, pickle refusals, etc.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: corrupt or unsafe checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a Helium training checkpoint")
    return state


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


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    keys = state["numpy_keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(
        ("MT19937", keys, int(state["numpy_pos"]), int(state["numpy_has_gauss"]), float(state["numpy_gauss"]))
    )
    internal = tuple(int(v) for v in state["python_internal"].tolist())
    random.setstate((int(state["python_version"]), internal, state["python_gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
