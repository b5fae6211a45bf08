"""Weight-only int4 in llama.cpp's Q4_0 layout: blocks of 32 weights along each row share one float16 scale d,
each weight is a 4-bit q in 0..15 standing for (q - 8) * d. The same arithmetic as gguf's Q4_0 quantizer, so a
GGUF export at q4_0 holds exactly the weights Helium's int4 runs; the matmul dequantizes on the fly (for now).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.model.quant import SCALE_SUFFIX, restore_floats, swap_linears

BLOCK = 32  # weights per scale, as Q4_0


def quantize_q4_0(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed uint8 (N, K/2), float16 scales as int16 bits (N, K/32)) for weight (N, K), K a multiple of 32.

    As gguf.quants.Q4_0: d is the block's value of largest magnitude / -8 (computed in float32, stored as
    float16), q = trunc(w / d + 8.5) clipped to 0..15; a block's first 16 weights are the low nibbles of its
    16 bytes, the last 16 the high ones. The scale is kept as bits so that `.to(dtype)` never rounds it.
    """
    n, k = weight.shape
    if k % BLOCK:
        raise ValueError(f"int4 needs rows of whole blocks of {BLOCK} (got {k})")
    w = weight.detach().float().reshape(n, k // BLOCK, BLOCK)
    biggest = torch.gather(w, -1, w.abs().argmax(dim=-1, keepdim=True))
    d = biggest / -8
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc(w * inv + 8.5).clamp(0, 15).to(torch.uint8)
    packed = q[..., : BLOCK // 2] | (q[..., BLOCK // 2 :] << 4)
    return packed.reshape(n, k // 2).contiguous(), d.squeeze(-1).to(torch.float16).view(torch.int16)


def dequantize_q4_0(packed: torch.Tensor, scale_bits: torch.Tensor) -> torch.Tensor:
    """The float32 weights (N, K) that quantize_q4_0's output stands for."""
    n = packed.shape[0]
    blocks = packed.reshape(n, -1, BLOCK // 2)
    q = torch.cat([blocks & 0xF, blocks >> 4], dim=-1).float() - 8
    return (q * scale_bits.view(torch.float16).float()[..., None]).reshape(n, -1)


def q8_0_activations(x: torch.Tensor) -> torch.Tensor:
    """x as the native runtime's int4 matmul multiplies it (engine/model/csrc/q4_mm.c): each block of 32 along the
    last dim rounded to int8 steps of d = max |x| / 127 (half to even, as x * (1 / d) in float32), in float32."""
    blocks = x.float().reshape(*x.shape[:-1], -1, BLOCK)
    d = blocks.abs().amax(dim=-1, keepdim=True) / 127
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    return (torch.round(blocks * inv) * d).reshape(x.shape)


class Int4Linear(nn.Module):
    """A bias-free linear with Q4_0 weights: `weight` packed uint8 (N, K/2), `weight_scale` float16 bits."""

    def __init__(self, in_features: int, out_features: int, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device)
        )
        scales = torch.zeros(out_features, in_features // BLOCK, dtype=torch.int16, device=device)
        self.register_buffer("weight_scale", scales)

    @classmethod
    def from_weight(cls, weight: torch.Tensor) -> Int4Linear:
        """Quantize a float weight (N, K)."""
        new = cls(weight.shape[1], weight.shape[0], weight.device)
        new.weight, new.weight_scale = quantize_q4_0(weight)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, dequantize_q4_0(self.weight, self.weight_scale).to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 (Q4_0)"


class Int4Embedding(nn.Module):
    """A token embedding with Q4_0 rows (a tied Int4Linear head shares them); only looked-up rows are unpacked."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=torch.float32) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        packed = torch.zeros(num_embeddings, embedding_dim // 2, dtype=torch.uint8, device=device)
        scales = torch.zeros(num_embeddings, embedding_dim // BLOCK, dtype=torch.int16, device=device)
        self.register_buffer("weight", packed)
        self.register_buffer("weight_scale", scales)
        self.register_buffer(
            "_probe", torch.zeros((), dtype=dtype, device=device), persistent=False
        )  # model.to(dtype) moves it: the output's dtype (not saved: bundles hold weights only)

    @classmethod
    def from_weight(cls, weight: torch.Tensor) -> Int4Embedding:
        """Quantize a float embedding matrix (V, C); its rows come out in weight's dtype."""
        new = cls(weight.shape[0], weight.shape[1], weight.device, weight.dtype)
        new.weight, new.weight_scale = quantize_q4_0(weight)
        return new

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = dequantize_q4_0(self.weight[idx.reshape(-1)], self.weight_scale[idx.reshape(-1)])
        return rows.to(self._probe.dtype).reshape(*idx.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int4 (Q4_0)"


def quantize_model_int4(model: nn.Module, empty: bool = False) -> nn.Module:
    """Swap a TinySLM's float linears and token embedding for Q4_0 ones, in place (a tied head shares the
    embedding's blocks); a matrix whose rows are not whole blocks stays float. empty=True only builds the int4
    layout (zeros), for a state dict that already holds int4 weights (an int4 bundle's). Returns model."""
    if is_int4(model):
        return model
    tied = model.output.weight is model.tok_embeddings.weight

    def int4(child: nn.Linear) -> Int4Linear | None:
        if child.in_features % BLOCK:
            return None
        if empty:
            return Int4Linear(child.in_features, child.out_features, child.weight.device)
        return Int4Linear.from_weight(child.weight)

    swap_linears(model, int4)
    emb = model.tok_embeddings
    if emb.embedding_dim % BLOCK == 0:
        w = emb.weight
        if empty:
            model.tok_embeddings = Int4Embedding(emb.num_embeddings, emb.embedding_dim, w.device, w.dtype)
        else:
            model.tok_embeddings = Int4Embedding.from_weight(w)
        if tied:
            head = Int4Linear(emb.embedding_dim, emb.num_embeddings, emb.weight.device)
            head.weight, head.weight_scale = model.tok_embeddings.weight, model.tok_embeddings.weight_scale
            model.output = head
    return model


def dequantize_model_int4(model: nn.Module) -> nn.Module:
    """The reverse of quantize_model_int4, in place: float32 nn.Linear / nn.Embedding holding the blocks' values
    exactly (quantizing them again gives the same blocks). Returns model."""
    if not is_int4(model):
        return model
    return restore_floats(model, Int4Linear, Int4Embedding, lambda m: nn.Parameter(dequantize_q4_0(m.weight, m.weight_scale)))


def int4_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """An int4 bundle's tensors from a float bundle's (`engine.model.tinyslm.state_shapes`): each matrix of whole
    blocks becomes packed bytes (N, K/2) with float16 scale bits (N, K/32); the rest stays as it is."""
    out = dict(shapes)
    for key, shape in shapes.items():
        if len(shape) == 2 and shape[1] % BLOCK == 0:
            out[key] = (shape[0], shape[1] // 2)
            out[key + SCALE_SUFFIX] = (shape[0], shape[1] // BLOCK)
    return out


def is_int4_state(dtypes: dict[str, torch.dtype | str]) -> bool:
    """True when a state dict's (or safetensors header's) dtypes hold Q4_0 blocks: packed uint8 weights."""
    return any(dtype in (torch.uint8, "U8") for dtype in dtypes.values())


def is_int4(model: nn.Module) -> bool:
    """True when model holds Q4_0 weights (after quantize_model_int4)."""
    return any(isinstance(m, Int4Linear | Int4Embedding) for m in model.modules())
