"""A model's weights read as float32, whatever module holds them: nn.Linear, oneDNN-packed, int8, int4, Helium's
kernels.

Every linear Helium runs keeps `weight` (N, K), the int8 ones `weight_scale` (N,) and the int4 ones packed Q4_0
blocks (uint8 (N, K/2), float16 scales): the inspection reads those as they are (int8 rows times their scales,
int4 blocks as the values they stand for), so any bundle runs without converting the model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.model.quant4 import dequantize_q4_0


def dense(module: nn.Module) -> torch.Tensor:
    """The float32 matrix (N, K) a linear or an embedding applies: int8 rows times their scales, else its weight."""
    weight = module.weight
    if weight.dtype == torch.int8:
        return weight.float() * module.weight_scale.float()[:, None]
    if weight.dtype == torch.uint8:  # int4: packed Q4_0 blocks
        return dequantize_q4_0(weight, module.weight_scale)
    return weight.detach().float()


def rows(module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Rows ids of a linear's or an embedding's float32 matrix (an embedding lookup, or unembedding directions)."""
    weight = module.weight
    if weight.dtype == torch.uint8:  # int4: only the picked rows' blocks are unpacked
        flat = ids.reshape(-1)
        return dequantize_q4_0(weight[flat], module.weight_scale[flat]).reshape(*ids.shape, -1)
    picked = F.embedding(ids, weight).float()
    if weight.dtype == torch.int8:
        picked = picked * module.weight_scale.float()[ids].unsqueeze(-1)
    return picked


class Float32Linear:
    """A linear's weight read as float32 once (int8: its int8 values and its scales), applied as `linear` does:
    for a matrix applied many times, such as the unembedding of each position the view reads."""

    def __init__(self, module: nn.Module) -> None:
        weight = module.weight
        # (N, K): the weight itself when it is float32 already; int4 blocks unpacked once
        int4 = weight.dtype == torch.uint8
        self.weight = dequantize_q4_0(weight, module.weight_scale) if int4 else weight.detach().float()
        self.scale = module.weight_scale.float() if weight.dtype == torch.int8 else None

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        y = torch.matmul(x, self.weight.T, out=out)
        return y if self.scale is None else y.mul_(self.scale)


def linear(module: nn.Module, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """module applied to float32 x in float32 (into out when given): x times its weight transposed (int8: the
    int8 values, then each output scaled, as Int8Linear computes it)."""
    return Float32Linear(module)(x, out)


def rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A TinySLM RMSNorm applied in float32 (the model computes its norms in float32 too)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight.detach().float()


def rms_scale(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The factor RMSNorm multiplies x by before its weight: 1 / sqrt(mean(x²) + eps), (..., 1)."""
    return torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
