"""Helium's native decode runtime (engine/model/csrc/native_decode.c): a whole decode step of a TinySLM in one C call.

`native_decoder(model)` lays the weights out once for the kernels (int8 scales in float32 with each row's sum, norms in
float32, the RoPE tables; int4's Q4_0 blocks are read in place) and returns a `NativeDecoder`, whose `step` runs every
layer, the final norm and the head for a batch of rows on the runtime's own thread pool and returns the logits; or None,
with `native_status` saying why (not a CPU model, HELIUM_NATIVE_DECODE=off or HELIUM_CPU_KERNELS=torch, no C compiler, a
module it does not know). The library is the one
engine/model/kernel_build.py builds and checks; CPUs without AVX-512 or VNNI run its portable C path.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from engine.model.cpu_kernels import KERNEL_ENV, VnniLinear, kernel_choice, load_kernels
from engine.model.quant4 import BLOCK, Int4Embedding, Int4Linear
from engine.model.tinyslm import TinySLM

NATIVE_ENV = "HELIUM_NATIVE_DECODE"  # auto (default), scalar (the portable C path only) or off (the torch path)
NATIVE_CHOICES = ("auto", "scalar", "off")
_F32, _BF16, _INT8, _INT8W, _Q4 = 0, 1, 2, 3, 4  # the weights' kinds in native_decode.c (_INT8W: weight-only int8)
_P, _I = ctypes.c_void_p, ctypes.c_int


class _Mat(ctypes.Structure):
    _fields_ = [("w", _P), ("scale", _P), ("wsum", _P), ("kind", _I), ("N", _I), ("K", _I)]


class _Layer(ctypes.Structure):
    _fields_ = [("attn_norm", _P), ("mlp_norm", _P), ("wqkv", _Mat), ("wo", _Mat), ("w13", _Mat), ("w2", _Mat),
                ("k_cache", _P), ("v_cache", _P)]  # fmt: skip


class _Model(ctypes.Structure):
    _fields_ = [
        *((name, _I) for name in ("n_layer", "d_model", "n_head", "n_kv_head", "head_dim", "hidden", "vocab",
                                  "slots", "max_pos", "bf16_acts", "cache_bf16", "scalar")),
        ("eps", ctypes.c_float), ("embed", _Mat), ("head", _Mat), ("norm", _P), ("rope_cos", _P), ("rope_sin", _P),
        ("layers", ctypes.POINTER(_Layer)),
    ]  # fmt: skip


class NotNative(ValueError):
    """Why a model cannot run on the native runtime: one line."""


def native_choice() -> str:
    """HELIUM_NATIVE_DECODE, checked (ValueError names the choices)."""
    value = os.environ.get(NATIVE_ENV, "auto").strip().lower() or "auto"
    if value not in NATIVE_CHOICES:
        raise ValueError(f"{NATIVE_ENV}={value!r} is not one of {', '.join(NATIVE_CHOICES)}")
    return value


@dataclass(frozen=True)
class _Library:
    lib: ctypes.CDLL | None
    why_not: str = ""


def _library() -> _Library:
    """The kernels' library with the runtime's entry points typed, or why it cannot be had."""
    if kernel_choice() == "torch":
        return _Library(None, f"{KERNEL_ENV}=torch")
    kernels = load_kernels("auto")
    lib = kernels.lib
    if lib is None:
        return _Library(None, kernels.why_not)
    sizes = (ctypes.c_int * 3)()
    lib.helium_native_sizes(sizes)
    if tuple(sizes) != (ctypes.sizeof(_Mat), ctypes.sizeof(_Layer), ctypes.sizeof(_Model)):
        return _Library(None, "the native runtime's structs do not match this Python module")
    lib.helium_native_scratch_bytes.restype = ctypes.c_size_t
    lib.helium_native_scratch_bytes.argtypes = [_P, _I, _I]
    lib.helium_native_step.restype = _I
    lib.helium_native_step.argtypes = [_P, _P, _I, _P, _P, _P, _I]
    return _Library(lib)


def native_status(model: nn.Module) -> str:
    """'' when model's decode steps can run natively, else why not (one line). ValueError for a bad
    HELIUM_NATIVE_DECODE or HELIUM_CPU_KERNELS."""
    if native_choice() == "off":
        return f"{NATIVE_ENV}=off"
    if not isinstance(model, TinySLM):
        return f"a {type(model).__name__}, not a TinySLM"
    device = model.norm.weight.device
    if device.type != "cpu":
        return f"the model runs on {device}"
    try:
        _weights(model)
    except NotNative as exc:
        return str(exc)
    return _library().why_not


def native_decoder(model: nn.Module) -> NativeDecoder | None:
    """The native runtime for model's decode steps, or None where it cannot run (native_status says why)."""
    if native_status(model):
        return None
    return NativeDecoder(model, _library().lib, scalar=native_choice() == "scalar")  # type: ignore[arg-type]


class NativeDecoder:
    """A TinySLM's decode steps in one C call each: `step(tokens (B, 1), positions)` -> logits (B, V), the KV cache
    written; every row at one position or each at its own (a server's rows, which joined at different times).

    It reads the model's weights and KV cache in place (the cache `setup_cache` made; a new one is picked up at the
    next step), so a prefill on the torch path hands its cache over as it is. Inference only.
    """

    def __init__(self, model: TinySLM, lib: ctypes.CDLL, scalar: bool = False) -> None:
        self.model, self.lib, self.scalar = model, lib, scalar
        self.dtype = model.norm.weight.dtype  # the activations' (and the KV cache's, and the logits') dtype
        cfg, keep = model.config, []
        mats = _weights(model)
        self._layers = (_Layer * cfg.n_layer)()
        for layer, c_layer, (qkv, wo, w13, w2) in zip(model.layers, self._layers, mats["layers"], strict=True):
            c_layer.attn_norm = _floats(layer.attn_norm.weight, keep)
            c_layer.mlp_norm = _floats(layer.mlp_norm.weight, keep)
            c_layer.wqkv, c_layer.wo, c_layer.w13, c_layer.w2 = (_mat(m, keep) for m in (qkv, wo, w13, w2))
        c = self._c = _Model(
            n_layer=cfg.n_layer, d_model=cfg.d_model, n_head=cfg.n_head, n_kv_head=cfg.kv_heads,
            head_dim=cfg.head_dim, hidden=cfg.hidden_dim, vocab=cfg.vocab_size, max_pos=model.rope_cos.size(0),
            bf16_acts=int(self.dtype == torch.bfloat16), cache_bf16=int(self.dtype == torch.bfloat16),
            scalar=int(scalar), eps=cfg.norm_eps, embed=_mat(model.tok_embeddings, keep),
            head=_mat(model.output, keep), norm=_floats(model.norm.weight, keep),
            rope_cos=_floats(model.rope_cos, keep), rope_sin=_floats(model.rope_sin, keep), layers=self._layers,
        )  # fmt: skip
        self._keep = keep  # the tensors C reads
        self._cache = None  # the KV cache bound into the layers
        self._batch = 0
        self._scratch: dict[tuple[int, int], torch.Tensor] = {}
        self._address = ctypes.addressof(c)

    def describe(self) -> str:
        """What runs, for benchmarks: 'native (int8 vnni512, attention avx2)', 'native (int4 q4_0 x q8 vnni512, ...)',
        or the portable path."""
        if self.scalar:
            return "native (portable C)"
        kinds = {self._c.head.kind, *(m.kind for layer in self._layers for m in (layer.wqkv, layer.w2))}
        k = load_kernels("auto")
        names = {_INT8: f"int8 {k.int8}", _INT8W: "int8 weights", _BF16: f"bf16 {k.bf16_name}", _F32: "float32",
                 _Q4: "int4 q4_0 x q8 " + (k.int8 if k.int8 in ("vnni512", "vnni256") else "portable C")}
        vector = "attention avx2" if k.attention else "attention portable C"
        return f"native ({', '.join(names[kind] for kind in sorted(kinds))}, {vector})"

    def held(self) -> list[torch.Tensor]:
        """The tensors C reads (the weights as laid out for it; some are the model's own), for memory accounting."""
        return list(self._keep)

    def threads(self) -> int:
        """The threads a step runs on: as many as torch's intra-op threads (`--threads`), in the runtime's own pool
        (torch's sleeps meanwhile)."""
        return torch.get_num_threads()

    def step(self, tokens: torch.Tensor, pos: int | torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """Logits (B, V) in the model's dtype for tokens (B, 1) at position pos: one int for every row, or one per
        row (B,) (or (B, 1)), each row attending to its own cache slots 0..its position. Their keys and values go
        into the first B rows of the KV cache (slot pos % slots); the cache may hold more rows."""
        cache = self.model.layers[0].attn.cache
        if cache is None or cache is not self._cache:
            self._bind()
        ids = _int64(tokens)
        batch = ids.numel()
        if batch > self._batch:
            raise ValueError(f"{batch} rows for a KV cache of {self._batch}")
        if isinstance(pos, int):
            positions, last, first = torch.full((batch,), pos, dtype=torch.int64), pos, pos
        else:
            positions = _int64(pos)
            if positions.numel() != batch:
                raise ValueError(f"{positions.numel()} positions for {batch} rows")
            first, last = (int(x) for x in positions.aminmax())
        if last >= self._c.slots and not cache.ring:
            raise ValueError(f"position {last} is past the KV cache's {self._c.slots} slots")
        threads = threads or self.threads()
        scratch = self._scratch.get((batch, threads))
        if scratch is None:
            size = self.lib.helium_native_scratch_bytes(self._address, batch, threads)
            scratch = self._scratch[batch, threads] = torch.empty(size, dtype=torch.uint8)
        logits = torch.empty(batch, self._c.vocab, dtype=torch.float32)
        status = self.lib.helium_native_step(
            self._address, ids.data_ptr(), batch, positions.data_ptr(), logits.data_ptr(), scratch.data_ptr(), threads
        )
        if status != 0:
            where = last if first >= 0 else first
            why = "a token outside the vocabulary" if status == -3 else f"position {where} outside the model's context"
            raise ValueError(f"native decode step: {why}")
        return logits if self.dtype == torch.float32 else logits.to(self.dtype)

    def _bind(self) -> None:
        """Point the layers at the model's current KV cache (checked: contiguous, the activations' dtype)."""
        cfg, first = self.model.config, self.model.layers[0].attn.cache
        if first is None:
            raise ValueError("no KV cache: call setup_cache first")
        shape = (first.k.size(0), cfg.kv_heads, first.slots, cfg.head_dim)
        for layer, c_layer in zip(self.model.layers, self._layers, strict=True):
            cache = layer.attn.cache
            for t in (cache.k, cache.v):
                if tuple(t.shape) != shape or t.dtype != self.dtype or not t.is_contiguous() or not t.is_cpu:
                    raise ValueError(f"a KV cache of {tuple(t.shape)} {t.dtype}, not {shape} {self.dtype}")
            c_layer.k_cache, c_layer.v_cache = cache.k.data_ptr(), cache.v.data_ptr()
        self._c.slots, self._batch, self._cache = first.slots, shape[0], first
        self._scratch.clear()


def _int64(t: torch.Tensor) -> torch.Tensor:
    """t flattened as contiguous int64 on the CPU, as C reads it (a copy only where it must)."""
    flat = t.reshape(-1)
    return flat if flat.dtype == torch.int64 and flat.is_contiguous() else flat.to(torch.int64).contiguous()


def _weights(model: TinySLM) -> dict:
    """The modules whose weights C reads, checked (NotNative says which one it cannot read)."""
    cfg = model.config
    qkv = (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim
    layers = []
    for i, layer in enumerate(model.layers):
        mods = (layer.attn.wqkv, layer.attn.wo, layer.mlp.w13, layer.mlp.w2)
        shapes = ((qkv, cfg.d_model), (cfg.d_model, cfg.d_model), (2 * cfg.hidden_dim, cfg.d_model),
                  (cfg.d_model, cfg.hidden_dim))  # fmt: skip
        for name, mod, shape in zip(("wqkv", "wo", "w13", "w2"), mods, shapes, strict=True):
            _check_weight(f"layers.{i}.{name}", mod, shape)
        layers.append(mods)
    _check_weight("tok_embeddings", model.tok_embeddings, (cfg.vocab_size, cfg.d_model))
    _check_weight("output", model.output, (cfg.vocab_size, cfg.d_model))
    if cfg.head_dim % 2:
        raise NotNative(f"head dim {cfg.head_dim} is odd")
    return {"layers": layers}


def _check_weight(name: str, module: nn.Module, shape: tuple[int, int]) -> None:
    if isinstance(module, Int4Linear | Int4Embedding):
        _check_q4(name, module, shape)
        return
    weight = getattr(module, "weight", None)
    if getattr(module, "bias", None) is not None:
        raise NotNative(f"{name} has a bias")
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != shape:
        raise NotNative(f"{name} is a {type(module).__name__} the native runtime cannot read")
    scale = getattr(module, "weight_scale", None)
    kinds = (torch.int8,) if scale is not None else (torch.float32, torch.bfloat16)
    if weight.dtype not in kinds or not weight.is_cpu or (scale is not None and scale.shape != shape[:1]):
        raise NotNative(f"{name} holds {weight.dtype} weights the native runtime cannot read")


def _check_q4(name: str, module: Int4Linear | Int4Embedding, shape: tuple[int, int]) -> None:
    """Q4_0 blocks as quant4 stores them: packed uint8 (N, K/2) and float16 bits (N, K/32), on the CPU."""
    n, k = shape
    weight, scale = module.weight, module.weight_scale
    if tuple(weight.shape) != (n, k // 2) or tuple(scale.shape) != (n, k // BLOCK) or k % BLOCK:
        raise NotNative(f"{name} is an int4 {type(module).__name__} of another shape")
    if weight.dtype != torch.uint8 or scale.dtype != torch.int16 or not (weight.is_cpu and scale.is_cpu):
        raise NotNative(f"{name} holds {weight.dtype} int4 weights the native runtime cannot read")


def _mat(module: nn.Module, keep: list[torch.Tensor]) -> _Mat:
    """A weight as C reads it: in place where it can, int8 scales in float32. Int8 computes as the module does: a
    VnniLinear quantizes its activations to int8 too (C needs each row's sum), an Int8Linear only its weights. Int4:
    the packed bytes and float16 scale bits as quant4 stores them (C quantizes the activations per block of 32)."""
    weight = module.weight.detach().contiguous()
    keep.append(weight)
    n, k = weight.shape
    if isinstance(module, Int4Linear | Int4Embedding):
        bits = module.weight_scale.detach().contiguous()
        keep.append(bits)
        return _Mat(weight.data_ptr(), bits.data_ptr(), None, _Q4, n, 2 * k)
    scale = getattr(module, "weight_scale", None)
    if scale is None:
        kind = _BF16 if weight.dtype == torch.bfloat16 else _F32
        return _Mat(weight.data_ptr(), None, None, kind, n, k)
    scale32 = scale.detach().float().contiguous()
    keep.append(scale32)
    if not isinstance(module, VnniLinear):
        return _Mat(weight.data_ptr(), scale32.data_ptr(), None, _INT8W, n, k)
    row_sum = weight.sum(dim=1, dtype=torch.int32)
    keep.append(row_sum)
    return _Mat(weight.data_ptr(), scale32.data_ptr(), row_sum.data_ptr(), _INT8, n, k)


def _floats(t: torch.Tensor, keep: list[torch.Tensor]) -> int:
    f = t.detach().float().contiguous()
    keep.append(f)
    return f.data_ptr()
