"""TinySLM: a small Llama-style decoder with a static KV cache for fast decoding.

Read top-down: RoPE helpers, RMSNorm, KV cache, attention, MLP, block, model. With a sliding window the
cache is a ring of `window` slots, so decoding costs the same at every position. Positions are shared by the
batch (input_pos (T,)) or, for a decode step of rows that joined at different times, one per row (input_pos
(B, 1), see `TinySLM.forward`); `rows` picks which rows of the cache a forward uses (a server's slots).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.model.attention import causal_attention, window_mask
from engine.model.config import ModelConfig


def precompute_rope(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, (max_len, head_dim // 2), always float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2i], x[2i+1]) in float32; x is (B, T, H, D), cos/sin (T, D/2) or per row (B, T, D/2)."""
    xf = x.float().unflatten(-1, (-1, 2))  # (B, T, H, D/2, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    if cos.dim() == 2:
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    else:
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).type_as(x)


class KVCache(nn.Module):
    """Preallocated keys and values, (B, H_kv, slots, D), updated in place at the input positions.

    One slot per position, or with a sliding window shorter than max_len a ring of `window` slots where
    position p lives in slot p % window: memory and the work per decoded token stop growing with position.
    """

    def __init__(
        self, batch: int, n_kv_head: int, max_len: int, head_dim: int, dtype, device,
        window: int | None = None,
    ) -> None:
        super().__init__()
        self.ring = window is not None and window < max_len
        shape = (batch, n_kv_head, window if self.ring else max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def slots(self) -> int:
        """Positions the buffers hold at once."""
        return self.k.size(2)

    def buffers_for(self, rows: slice | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of cache rows `rows` (views; None: every row)."""
        return (self.k, self.v) if rows is None else (self.k[rows], self.v[rows])

    def write(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: slice | None = None) -> None:
        """Store k, v (B, H_kv, T, D) of positions input_pos (T,), or one position per row (B, 1), in cache
        rows `rows`; a ring keeps the last `slots` of them."""
        kb, vb = self.buffers_for(rows)
        if input_pos.dim() == 2:  # one new position per row
            slot = input_pos[:, 0] % self.slots if self.ring else input_pos[:, 0]
            batch = torch.arange(k.size(0), device=k.device)
            kb[batch, :, slot] = k[:, :, 0]
            vb[batch, :, slot] = v[:, :, 0]
            return
        if self.ring:
            keep = min(k.size(2), self.slots)
            input_pos, k, v = input_pos[-keep:] % self.slots, k[:, :, -keep:], v[:, :, -keep:]
        kb.index_copy_(2, input_pos, k)
        vb.index_copy_(2, input_pos, v)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: slice | None = None):
        """Store k, v and return the keys and values that queries at input_pos attend over.

        The buffers themselves, except for a ring given several positions at once: its old contents, then
        the new keys (the oldest still needed may be overwritten). `TinySLM._cache_mask` matches either.
        """
        kb, vb = self.buffers_for(rows)
        if self.ring and k.size(2) > 1:
            k_all, v_all = torch.cat([kb, k], dim=2), torch.cat([vb, v], dim=2)
            self.write(input_pos, k, v, rows)
            return k_all, v_all
        self.write(input_pos, k, v, rows)
        return kb, vb


class Attention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention, optionally within a sliding window."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.d_model, (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout
        self.window = cfg.sliding_window
        self.cache: KVCache | None = None
        self.cpu_decode_attention = False  # decode steps via torch.ops.helium.decode_attention (engine.model.cpu_kernels)

    def forward(self, x, cos, sin, input_pos: torch.Tensor | None, mask: torch.Tensor | None, rows=None):
        B, T, _ = x.shape
        q_size, kv_size = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        q, k, v = self.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = apply_rope(q.view(B, T, self.n_head, self.head_dim), cos, sin).transpose(1, 2)  # (B, H, T, D)
        k = apply_rope(k.view(B, T, self.n_kv_head, self.head_dim), cos, sin).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        if self.cache is not None and input_pos is not None:
            if mask is None:  # a prefill from position 0 attends over its own keys
                self.cache.write(input_pos, k, v, rows)
            else:  # decode or continued prefill: attend over the cache
                k, v = self.cache.update(input_pos, k, v, rows)
        if mask is None:  # training, or a prefill that starts at position 0
            y = causal_attention(q, k, v, self.window)
        elif T == 1 and self.cpu_decode_attention and input_pos.dim() == 1:  # a decode step: attend over the slots written so far, no mask
            y = torch.ops.helium.decode_attention(q, k, v, input_pos)
        else:
            gqa = self.n_head != self.n_kv_head
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, T, C)
        y = self.wo(y)
        return F.dropout(y, self.dropout, self.training) if self.dropout else y


class MLP(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x), with w1 and w3 fused into one matmul."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.w13 = nn.Linear(cfg.d_model, 2 * cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        y = self.w2(F.silu(gate) * up)
        return F.dropout(y, self.dropout, self.training) if self.dropout else y


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, input_pos, mask, rows=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, input_pos, mask, rows)
        return x + self.mlp(self.mlp_norm(x))


class TinySLM(nn.Module):
    """Decoder-only transformer. `forward(idx)` trains; `setup_cache` + `forward(idx, input_pos)` decodes."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.output = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = precompute_rope(cfg.head_dim, cfg.context_length, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.cache_len = 0  # positions the KV cache covers (0: no cache)
        self.cache_slots = 0  # positions it holds at once (the window for a ring)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2 style scaled init of residual projections
            if name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * cfg.n_layer) ** 0.5)

    def _apply(self, fn, recurse=True):
        """After .to()/.to_empty()/.half(): keep embeddings tied, rebuild RoPE in float32 on the device."""
        super()._apply(fn, recurse)
        cfg = self.config
        if cfg.tie_embeddings:  # to_empty() gives each module its own tensor; tie them again
            self.output.weight = self.tok_embeddings.weight
        cos, sin = precompute_rope(cfg.head_dim, cfg.context_length, cfg.rope_theta)
        self.rope_cos, self.rope_sin = cos.to(self.rope_cos.device), sin.to(self.rope_sin.device)
        return self

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Parameter count (tied weights counted once; int8 and int4 weights, which are buffers, counted too: int4's
        packed uint8 bytes hold two each)."""
        weights = {id(t): t for t in self.parameters()}
        weights |= {id(b): b for name, b in self.named_buffers() if name.endswith(".weight")}
        return sum(t.numel() * (2 if t.dtype == torch.uint8 else 1) for t in weights.values())

    def setup_cache(self, batch_size: int, max_len: int | None = None) -> None:
        """Allocate a static KV cache for max_len positions (default: the context length).

        A sliding window shorter than max_len allocates a ring of `window` slots instead.
        """
        max_len = max_len or self.config.context_length
        if max_len > self.config.context_length:
            raise ValueError(f"cache length {max_len} exceeds context {self.config.context_length}")
        p = self.norm.weight  # the activations' dtype (the embedding may hold int8 weights)
        window = self.config.sliding_window
        for layer in self.layers:
            attn = layer.attn
            shape = (batch_size, attn.n_kv_head, max_len, attn.head_dim)
            attn.cache = KVCache(*shape, p.dtype, p.device, window)
        self.cache_len = max_len
        self.cache_slots = self.layers[0].attn.cache.slots if self.layers else max_len

    def forward(
        self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, last_only: bool = False,
        rows: slice | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Logits (B, T, V) for token ids idx (B, T); (B, 1, V) of the last position only with last_only.

        Without input_pos: plain causal forward from position 0 (training, no cache).
        With input_pos (T,) and a cache: writes keys/values at input_pos. A prefill whose positions
        start at 0 attends over its own keys (fused kernels apply); otherwise a boolean mask over the cache.
        With input_pos (B, 1), a decode step where each row is at its own position (RoPE, cache slot and mask
        per row). rows: the cache rows this batch uses, B of them (None: all; a server decodes its first B).
        """
        B, T = idx.shape
        if input_pos is None:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
            mask = None
        else:
            cos, sin = self.rope_cos[input_pos], self.rope_sin[input_pos]
            mask = self._cache_mask(input_pos, T)
        x = self.tok_embeddings(idx)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, cos, sin, input_pos, mask, rows)
        if last_only:
            x = x[:, -1:]  # a prefill needs one position's logits: skip the head's work on the others
        return self.output(self.norm(x))  # (B, T, V)

    def _cache_mask(self, input_pos: torch.Tensor, T: int) -> torch.Tensor | None:
        """None for a prefill from position 0 (causal over its own tokens), else a bool mask over what the
        cache returns: (T, slots), or (T, slots + T) for a ring given several positions at once."""
        if self.cache_len == 0:
            return None
        cols = torch.arange(self.cache_slots, device=input_pos.device)
        if input_pos.dim() == 2:  # one position per row: (B, 1, 1, slots), a slot visible once written
            return (cols[None, :] <= input_pos[:, -1:])[:, None, None, :]
        if T > 1 and not torch.compiler.is_compiling() and int(input_pos[0]) == 0:
            return None
        if self.cache_slots == self.cache_len or T == 1:
            # a slot is visible once written; a ring's slots only ever hold the window's positions
            return cols[None, :] <= input_pos[:, None]
        last = input_pos[0] - 1  # ring slot s holds the latest position before this chunk that is ≡ s
        k_pos = torch.cat([last - (last - cols) % self.cache_slots, input_pos])  # (slots + T,)
        return window_mask(input_pos, k_pos, self.config.sliding_window) & (k_pos >= 0)


def state_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a TinySLM's state dict for cfg, computed without allocating anything.

    Loaders check a weights file against this before building the model, so a config claiming a huge
    model next to a small file is an error, not gigabytes of allocation. Tied models have no output.weight.
    """
    c, kv = cfg.d_model, cfg.kv_heads
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (cfg.vocab_size, c)}
    for i in range(cfg.n_layer):
        p = f"layers.{i}."
        shapes[p + "attn_norm.weight"] = (c,)
        shapes[p + "attn.wqkv.weight"] = ((cfg.n_head + 2 * kv) * cfg.head_dim, c)
        shapes[p + "attn.wo.weight"] = (c, c)
        shapes[p + "mlp_norm.weight"] = (c,)
        shapes[p + "mlp.w13.weight"] = (2 * cfg.hidden_dim, c)
        shapes[p + "mlp.w2.weight"] = (c, cfg.hidden_dim)
    shapes["norm.weight"] = (c,)
    if not cfg.tie_embeddings:
        shapes["output.weight"] = (cfg.vocab_size, c)
    return shapes
