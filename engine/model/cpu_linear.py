"""CPU bf16 inference: linears with oneDNN-prepacked weights (the layout Inductor's freezing uses).

Plain `F.linear` in bf16 reaches about a third of this CPU's memory bandwidth for batch-1 decoding; the
prepacked oneDNN kernel (AVX512-BF16 / AMX) is about 1.5x faster. Inference only: no gradients flow.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.generation.runtime import cpu_has_native_bf16


def packed_linear_available() -> bool:
    """True where oneDNN's prepacked linear can run bf16 on this CPU."""
    return torch.backends.mkldnn.is_available() and cpu_has_native_bf16()


class PackedLinear(nn.Linear):
    """nn.Linear that keeps `weight` (same state dict, ties preserved) plus a prepacked copy for forward."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> PackedLinear:
        """Wrap an existing bias-free bf16 linear, sharing its weight parameter."""
        return cls.sharing(linear, torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1))

    @classmethod
    def sharing(cls, linear: nn.Linear, packed: torch.Tensor | None) -> PackedLinear:
        """A cls holding linear's weight parameter itself, with packed as its prepacked copy (None: F.linear)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.weight = linear.weight
        new.bias = None
        new.packed = packed
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None or (torch.is_grad_enabled() and self.weight.requires_grad):
            return F.linear(x, self.weight)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")


def pack_linears(model: nn.Module) -> int:
    """Swap every bias-free bf16 CPU nn.Linear in model for a PackedLinear; returns how many."""
    if not packed_linear_available():
        return 0
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            w = child.weight if isinstance(child, nn.Linear) else None
            if (
                type(child) is nn.Linear
                and child.bias is None
                and w.dtype == torch.bfloat16
                and w.device.type == "cpu"
            ):
                setattr(parent, name, PackedLinear.from_linear(child))
                swapped += 1
    return swapped
