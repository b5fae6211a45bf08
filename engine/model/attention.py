"""Causal self-attention over a sequence, optionally within a sliding window, on the best kernel at hand.

`causal_attention` is the one place that picks the kernel; `window_mask` is the explicit reference rule.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

try:  # a cheap import; compiling the kernel is what costs, and happens on first use
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # an older torch: the explicit-mask path serves everywhere
    create_block_mask = flex_attention = None


def window_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """(Tq, Tk) bool: a query sees keys at its position or before, and with a window fewer than window back."""
    delta = q_pos[:, None] - k_pos[None, :]  # (Tq, Tk)
    if window is None:
        return delta >= 0
    return (delta >= 0) & (delta < window)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None) -> torch.Tensor:
    """Attention of positions 0..T-1 over themselves: q (B, H, T, D), k and v (B, H_kv, T, D) -> (B, H, T, D).

    Each query sees itself and the window - 1 positions before it (every earlier one when window is None).
    The kernel: fused SDPA `is_causal` when the window covers the sequence; on CUDA FlexAttention with a
    sliding-window block mask, which never builds a T x T mask; else SDPA with an explicit mask.
    No dropout inside attention: it would force the math kernel (a materialized T x T matrix).
    """
    T = q.size(2)
    gqa = q.size(1) != k.size(1)
    if window is None or window >= T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=gqa)
    if q.is_cuda and flex_available():
        return flex_window_attention(q, k, v, window)
    pos = torch.arange(T, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(pos, pos, window), enable_gqa=gqa)


def flex_available() -> bool:
    """True when this torch has FlexAttention."""
    return flex_attention is not None


@functools.cache
def _compiled_flex():
    """FlexAttention compiled once (compiling is what makes it a fused kernel; eager runs it unfused)."""
    return torch.compile(flex_attention, dynamic=False)


def _window_block_mask(T: int, window: int, device: torch.device):
    """FlexAttention's block mask for causal attention within `window` positions over a T-token sequence."""

    def in_window(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window)

    return create_block_mask(in_window, None, None, T, T, device=device)


_cached_block_mask = functools.lru_cache(maxsize=16)(_window_block_mask)


def flex_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Sliding-window causal attention through compiled FlexAttention (shapes as in `causal_attention`).

    In eager code the kernel is compiled once and block masks are cached per (length, window, device);
    inside a model being compiled, the mask and the kernel are traced into that model's graph instead.
    """
    T, gqa = q.size(2), q.size(1) != k.size(1)
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=_window_block_mask(T, window, q.device), enable_gqa=gqa)
    return _compiled_flex()(q, k, v, block_mask=_cached_block_mask(T, window, q.device), enable_gqa=gqa)
