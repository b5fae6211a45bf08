"""Direct logit attribution: how much each part of the model, and each earlier token, pushed one logit.

The stream at the last layer is the sum of the embeddings, every head's output and every MLP's output; the
final norm's scale at that position is frozen (as TransformerLens' `logit_attrs` does), which makes the logit a
sum over those parts: each part's dot product with the token's unembedding row times the norm's weight and scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.inspect.cache import ActivationCache
from engine.inspect.weights import dense, rows
from engine.model.tinyslm import TinySLM


@dataclass
class Attribution:
    """Each part's push on one logit. The identity (tested): embed + heads.sum() + mlps.sum() == total == logit,
    since Helium's final RMSNorm and unembedding have no bias: nothing is left out."""

    embed: float  # the token embedding's part
    heads: torch.Tensor  # (L, H): each head's part (0 for a knocked-out head)
    mlps: torch.Tensor  # (L,): each MLP's part
    total: float  # the sum of all the parts
    logit: float  # the model's logit for the token there, for comparison


def logit_direction(model: TinySLM, cache: ActivationCache, position: int, token_id: int) -> torch.Tensor:
    """(C,): the direction in the stream whose dot product is token_id's logit at position (frozen norm scale)."""
    if not 0 <= position < len(cache.token_ids) or not 0 <= token_id < model.config.vocab_size:
        raise IndexError(f"no token {token_id} at position {position} ({len(cache.token_ids)} positions)")
    with torch.no_grad():
        row = rows(model.output, torch.tensor([token_id], device=model.norm.weight.device))[0]
        return (row * model.norm.weight.detach().float()).cpu() * cache.final_scale[position]


def direct_logit_attribution(
    model: TinySLM, cache: ActivationCache, position: int, token_id: int
) -> Attribution:
    """How much the embeddings, each head and each MLP wrote toward token_id's logit at position."""
    d = logit_direction(model, cache, position, token_id)
    embed = float(cache.resid[0, position] @ d)
    heads = cache.head_out[:, :, position] @ d  # (L, H)
    mlps = cache.mlp_out[:, position] @ d  # (L,)
    total = embed + float(heads.sum()) + float(mlps.sum())
    return Attribution(embed, heads, mlps, total, float(cache.logits_at(position)[token_id]))


def token_attribution_by_head(
    model: TinySLM, cache: ActivationCache, position: int, token_id: int
) -> torch.Tensor:
    """(L, H, position + 1): how much each head, through what it read from each earlier token (and the token
    itself), pushed token_id's logit at position. Summed over tokens it is that head's part in the DLA."""
    d = logit_direction(model, cache, position, token_id)
    cfg, S = model.config, position + 1
    keep = torch.ones(cfg.n_layer, cfg.n_head)
    for layer, head in cache.ablated:
        keep[layer, head] = 0.0
    out = []
    with torch.no_grad():
        for layer, block in enumerate(model.layers):
            wo = dense(block.attn.wo).cpu().view(cfg.d_model, cfg.n_head, cfg.head_dim)
            toward = torch.einsum("chd,c->hd", wo, d)  # (H, D): the value direction that raises the logit
            v = cache.values[layer, :, :S].repeat_interleave(cfg.n_head // cfg.kv_heads, dim=0)  # (H, S, D)
            pushes = torch.einsum("hsd,hd->hs", v, toward)  # (H, S): each token's value, read by each head
            out.append(cache.attention[layer, :, position, :S] * pushes * keep[layer][:, None])
    return torch.stack(out)


def token_attribution(model: TinySLM, cache: ActivationCache, position: int, token_id: int) -> torch.Tensor:
    """(position + 1,): how much each earlier token (and the token itself) mattered for token_id's logit at
    position: the attention-weighted value of every head summed over layers, along the DLA direction.
    It sums to the heads' total in `direct_logit_attribution` (the embeddings and MLPs are not counted)."""
    return token_attribution_by_head(model, cache, position, token_id).sum(dim=(0, 1))
