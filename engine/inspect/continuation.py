"""A greedy continuation with heads knocked out: the text once through the blocks, then one token at a time with
each layer's keys and values kept, in float32 as `run_with_cache` computes (a dozen tokens cost about one pass).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.inspect.cache import Head, check_heads, check_token_ids, run_with_cache, unembedding
from engine.inspect.weights import Float32Linear, rms_norm, rows
from engine.model.attention import window_mask
from engine.model.tinyslm import TinySLM, apply_rope

Past = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: the keys and values so far, (H_kv, T, D) each


def greedy(
    model: TinySLM,
    token_ids: Sequence[int],
    ablate: Sequence[Head] = (),
    n: int = 12,
    stop: int | None = None,
) -> list[int]:
    """The next n token ids after token_ids, each the most likely, with the heads in ablate knocked out; ends
    early at `stop` (not included). When the text would outgrow the context, each step reruns the last
    context_length tokens instead (their positions move), as the model would see them."""
    cfg = model.config
    ids, ablated = check_token_ids(cfg, token_ids), check_heads(cfg, ablate)
    if len(ids) + n - 1 > cfg.context_length:
        return slid(model, ids, ablated, n, stop)
    keep = torch.ones(cfg.n_layer, cfg.n_head)
    for layer, head in ablated:
        keep[layer, head] = 0.0
    linears: dict[nn.Module, Float32Linear] = {}  # each weight read as float32 once, not at every token
    unembed, past, out, new = unembedding(model), [], [], ids
    for _ in range(n):
        x = forward(model, new, len(ids) + len(out) - len(new), past, keep, linears)
        nxt = int(unembed(x[-1:])[0].argmax())
        if nxt == stop:
            break
        out.append(nxt)
        new = [nxt]
    return out


def slid(model: TinySLM, ids: list[int], ablated: list[Head], n: int, stop: int | None) -> list[int]:
    """greedy's steps over the last context_length tokens each time (one run_with_cache a token)."""
    out: list[int] = []
    for _ in range(n):
        window = (ids + out)[-model.config.context_length :]
        nxt = int(run_with_cache(model, window, ablate=ablated, keep_logits=False).logits_at(-1).argmax())
        if nxt == stop:
            break
        out.append(nxt)
    return out


def forward(
    model: TinySLM, ids: list[int], start: int, past: Past, keep: torch.Tensor, linears
) -> torch.Tensor:
    """The last block's stream (T, C) for ids at positions start.., attending also to the keys and values in
    past (extended in place); keep (L, H): 0 for a knocked-out head."""
    cfg, device = model.config, model.norm.weight.device
    T, H, H_kv, D = len(ids), cfg.n_head, cfg.kv_heads, cfg.head_dim

    def linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if module not in linears:
            linears[module] = Float32Linear(module)
        return linears[module](x)

    pos = torch.arange(start, start + T, device=device)
    allowed = window_mask(pos, torch.arange(start + T, device=device), cfg.sliding_window)  # (T, start + T)
    cos, sin = model.rope_cos[start : start + T], model.rope_sin[start : start + T]
    with torch.no_grad():
        x = rows(model.tok_embeddings, torch.tensor(ids, device=device))  # (T, C)
        for i, block in enumerate(model.layers):
            q, k, v = linear(block.attn.wqkv, rms_norm(block.attn_norm, x)).split(
                [H * D, H_kv * D, H_kv * D], -1
            )
            q = apply_rope(q.view(1, T, H, D), cos, sin)[0].transpose(0, 1) / math.sqrt(D)  # (H, T, D)
            k = apply_rope(k.view(1, T, H_kv, D), cos, sin)[0].transpose(0, 1)  # (H_kv, T, D)
            v = v.view(T, H_kv, D).transpose(0, 1)
            if i < len(past):
                k, v = torch.cat([past[i][0], k], dim=1), torch.cat([past[i][1], v], dim=1)
                past[i] = (k, v)
            else:
                past.append((k, v))
            group = H // H_kv
            scores = (q @ k.repeat_interleave(group, dim=0).transpose(1, 2)).masked_fill_(
                ~allowed, float("-inf")
            )
            z = scores.softmax(dim=-1) @ v.repeat_interleave(group, dim=0)  # (H, T, D)
            z = z * keep[i].to(device)[:, None, None]  # the knock-outs
            x = x + linear(block.attn.wo, z.transpose(0, 1).reshape(T, H * D))
            gate, up = linear(block.mlp.w13, rms_norm(block.mlp_norm, x)).chunk(2, dim=-1)
            x = x + linear(block.mlp.w2, F.silu(gate) * up)
    return x
