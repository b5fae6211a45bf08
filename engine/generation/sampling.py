"""How to pick each next token: `SamplingParams`, its defaults and its checks (the one home for both).

Torch-free, so the CLI help and the studio's sliders read the defaults from here without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from engine.checks import MAX_SEED, check_seed, is_number, is_whole

MAX_NEW_TOKENS = 1_000_000  # a ceiling on one story (the context window slides, so more is possible)
MIN_TEMPERATURE = 1e-3  # positive temperatures below this sample as greedy would (and overflow float32)
PENALTY_RANGE = (0.01, 100.0)  # repetition penalties outside this turn logits into inf or 0
# The fields the sampler reads, in the order of the columns of their tensor form (`SamplingParams.knobs`,
# engine.generation.sampler.knob_tensor): the one list a new sampling option joins.
KNOBS = ("temperature", "top_k", "top_p", "repetition_penalty")


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token."""

    max_new_tokens: int = 400  # stop after this many generated tokens
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # keep only the k most likely tokens (0 = off)
    top_p: float = 0.95  # nucleus: smallest set with this much probability (1 = off)
    repetition_penalty: float = 1.1  # CTRL-style penalty on tokens already in context (1 = off)
    seed: int | None = None  # fixed seed → the same story every time
    stop_at_eos: bool = True  # stop at the end-of-story token

    def validate(self) -> SamplingParams:
        """Raise ValueError with a one-line message for values that cannot sample (nan, inf, out of range)."""
        if not is_number(self.temperature) or not 0 <= self.temperature <= 100:
            raise ValueError(f"temperature must be a number from 0 (greedy) to 100, got {self.temperature}")
        if not is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top-p must be in (0, 1], got {self.top_p}")
        if not is_whole(self.top_k) or self.top_k < 0:
            raise ValueError(f"top-k must be a whole number ≥ 0 (0 = off), got {self.top_k}")
        lo, hi = PENALTY_RANGE
        if not is_number(self.repetition_penalty) or not lo <= self.repetition_penalty <= hi:
            raise ValueError(f"repetition penalty must be from {lo} to {hi:g} (1 = off), got {self.repetition_penalty}")
        if not is_whole(self.max_new_tokens) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(f"max tokens must be from 1 to {MAX_NEW_TOKENS:,}, got {self.max_new_tokens}")
        if self.seed is not None:
            check_seed(self.seed)
        return self

    def knobs(self) -> list[float]:
        """The sampler's settings as numbers, in KNOBS order (one row of the sampler's tensor)."""
        return [float(getattr(self, name)) for name in KNOBS]

    def for_row(self, row: int) -> SamplingParams:
        """These settings for row `row` of a batch: seed + row, so row n of a seeded batch is the story
        that seed + n tells alone. Unseeded settings stay unseeded (each row draws its own stream)."""
        if self.seed is None or row == 0:
            return self
        return replace(self, seed=(self.seed + row) % (MAX_SEED + 1))

    @property
    def greedy(self) -> bool:
        """True when every token is the most likely one (temperature 0, or below MIN_TEMPERATURE)."""
        return self.temperature < MIN_TEMPERATURE
