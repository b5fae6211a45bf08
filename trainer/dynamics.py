"""What one optimizer step did to the weights, per layer group: update-to-weight ratios and weight norms.

Only on record steps (the log steps): a copy of the weights before `optimizer.step()`, the norms after, one sync.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def layer_group(name: str) -> str:
    """The group of a parameter name: embed, L{i}.attn, L{i}.mlp, norms (every RMSNorm) or head."""
    parts = name.split(".")
    owner = parts[-2] if len(parts) > 1 else parts[0]  # the module holding the parameter
    if "norm" in owner:
        return "norms"
    if parts[0] == "layers" and len(parts) > 3:
        return f"L{parts[1]}.{parts[2]}"
    if parts[0] == "tok_embeddings":
        return "embed"
    return "head"


class DynamicsProbe:
    """Per-group ||ΔW||/||W|| and ||W|| of a model's parameters around one optimizer step."""

    def __init__(self, model: nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # tied weights appear once
        self.params = [p for _, p in named]  # in named_parameters order
        self.groups = [layer_group(n) for n, _ in named]  # the group of each of `params`

    @torch.no_grad()
    def before(self) -> list[torch.Tensor]:
        """A copy of the weights, taken just before the optimizer step."""
        return [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def after(self, before: list[torch.Tensor]) -> tuple[dict[str, float], dict[str, float]]:
        """(update ratio, weight norm) per group, from the copy `before` and the weights now (one host sync).
        The copy is used up: it is overwritten with the update."""
        now = [p.detach() for p in self.params]
        b2 = torch.stack([n.float() for n in torch._foreach_norm(before)]) ** 2
        torch._foreach_sub_(before, now)  # -ΔW, in place: no second copy of the weights
        d2 = torch.stack([n.float() for n in torch._foreach_norm(before)]) ** 2
        n2 = torch.stack([n.float() for n in torch._foreach_norm(now)]) ** 2
        sums: dict[str, list[float]] = {}  # group -> [||ΔW||², ||W before||², ||W now||²]
        for group, *values in zip(self.groups, *torch.stack([d2, b2, n2]).cpu().tolist(), strict=True):
            acc = sums.setdefault(group, [0.0, 0.0, 0.0])
            for i, v in enumerate(values):
                acc[i] += v
        ratios = {g: (d / b) ** 0.5 for g, (d, b, _) in sums.items() if b > 0}
        norms = {g: n**0.5 for g, (_, _, n) in sums.items()}
        return _finite(ratios), _finite(norms)


def _finite(values: dict[str, float]) -> dict[str, float]:
    """Only the finite entries (an event never holds nan or inf), rounded to 6 significant digits."""
    return {k: float(f"{v:.6g}") for k, v in values.items() if v == v and abs(v) != float("inf")}
