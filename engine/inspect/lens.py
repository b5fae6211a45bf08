"""The logit lens: what each layer's residual stream would predict if the model stopped there.

The final norm, recomputed on each layer's stream, then the unembedding (TransformerLens'
`accumulated_resid(apply_ln=True)` followed by `W_U`); the last layer gives the model's own logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.inspect.cache import ActivationCache
from engine.inspect.weights import dense, linear, rms_norm
from engine.model.tinyslm import TinySLM


@dataclass
class LensResult:
    """The top tokens of every layer at every position; L + 1 layers, 0 the embeddings, L the model's output."""

    probs: torch.Tensor  # (L + 1, T, top): probabilities of the top tokens, descending
    ids: torch.Tensor  # (L + 1, T, top): their token ids
    model: TinySLM = field(repr=False)
    cache: ActivationCache = field(repr=False)

    def prob_of(self, layer: int, position: int, token_id: int) -> float:
        """The probability layer's lens gives token_id at position (the full distribution, computed now)."""
        return float(layer_logits(self.model, self.cache, layer, position).softmax(-1)[token_id])


def layer_logits(model: TinySLM, cache: ActivationCache, layer: int, position: int) -> torch.Tensor:
    """The lens' logits (vocab,) of one layer (0..L) at one position, float32 on the CPU."""
    if not 0 <= layer <= cache.n_layer or not 0 <= position < len(cache.token_ids):
        shape = f"layers 0..{cache.n_layer}, {len(cache.token_ids)} positions"
        raise IndexError(f"no layer {layer} at position {position} ({shape})")
    if layer == cache.n_layer:
        return cache.logits[position]
    device = model.norm.weight.device
    x = cache.resid[layer, position].to(device)
    with torch.no_grad():
        return linear(model.output, rms_norm(model.norm, x)).cpu()


def logit_lens(model: TinySLM, cache: ActivationCache, top: int = 5) -> LensResult:
    """The top `top` tokens and their probabilities for every layer 0..L and position of cache."""
    device = model.norm.weight.device
    probs, ids = [], []
    with torch.no_grad():
        unembed = dense(model.output).T  # (C, V) once, not per layer
        for layer in range(cache.n_layer + 1):
            if layer == cache.n_layer:
                logits = cache.logits.to(device)  # the model's own output, exactly
            else:
                logits = rms_norm(model.norm, cache.resid[layer].to(device)) @ unembed  # (T, V)
            best, best_ids = logits.softmax(dim=-1).topk(
                top, dim=-1
            )  # (one fused pass: faster than logsumexp)
            probs.append(best.cpu())
            ids.append(best_ids.cpu())
    return LensResult(torch.stack(probs), torch.stack(ids), model, cache)


def lens_at(
    model: TinySLM, cache: ActivationCache, position: int, top: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, ids), each (L + 1, top): the logit lens of every layer at one position only, L + 1 rows through the
    unembedding instead of (L + 1) × T (a view of one selected token need not wait for the whole lens)."""
    if not 0 <= position < len(cache.token_ids):
        raise IndexError(f"no position {position} ({len(cache.token_ids)} positions)")
    device = model.norm.weight.device
    with torch.no_grad():
        logits = linear(
            model.output, rms_norm(model.norm, cache.resid[:, position].to(device))
        ).cpu()  # (L + 1, V)
        logits[-1] = cache.logits[position]  # the model's own output, exactly
        probs, ids = logits.softmax(dim=-1).topk(top, dim=-1)
    return probs, ids
