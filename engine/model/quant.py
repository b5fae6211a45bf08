"""Weight-only int8: linears and the token embedding store int8 weights with one scale per output row.

Activations stay in the model's dtype. On the CPU with bf16 activations the matmul is PyTorch's own
int8 kernel (`aten._weight_int8pack_mm`, dequantizing on the fly); elsewhere the weight is cast and scaled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

QUANTIZE_CHOICES = ("none", "int8", "int4")  # what --quantize accepts (int4: engine/model/quant4.py)
SCALE_SUFFIX = "_scale"  # a quantized `X.weight` comes with `X.weight_scale` in state dicts and bundles
PACK_MM_MAX_ROWS = 16  # more rows (a prefill, an evaluation): casting the weight for one matmul is faster


def check_quantize(value: str) -> str:
    """value if it names a quantization, else ValueError."""
    if value not in QUANTIZE_CHOICES:
        raise ValueError(f"unknown quantization {value!r} (use {' or '.join(QUANTIZE_CHOICES)})")
    return value


def quantize_option(value: str) -> str | None:
    """A --quantize value: None for "auto" (as the bundle stores its weights), else "none", "int8" or "int4"."""
    if value == "auto":
        return None
    if value not in QUANTIZE_CHOICES:
        raise ValueError(f"unknown --quantize {value!r} (use auto, none, int8 or int4)")
    return value


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight (N, K), float32 scale (N,)) with weight ≈ q * scale[:, None], rounding to nearest.

    Each scale is its row's largest magnitude / 127, rounded up to a bf16 value, so running in bf16 uses
    the very same scales (no second rounding); an all-zero row gets scale 1.
    """
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    scale = _round_up_to_bf16(scale)
    scale = torch.where(w.abs().amax(dim=1) > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def _round_up_to_bf16(x: torch.Tensor) -> torch.Tensor:
    """The smallest bf16-representable float32 ≥ x (x positive and finite)."""
    down = x.to(torch.bfloat16).float()
    up = torch.nextafter(x.to(torch.bfloat16), torch.tensor(float("inf"), dtype=torch.bfloat16)).float()
    return torch.where(down >= x, down, up)


class Int8Linear(nn.Module):
    """A bias-free linear with int8 `weight` (N, K) and `weight_scale` (N,) in the activations' dtype."""

    def __init__(self, in_features: int, out_features: int, device=None, dtype=torch.float32) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=dtype, device=device))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize a bias-free nn.Linear (its scales take the linear's dtype)."""
        new = cls(linear.in_features, linear.out_features, linear.weight.device, linear.weight.dtype)
        q, scale = quantize_rows(linear.weight)
        new.weight, new.weight_scale = q, scale.to(linear.weight.dtype)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        # PyTorch 2.13's kernel crashes (SIGSEGV) on several rows when in_features is not a multiple of 16
        packed_ok = rows == 1 or self.in_features % 16 == 0
        if x.device.type == "cpu" and x.dtype == torch.bfloat16 and rows < PACK_MM_MAX_ROWS and packed_ok:
            out = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features), self.weight, self.weight_scale)
            return out.reshape(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight.to(x.dtype)) * self.weight_scale  # Inductor fuses this on GPUs

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Embedding(nn.Module):
    """A token embedding with int8 rows and one scale per row (it can share both with a tied Int8Linear)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=torch.float32) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        shape = (num_embeddings, embedding_dim)
        self.register_buffer("weight", torch.zeros(shape, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, dtype=dtype, device=device))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.weight).to(self.weight_scale.dtype) * self.weight_scale[idx].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def swap_modules(model: nn.Module, make: Callable[[nn.Module], nn.Module | None]) -> None:
    """Replace each module of a TinySLM by make(module), in place, where it returns one; a head tied to the token
    embedding is left to the caller (it must share the embedding's new weights)."""
    tied = model.output.weight is model.tok_embeddings.weight
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not (tied and child is model.output):
                new = make(child)
                if new is not None:
                    setattr(parent, name, new)


def swap_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module | None]) -> None:
    """swap_modules for the bias-free nn.Linear layers only (what int8 and int4 quantize)."""
    swap_modules(model, lambda m: make(m) if type(m) is nn.Linear and m.bias is None else None)


def quantize_model(model: nn.Module, empty: bool = False) -> nn.Module:
    """Swap a TinySLM's linears and token embedding for int8 ones, in place; returns model.

    A tied output head shares the embedding's int8 rows and scales. empty=True only builds the int8
    layout (zeros), for a state dict that already holds int8 weights.
    """
    if is_quantized(model):
        return model
    tied = model.output.weight is model.tok_embeddings.weight

    def int8(child: nn.Linear) -> Int8Linear:
        if not empty:
            return Int8Linear.from_linear(child)
        return Int8Linear(child.in_features, child.out_features, child.weight.device, child.weight.dtype)

    swap_linears(model, int8)
    emb = model.tok_embeddings
    new_emb = Int8Embedding(emb.num_embeddings, emb.embedding_dim, emb.weight.device, emb.weight.dtype)
    if not empty:
        q, scale = quantize_rows(emb.weight)
        new_emb.weight, new_emb.weight_scale = q, scale.to(emb.weight.dtype)
    model.tok_embeddings = new_emb
    if tied:
        head = Int8Linear(emb.embedding_dim, emb.num_embeddings, emb.weight.device, emb.weight.dtype)
        head.weight, head.weight_scale = new_emb.weight, new_emb.weight_scale
        model.output = head
    return model


def is_quantized(model: nn.Module) -> bool:
    """True when model holds int8 weights (after quantize_model, or loaded from an int8 bundle)."""
    return isinstance(getattr(model, "tok_embeddings", None), Int8Embedding)


def is_quantized_state(state: dict[str, torch.Tensor]) -> bool:
    """True when a state dict holds int8 weights with their scales (an int8 bundle's weights)."""
    return any(k.endswith(".weight" + SCALE_SUFFIX) for k in state)


def quantized_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """An int8 bundle's tensors from a float bundle's (`engine.model.tinyslm.state_shapes`): each matrix gets its scales."""
    out = dict(shapes)
    for key, shape in shapes.items():
        if len(shape) == 2:
            out[key + SCALE_SUFFIX] = (shape[0],)
    return out


def dequantize_model(model: nn.Module) -> nn.Module:
    """The reverse of quantize_model, in place: float nn.Linear / nn.Embedding holding q * scale exactly."""
    if not is_quantized(model):
        return model
    return restore_floats(model, Int8Linear, Int8Embedding, _dequantized_weight)


def restore_floats(
    model: nn.Module, linear_type: type, embedding_type: type, weight_of: Callable[[nn.Module], nn.Parameter]
) -> nn.Module:  # fmt: skip
    """Float nn.Linear / nn.Embedding in place of a TinySLM's linear_type / embedding_type modules, each holding
    weight_of(module), in place (the int8 and int4 dequantizers' one walk); a tied head shares the new embedding's
    weight. Returns model."""
    tied = model.output.weight is model.tok_embeddings.weight

    def float_linear(child: nn.Module) -> nn.Linear | None:
        if not isinstance(child, linear_type):
            return None
        new = nn.Linear(child.in_features, child.out_features, bias=False, device=child.weight.device)
        new.weight = weight_of(child)
        return new

    swap_modules(model, float_linear)
    emb = model.tok_embeddings
    if isinstance(emb, embedding_type):
        weight = weight_of(emb)
        model.tok_embeddings = nn.Embedding(emb.num_embeddings, emb.embedding_dim, _weight=weight)
        if tied:
            model.output = nn.Linear(emb.embedding_dim, emb.num_embeddings, bias=False, device=weight.device)
            model.output.weight = model.tok_embeddings.weight
    return model


def _dequantized_weight(module: Int8Linear | Int8Embedding) -> nn.Parameter:
    """q * scale as a float parameter in the scales' dtype, on the weights' device."""
    scale = module.weight_scale
    return nn.Parameter(module.weight.to(scale.dtype) * scale[:, None])
