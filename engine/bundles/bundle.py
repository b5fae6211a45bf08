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

from engine.bundles.info import (
    CONFIG,
    FORMAT,
    METADATA,
    PT_WEIGHTS,
    TOKENIZER,
    WEIGHTS,
    read_config,
    read_metadata,
)
from engine.errors import BundleError, first_line
from engine.files import atomic_write, atomic_write_text
from engine.model.config import ModelConfig
from engine.model.quant import (
    SCALE_SUFFIX,
    check_quantize,
    dequantize_model,
    is_quantized,
    is_quantized_state,
    quantize_model,
    quantized_shapes,
)
from engine.model.quant4 import (
    dequantize_model_int4,
    int4_shapes,
    is_int4,
    is_int4_state,
    quantize_model_int4,
)
from engine.model.tinyslm import TinySLM, state_shapes
from engine.model.tokenizer import TextTokenizer, TokenizerFileError
from engine.safe_read import check_regular, unreadable


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
    quantized = "int8" if is_quantized(model) else "int4" if is_int4(model) else None
    state = {k: _stored(k, v, weights_dtype) for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("output.weight", None)
        state.pop("output.weight" + SCALE_SUFFIX, None)
    atomic_write(directory / WEIGHTS, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    atomic_write(directory / TOKENIZER, lambda p: tokenizer.hf.save(str(p)))
    config = {
        "format": FORMAT,
        "model": model.config.to_dict(),
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
    }
    if quantized:
        config["quantization"] = quantized  # informational: loaders go by the tensors (int8 / uint8 + scales)
    atomic_write_text(directory / CONFIG, json.dumps(config, indent=2) + "\n")
    meta = {"created_by": "helium", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta |= metadata or {}
    meta["parameters"] = model.num_params()
    if quantized:
        meta["quantization"] = quantized
    atomic_write_text(directory / METADATA, json.dumps(meta, indent=2) + "\n")
    return directory


def _stored(key: str, tensor: torch.Tensor, weights_dtype: torch.dtype | None) -> torch.Tensor:
    """A tensor as a bundle stores it: int8 weights as they are, their scales in float32, int4's packed bytes and
    float16 scale bits as they are, the rest in weights_dtype (or as they are)."""
    if not tensor.is_floating_point():
        dtype = tensor.dtype
    elif key.endswith(SCALE_SUFFIX):
        dtype = torch.float32
    else:
        dtype = weights_dtype or tensor.dtype
    return tensor.detach().to("cpu", dtype=dtype).contiguous()


FLOAT_DTYPES = {"F32", "F16", "BF16"}  # what a bundle's safetensors weights may be stored in


def check_weights_header(path: Path, config: ModelConfig) -> None:
    """Compare a safetensors file's header (names, shapes, dtypes) with the config before loading anything."""
    _check_readable(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable or truncated safetensors file ({first_line(exc)})") from None
    int4 = is_int4_state({k: dtype for k, (_, dtype) in header.items()})
    quantized = any(k.endswith(SCALE_SUFFIX) for k in header) and not int4
    packed = {"I8"} if quantized else {"U8", "I16"} if int4 else set()  # int8 weights; int4's bytes and scale bits
    bad_dtypes = sorted({dtype for _, dtype in header.values() if dtype not in packed} - FLOAT_DTYPES)
    if bad_dtypes:
        raise BundleError(f"{path}: weights stored as {', '.join(bad_dtypes)} (expected float32, float16 or bfloat16)")
    check_shapes({k: shape for k, (shape, _) in header.items()}, config, path)
    if quantized:
        _check_int8_layout({k: dtype == "I8" for k, (_, dtype) in header.items()}, path)


def check_shapes(found: dict[str, tuple[int, ...]], config: ModelConfig, source: Path) -> None:
    """BundleError naming missing/unexpected tensors or a wrong shape, against `state_shapes(config)`."""
    found = {_clean_key(k): v for k, v in found.items()}
    if config.tie_embeddings:
        found.pop("output.weight", None)
        found.pop("output.weight" + SCALE_SUFFIX, None)
    expected = state_shapes(config)
    if any(k.endswith(SCALE_SUFFIX) and len(v) == 2 for k, v in found.items()):  # int4: blocks of 32, their scales
        expected = int4_shapes(expected)
    elif any(k.endswith(SCALE_SUFFIX) for k in found):  # an int8 bundle: every matrix has its scales
        expected = quantized_shapes(expected)
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


def _check_int8_layout(is_int8: dict[str, bool], source: Path) -> None:
    """BundleError unless exactly the matrices that have scales are int8 (an int8 bundle's layout)."""
    is_int8 = {_clean_key(k): v for k, v in is_int8.items()}
    for key, int8 in is_int8.items():
        if key.endswith(SCALE_SUFFIX):
            continue
        if int8 != (key + SCALE_SUFFIX in is_int8):
            want = "int8 with scales" if key + SCALE_SUFFIX in is_int8 else "floating point"
            raise BundleError(f"{source}: {key} should be {want} in an int8 bundle")


def _clean_key(key: str) -> str:
    """A state-dict key without the prefixes torch.compile and DDP add."""
    return key.removeprefix("_orig_mod.").removeprefix("module.")


def _check_readable(path: Path) -> None:
    """BundleError unless path is a readable regular file (a FIFO or device is refused, never opened blocking)."""
    try:
        check_regular(path)
    except OSError as exc:
        raise BundleError(unreadable(path, exc)) from None


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from .safetensors or a plain .pt state dict, never unpickling arbitrary objects."""
    _check_readable(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BundleError(f"{path}: unreadable or truncated safetensors file ({first_line(exc)})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as exc:  # noqa: BLE001 - pickle refusals, truncation, zip errors all land here
        reason = first_line(exc)
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
    int4 = is_int4_state({k: v.dtype for k, v in state.items()})
    quantized = is_quantized_state(state) and not int4
    if quantized:
        _check_int8_layout({k: v.dtype == torch.int8 for k, v in state.items()}, source)
    for k, v in state.items():
        if quantized and v.dtype == torch.int8:
            continue
        if int4 and v.dtype in (torch.uint8, torch.int16):
            if v.dtype == torch.int16 and not bool(torch.isfinite(v.view(torch.float16)).all()):
                raise BundleError(f"{source}: {k} holds nan or inf scales (a damaged int4 bundle)")
            continue
        if not v.is_floating_point():
            raise BundleError(f"{source}: {k} is not a floating-point tensor ({v.dtype})")
        if not bool(torch.isfinite(v).all()):
            raise BundleError(f"{source}: {k} holds nan or inf values (a diverged or damaged model)")
        if k.endswith(SCALE_SUFFIX) and not bool((v > 0).all()):
            raise BundleError(f"{source}: {k} holds scales that are not positive (a damaged int8 bundle)")
    model = TinySLM(config)  # on the CPU: first use of the meta device costs ~1 s of torch warm-up
    if quantized:
        quantize_model(model, empty=True)  # the int8 layout; the file's int8 weights load into it as they are
    if int4:
        quantize_model_int4(model, empty=True)  # the int4 layout, as above
    if config.tie_embeddings:
        state.pop("output.weight", None)
        state.pop("output.weight" + SCALE_SUFFIX, None)
    model.load_state_dict(state, strict=False)
    return model.eval()


def load_bundle(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, quantize: str = "none"
) -> Bundle:
    """Load a bundle directory onto device in dtype.

    quantize "int8": int8 weights (an int8 bundle's as stored, a float bundle's quantized now from its
    weights); "none": float weights (an int8 or int4 bundle's dequantized: exactly the values it holds); "int4":
    Q4_0 blocks (an int4 bundle's as stored).
    """
    check_quantize(quantize)
    directory = Path(path)
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a directory (a model bundle is a directory)")
    config, tokenizer, weights = check_parts(directory)
    model = build_model(config, load_state_dict(weights), weights)
    if quantize != "int4":
        dequantize_model_int4(model)  # an int4 bundle's exact values (no-op for others)
    if quantize == "int8":
        quantize_model(model)  # no-op for an int8 bundle
    else:
        dequantize_model(model)  # no-op for a float bundle
    if quantize == "int4":
        quantize_model_int4(model)  # Q4_0 blocks from the float (or int8 bundle's dequantized) weights; no-op for int4
    model = model.to(device=device, dtype=dtype)
    return Bundle(model, tokenizer, config, read_metadata(directory), directory)


def check_parts(directory: Path) -> tuple[ModelConfig, TextTokenizer, Path]:
    """A bundle's config, its tokenizer (whose vocabulary must be the model's) and its weights file, the
    safetensors header checked against the config: all load_bundle checks before it reads a weight, and all
    `engine.bundles.install.validate_bundle` checks before anything is installed. BundleError otherwise."""
    config, raw = read_config(directory)
    tok_path = directory / TOKENIZER
    try:
        tokenizer = TextTokenizer.from_file(tok_path, raw.get("bos_token_id"), raw.get("eos_token_id"))
    except TokenizerFileError as exc:
        raise BundleError(str(exc)) from None
    if tokenizer.vocab_size != config.vocab_size:
        raise BundleError(
            f"{tok_path}: tokenizer has {tokenizer.vocab_size} tokens but the model has {config.vocab_size}"
        )
    weights = directory / WEIGHTS
    if not (weights.exists() or weights.is_symlink()) and (directory / PT_WEIGHTS).exists():
        weights = directory / PT_WEIGHTS  # the model card's plain PyTorch state dict
    if weights.suffix == ".safetensors":
        check_weights_header(weights, config)  # before a single weight is read or the model allocated
    return config, tokenizer, weights


def stored_quantization(path: str | Path) -> str:
    """"int8" when the bundle at path stores int8 weights (scales in its safetensors header), "int4" when Q4_0
    blocks (packed uint8), else "none"."""
    weights = Path(path) / WEIGHTS
    try:
        check_regular(weights)  # a FIFO named model.safetensors would block safe_open for ever
        with safe_open(str(weights), framework="pt") as f:
            if is_int4_state({k: f.get_slice(k).get_dtype() for k in f.keys()}):
                return "int4"
            return "int8" if any(k.endswith(SCALE_SUFFIX) for k in f.keys()) else "none"
    except (SafetensorError, OSError, ValueError):
        return "none"  # model.pt, or a damaged file: load_bundle reports what is wrong


def _short(keys: list[str]) -> str:
    return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")

