"""Model configuration: one frozen dataclass and the named presets.

A bundle's config.json is `ModelConfig.to_dict()`; `ModelConfig.from_dict` rebuilds it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from engine.checks import known_fields

LIMITS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1 << 20),
    "d_model": (2, 1 << 16),
    "n_layer": (1, 1024),
    "n_head": (1, 1024),
    "n_kv_head": (1, 1024),
    "hidden_dim": (1, 1 << 18),
    "context_length": (1, 1 << 20),
    "sliding_window": (1, 1 << 20),
}
"""Bounds on the shape fields: generous for real models, far below sizes that would exhaust memory."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a TinySLM: a Llama-style decoder (RMSNorm, RoPE, SwiGLU, optional GQA)."""

    vocab_size: int = 32000  # tokens in the vocabulary (≤ 65535 for uint16 shards)
    d_model: int = 512  # width of the residual stream
    n_layer: int = 10  # transformer blocks
    n_head: int = 8  # query heads
    n_kv_head: int | None = None  # key/value heads (grouped-query attention); None = n_head
    hidden_dim: int = 1152  # SwiGLU inner width
    context_length: int = 512  # longest sequence the model attends over
    rope_theta: float = 10000.0  # RoPE base; angles are always computed in float32
    norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_embeddings: bool = True  # output head shares the token embedding matrix
    dropout: float = 0.0  # dropout on attention output and MLP output during training
    sliding_window: int | None = None  # a token sees itself and window - 1 before it; None = all before it

    def __post_init__(self) -> None:
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if value is None and name in ("n_kv_head", "sliding_window"):
                continue
            if type(value) is not int or not low <= value <= high:
                raise ValueError(f"{name} must be a whole number from {low} to {high:,}, got {value!r}")
        for name in ("rope_theta", "norm_eps"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if type(self.dropout) not in (int, float) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if type(self.tie_embeddings) is not bool:
            raise ValueError(f"tie_embeddings must be true or false, got {self.tie_embeddings!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head {self.n_head} is not divisible by n_kv_head {self.kv_heads}")
        if (self.d_model // self.n_head) % 2:
            raise ValueError("head dimension must be even for RoPE")

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads actually used."""
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_head

    @property
    def parameters(self) -> int:
        """Parameter count of a model of this shape (tied weights counted once), computed without torch."""
        c, hidden = self.d_model, self.hidden_dim
        per_layer = 2 * c + (self.n_head + 2 * self.kv_heads) * self.head_dim * c + c * c + 3 * hidden * c
        embeddings = self.vocab_size * c * (1 if self.tie_embeddings else 2)
        return embeddings + self.n_layer * per_layer + c

    def to_dict(self) -> dict:
        """Plain dict for config.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild from config.json, rejecting unknown keys with a clear message."""
        return cls(**known_fields(cls, data, "model config"))

    def with_(self, **changes) -> ModelConfig:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


PRESETS: dict[str, ModelConfig] = {
    # The model card's Helium-Nano: ~45M parameters.
    "nano": ModelConfig(),
    # The card author's own Helium-Nano (HeliumLM): GQA, a 128-token sliding window; ~42.6M parameters.
    "heliumlm-nano": ModelConfig(n_kv_head=2, hidden_dim=1280, sliding_window=128, norm_eps=1e-6),
    # ~17M: a GPU-friendly small model.
    "small": ModelConfig(vocab_size=8192, d_model=384, n_layer=8, n_head=6, hidden_dim=1024),
    # ~5.5M: the largest that trains comfortably on a laptop CPU (the shipped default model).
    "mini": ModelConfig(
        vocab_size=4096, d_model=256, n_layer=6, n_head=8, n_kv_head=4, hidden_dim=704, context_length=256
    ),
    # ~1.9M: quick CPU runs.
    "micro": ModelConfig(
        vocab_size=4096, d_model=160, n_layer=4, n_head=4, hidden_dim=448, context_length=256
    ),
    # <1M: tests and smoke runs.
    "tiny": ModelConfig(
        vocab_size=1024, d_model=64, n_layer=2, n_head=4, n_kv_head=2, hidden_dim=176, context_length=128
    ),
}


# What each preset is for: shown beside its size by `train --help` and the training monitor (one source)
PRESET_USES: dict[str, str] = {
    "nano": "the model card's Helium-Nano (a GPU run)",
    "heliumlm-nano": "HeliumLM's Nano: GQA, a 128-token sliding window (a GPU run)",
    "small": "a GPU-friendly small model",
    "mini": "the largest that trains comfortably on a laptop CPU (the shipped model)",
    "micro": "quick CPU runs",
    "tiny": "tests and smoke runs",
}


def preset_size(name: str) -> str:
    """A preset's size in a few words: 'mini · 5.5M params'."""
    n = PRESETS[name].parameters
    return f"{name} · {n / 1e6:.1f}M params" if n >= 1e6 else f"{name} · {n / 1e3:.0f}K params"


def describe_preset(name: str) -> str:
    """A preset's shape and use in one line: 'mini: 5.5M params, 6 layers × 256, context 256, vocab 4,096: the
    largest that ...'."""
    c = PRESETS[name]
    size = preset_size(name).split(" · ")[1]
    shape = f"{c.n_layer} layers × {c.d_model}, context {c.context_length}, vocab {c.vocab_size:,}"
    return f"{name}: {size}, {shape}: {PRESET_USES.get(name, '')}".rstrip(": ")


def get_preset(name: str) -> ModelConfig:
    """Look up a preset by name, or a WIDTHxDEPTH shape (see `shape_preset`), with the list of names in the error."""
    if name in PRESETS:
        return PRESETS[name]
    if SHAPE_NAME.fullmatch(name):
        return shape_preset(name)
    if re.fullmatch(r"[0-9]+x[0-9]+", name):
        raise ValueError(f"shape {name!r}: width and depth are whole numbers from 1, no leading zero (e.g. 64x2, 128x4)")
    raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}, or WIDTHxDEPTH (e.g. 128x4)")


SHAPE_NAME = re.compile(r"[1-9][0-9]{0,4}x[1-9][0-9]{0,3}")  # WIDTHxDEPTH: 128x4 is 4 layers of width 128
SHAPE_HEAD_DIM = 32  # a WIDTHxDEPTH model's head width; WIDTH must be a multiple of it


def shape_preset(name: str) -> ModelConfig:
    """A model of WIDTHxDEPTH (`helium sweep`'s ladders): micro's vocab and context, heads of 32, and a
    SwiGLU width of 8/3 x WIDTH rounded up to a multiple of 32. ValueError (one line) for a bad shape."""
    width, depth = (int(part) for part in name.split("x"))
    if width % SHAPE_HEAD_DIM:
        raise ValueError(f"shape {name!r}: the width must be a multiple of {SHAPE_HEAD_DIM} (e.g. 64x2, 128x4)")
    hidden = -(-width * 8 // (3 * SHAPE_HEAD_DIM)) * SHAPE_HEAD_DIM
    return PRESETS["micro"].with_(d_model=width, n_layer=depth, n_head=width // SHAPE_HEAD_DIM, hidden_dim=hidden)
