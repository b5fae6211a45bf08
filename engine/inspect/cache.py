"""One forward pass that keeps what a look inside needs: attention patterns, the residual stream, each head's output.

`run_with_cache` runs a TinySLM's own modules in float32 (no KV cache), with attention computed explicitly so
the pattern is exact, and optionally knocks heads out; `ActivationCache` answers TransformerLens' hook names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.inspect.weights import Float32Linear, dense, linear, rms_norm, rms_scale, rows
from engine.model.attention import window_mask
from engine.model.config import ModelConfig
from engine.model.tinyslm import Attention, TinySLM, apply_rope

Head = tuple[int, int]  # (layer, head), both 0-based


@dataclass
class ActivationCache:
    """What one run kept, float32 on the CPU. T positions, C = d_model, L layers, H query heads."""

    token_ids: list[int]
    n_layer: int
    n_head: int
    ablated: list[Head]  # heads whose output was zeroed at every position
    attention: (
        torch.Tensor
    )  # (L, H, T, T): rows sum to 1, exactly 0 where masked (future, outside the window)
    resid: torch.Tensor  # (L + 1, T, C): 0 the embeddings, l the stream after block l - 1
    head_out: (
        torch.Tensor
    )  # (L, H, T, C): each head's write to the stream (its slice of z through the output proj)
    logits: torch.Tensor | None  # (T, vocab): the model's output, with the knock-outs (None: not kept)
    mlp_out: torch.Tensor  # (L, T, C): each MLP's write to the stream
    values: torch.Tensor  # (L, H_kv, T, head_dim): the value vectors the heads mix
    final_scale: torch.Tensor  # (T,): the final norm's 1 / rms at each position (frozen for attribution)
    unembed: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)  # stream: logits
    names: list[str] = field(default_factory=list, repr=False)  # the hook names __getitem__ answers
    logit_rows: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)  # logits_at: each once

    def __post_init__(self) -> None:
        per_block = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
                     "attn.hook_pattern", "attn.hook_result", "attn.hook_v")  # fmt: skip
        blocks = [f"blocks.{i}.{name}" for i in range(self.n_layer) for name in per_block]
        self.names = ["hook_embed", *blocks, "ln_final.hook_scale"]

    def logits_at(self, position: int) -> torch.Tensor:
        """(vocab,): the model's output at position: the kept row, or (a run that kept no logits) the final norm
        and the unembedding applied to the last stream there now."""
        if self.logits is not None:
            return self.logits[position]
        if self.unembed is None:
            raise ValueError("this cache kept no logits and has no unembedding to compute them")
        position = range(len(self.token_ids))[position]  # -1 is the last; IndexError outside
        if position not in self.logit_rows:
            self.logit_rows[position] = self.unembed(self.resid[-1, position][None])[0]
        return self.logit_rows[position]

    def __getitem__(self, name: str) -> torch.Tensor:
        """An activation by its TransformerLens name, without the batch dimension (see `names`)."""
        if name == "hook_embed":
            return self.resid[0]
        if name == "ln_final.hook_scale":
            return self.final_scale[:, None]
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
        if match is None or int(match[1]) >= self.n_layer or f"blocks.0.{match[2]}" not in self.names:
            raise KeyError(f"no activation {name!r}; names look like blocks.0.attn.hook_pattern (see .names)")
        layer, hook = int(match[1]), match[2]
        return {
            "hook_resid_pre": lambda: self.resid[layer],
            "hook_resid_mid": lambda: self.resid[layer] + self.head_out[layer].sum(0),
            "hook_resid_post": lambda: self.resid[layer + 1],
            "hook_attn_out": lambda: self.head_out[layer].sum(0),
            "hook_mlp_out": lambda: self.mlp_out[layer],
            "attn.hook_pattern": lambda: self.attention[layer],  # (H, T, T)
            "attn.hook_result": lambda: self.head_out[layer].transpose(0, 1),  # (T, H, C)
            "attn.hook_v": lambda: self.values[layer].transpose(0, 1),  # (T, H_kv, head_dim)
        }[hook]()


def parse_head(text: str) -> Head:
    """'3.5' -> (3, 5): head 5 of layer 3; ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d{1,6})\.(\d{1,6})\s*", text)
    if match is None:
        raise ValueError(f"a head is LAYER.HEAD with whole numbers from 0, like 3.5, not {text[:40]!r}")
    return int(match[1]), int(match[2])


def check_heads(config: ModelConfig, heads: Sequence[Head]) -> list[Head]:
    """heads sorted without repeats; ValueError naming the first that the model does not have."""
    for layer, head in heads:
        if not (0 <= layer < config.n_layer and 0 <= head < config.n_head):
            raise ValueError(
                f"no head {layer}.{head}: the model has {config.n_layer} layers of {config.n_head} heads "
                f"(0.0 to {config.n_layer - 1}.{config.n_head - 1})"
            )
    return sorted({(int(layer), int(head)) for layer, head in heads})


def check_token_ids(config: ModelConfig, token_ids: Sequence[int]) -> list[int]:
    """token_ids as a list; ValueError when empty, longer than the context, or outside the vocabulary."""
    ids = [int(i) for i in token_ids]
    if not ids:
        raise ValueError("nothing to inspect: the text has no tokens")
    if len(ids) > config.context_length:
        raise ValueError(f"{len(ids)} tokens is more than the model's context of {config.context_length}")
    bad = next((i for i in ids if not 0 <= i < config.vocab_size), None)
    if bad is not None:
        raise ValueError(f"token id {bad} is outside the vocabulary (0 to {config.vocab_size - 1})")
    return ids


def unembedding(model: TinySLM) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's logits (..., vocab) for streams (..., C) after its last block: the final norm, then the head,
    whose weight is read as float32 once here (not at every call: a bf16 head is 65 MB of float32 on nano)."""
    head, device = Float32Linear(model.output), model.norm.weight.device

    def unembed(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return head(rms_norm(model.norm, x.to(device))).cpu()

    return unembed


def run_with_cache(
    model: TinySLM, token_ids: Sequence[int], ablate: Sequence[Head] = (), keep_logits: bool = True
) -> ActivationCache:
    """Run token_ids once through model, keeping the activations; ablate: (layer, head) pairs to knock out.

    A knocked-out head's slice of the attention output (z, before the output projection) is zeroed at every
    position, so nothing it reads reaches the stream. Costs one forward pass plus what it keeps. keep_logits
    False skips the (T, vocab) logits, a third of a small model's pass: `logits_at` computes a position's.
    """
    cfg = model.config
    ids, ablated = check_token_ids(cfg, token_ids), check_heads(cfg, ablate)
    device = model.norm.weight.device
    T, C, H = len(ids), cfg.d_model, cfg.n_head
    keep = torch.ones(cfg.n_layer, H, device=device)
    for layer, head in ablated:
        keep[layer, head] = 0.0
    pos = torch.arange(T, device=device)
    allowed = window_mask(pos, pos, cfg.sliding_window)  # (T, T) the model's own rule: causal, in the window
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]
    L, D = cfg.n_layer, cfg.head_dim
    kept = {  # written in place layer by layer: what the run keeps costs no copies
        "attention": torch.empty(L, H, T, T, device=device),
        "resid": torch.empty(L + 1, T, C, device=device),
        "head_out": torch.empty(L, H, T, C, device=device),
        "mlp_out": torch.empty(L, T, C, device=device),
        "values": torch.empty(L, cfg.kv_heads, T, D, device=device),
    }
    with torch.no_grad():
        x = rows(model.tok_embeddings, torch.tensor(ids, device=device))  # (T, C)
        for i, block in enumerate(model.layers):
            kept["resid"][i] = x
            out = kept["attention"][i], kept["values"][i]
            z = attend(block.attn, rms_norm(block.attn_norm, x), cos, sin, allowed, out)
            z = z * keep[i][:, None, None]  # (H, T, D) the knock-outs
            wo = dense(block.attn.wo).view(C, H, D).permute(1, 2, 0)  # (H, D, C): each head's slice of wo
            result = torch.matmul(z, wo, out=kept["head_out"][i])  # (H, T, C) each head's write to the stream
            x = x + result.sum(0)
            gate, up = linear(block.mlp.w13, rms_norm(block.mlp_norm, x)).chunk(2, dim=-1)
            mlp = linear(block.mlp.w2, F.silu(gate) * up, out=kept["mlp_out"][i])  # (T, C)
            x = x + mlp
        kept["resid"][L] = x
        unembed = unembedding(model)
        logits = unembed(x) if keep_logits else None  # (T, V)
        scale = rms_scale(model.norm, x)[:, 0]
    return ActivationCache(
        token_ids=ids, n_layer=L, n_head=H, ablated=ablated, logits=logits, final_scale=scale.cpu(),
        unembed=unembed, **{name: tensor.cpu() for name, tensor in kept.items()},
    )  # fmt: skip


def attend(attn: Attention, h: torch.Tensor, cos, sin, allowed: torch.Tensor, out) -> torch.Tensor:
    """One attention layer on normed h (T, C), explicitly: z (H, T, D), the heads' mixed values. out: the
    (pattern (H, T, T), values (H_kv, T, D)) tensors the pattern and the value vectors are written into.

    The pattern is the softmax of the scaled, masked scores, so masked keys get exactly 0; with grouped-query
    attention query head h reads key/value head h // (H / H_kv), as the model's SDPA call does.
    """
    T = h.size(0)
    H, H_kv, D = attn.n_head, attn.n_kv_head, attn.head_dim
    pattern, values = out
    q, k, v = linear(attn.wqkv, h).split([H * D, H_kv * D, H_kv * D], dim=-1)
    q = apply_rope(q.view(1, T, H, D), cos, sin)[0].transpose(0, 1) / math.sqrt(D)  # (H, T, D), scaled
    k = apply_rope(k.view(1, T, H_kv, D), cos, sin)[0].transpose(0, 1)  # (H_kv, T, D)
    values.copy_(v.view(T, H_kv, D).transpose(0, 1))  # (H_kv, T, D)
    group = H // H_kv
    scores = (q @ k.repeat_interleave(group, dim=0).transpose(1, 2)).masked_fill_(~allowed, float("-inf"))
    torch.softmax(scores, dim=-1, out=pattern)  # (H, T, T)
    return pattern @ values.repeat_interleave(group, dim=0)
