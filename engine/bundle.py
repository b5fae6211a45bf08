"""Model bundles, loaded and saved: config.json, model.safetensors, tokenizer.json and metadata.json.

A bundle may carry the model card's plain `model.pt` state dict instead (loaded `weights_only=True`). Every problem is a
`BundleError` whose message names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from engine.bundle_info import (
    CONFIG,
    FORMAT,
    METADATA,
    PT_WEIGHTS,
    TOKENIZER,
    WEIGHTS,
    read_config,
    read_metadata,
)
from engine.config import ModelConfig
from engine.errors import BundleError
from engine.files import atomic_write, atomic_write_text
from engine.model import TinySLM, state_shapes
from engine.tokenizer import TextTokenizer


@dataclass
class Bundle:
    """A loaded model with its tokenizer and metadata."""

    model: TinySLM
    tokenizer: TextTokenizer
    config: ModelConfig
    metadata: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        """Short name for display."""
        return self.path.name if self.path else "unsaved"


def save_bundle(
    directory: str | Path,
    model: TinySLM,
    tokenizer: TextTokenizer,
    metadata: dict | None = None,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Write a bundle; each file lands atomically. Weights are saved from the uncompiled module,
    in weights_dtype if given (bfloat16 halves the size; loading casts to the run's dtype)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", dtype=weights_dtype or v.dtype).contiguous() for k, v in model.state_dict().items()
    }
    if model.config.tie_embeddings:
        state.pop("output.weight", None)
    atomic_write(directory / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    atomic_write(directory / TOKENIZER, lambda p: tokenizer.hf.save(str(p)))
    config = {
        "format": FORMAT,
        "model": model.config.to_dict(),
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
    }
    atomic_write_text(directory / CONFIG, json.dumps(config, indent=2) + "\n")
    meta = {"created_by": "helium", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta |= metadata or {}
    meta["parameters"] = model.num_params()
    atomic_write_text(directory / METADATA, json.dumps(meta, indent=2) + "\n")
    return directory


FLOAT_DTYPES = {"F32", "F16", "BF16"}  # what a bundle's safetensors weights may be stored in


def check_weights_header(path: Path, config: ModelConfig) -> None:
    """Compare a safetensors file's header (names, shapes, dtypes) with the config before loading anything."""
    _check_readable(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable or truncated safetensors file ({_first_line(exc)})") from None
    bad_dtypes = sorted({dtype for _, dtype in header.values()} - FLOAT_DTYPES)
    if bad_dtypes:
        raise BundleError(f"{path}: weights stored as {', '.join(bad_dtypes)} (expected float32, float16 or bfloat16)")
    check_shapes({k: shape for k, (shape, _) in header.items()}, config, path)


def check_shapes(found: dict[str, tuple[int, ...]], config: ModelConfig, source: Path) -> None:
    """BundleError naming missing/unexpected tensors or a wrong shape, against `state_shapes(config)`."""
    found = {_clean_key(k): v for k, v in found.items()}
    if config.tie_embeddings:
        found.pop("output.weight", None)
    expected = state_shapes(config)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        raise BundleError(f"{source}: weights do not match the config: {'; '.join(parts)}")
    for k, shape in expected.items():
        if tuple(found[k]) != shape:
            raise BundleError(f"{source}: wrong shape for {k}: file has {tuple(found[k])}, config needs {shape}")


def _clean_key(key: str) -> str:
    """A state-dict key without the prefixes torch.compile and DDP add."""
    return key.removeprefix("_orig_mod.").removeprefix("module.")


def _check_readable(path: Path) -> None:
    if not path.is_file():
        raise BundleError(f"{path}: missing" if not path.exists() else f"{path}: not a regular file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from .safetensors or a plain .pt state dict, never unpickling arbitrary objects."""
    _check_readable(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BundleError(f"{path}: unreadable or truncated safetensors file ({_first_line(exc)})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as exc:  # noqa: BLE001 - pickle refusals, truncation, zip errors all land here
        reason = _first_line(exc)
        if "weights_only" in reason or "Unpickl" in reason:
            reason = "it holds Python objects besides tensors, which Helium never loads"
        raise BundleError(f"{path}: cannot load safely ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a training checkpoint: the weights live under "model"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{path}: not a state dict of tensors")
    return state


def build_model(config: ModelConfig, state: dict[str, torch.Tensor], source: Path) -> TinySLM:
    """A TinySLM with state loaded, or a BundleError naming missing/unexpected keys, bad shapes or nan weights.

    Shapes are checked before the model is allocated, and every weight must be finite.
    """
    state = {_clean_key(k): v for k, v in state.items()}
    check_shapes({k: tuple(v.shape) for k, v in state.items()}, config, source)
    for k, v in state.items():
        if not v.is_floating_point():
            raise BundleError(f"{source}: {k} is not a floating-point tensor ({v.dtype})")
        if not bool(torch.isfinite(v).all()):
            raise BundleError(f"{source}: {k} holds nan or inf values (a diverged or damaged model)")
    model = TinySLM(config)  # on the CPU: first use of the meta device costs ~1 s of torch warm-up
    if config.tie_embeddings:
        state.pop("output.weight", None)
    model.load_state_dict(state, strict=False)
    return model.eval()


def load_bundle(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Bundle:
    """Load a bundle directory onto device in dtype."""
    directory = Path(path)
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a directory (a model bundle is a directory)")
    config, raw = read_config(directory)
    tok_path = directory / TOKENIZER
    if not tok_path.is_file():
        raise BundleError(f"{tok_path}: missing")
    try:
        tokenizer = TextTokenizer.from_file(tok_path, raw.get("bos_token_id"), raw.get("eos_token_id"))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
        raise BundleError(f"{tok_path}: not a valid HF tokenizers file ({_first_line(exc)})") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise BundleError(
            f"{tok_path}: tokenizer has {tokenizer.vocab_size} tokens but the model has {config.vocab_size}"
        )
    weights = directory / WEIGHTS
    if not weights.exists() and (directory / PT_WEIGHTS).exists():
        weights = directory / PT_WEIGHTS  # the model card's plain PyTorch state dict
    if weights.suffix == ".safetensors":
        check_weights_header(weights, config)  # before a single weight is read or the model allocated
    model = build_model(config, load_state_dict(weights), weights)
    model = model.to(device=device, dtype=dtype)
    return Bundle(model, tokenizer, config, read_metadata(directory), directory)


def _short(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
