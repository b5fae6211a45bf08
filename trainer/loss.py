"""The training objective as one module: the model's logits and their next-token cross-entropy, in one graph.

Compiling only the model leaves the float32 upcast and cross-entropy of the (B, T, vocab) logits, the largest
memory traffic of a small model's step, to separate eager kernels; compiled together, Inductor fuses them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class NextTokenLoss(nn.Module):
    """`loss(x, y)`: mean cross-entropy of model(x) against y, under bf16 autocast when dtype is bfloat16.

    Holds the model as a submodule, so DDP and torch.compile wrap this module and see the same parameters;
    checkpoints are saved from the bare model, never from this wrapper.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model  # the TinySLM being trained
        self.bf16 = dtype == torch.bfloat16  # autocast the forward to bf16 (else it runs in float32)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x)  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
