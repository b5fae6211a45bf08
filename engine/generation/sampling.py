"""How to pick each next token: `SamplingParams`, its defaults and its checks (the one home for both).

Torch-free, so the CLI help and the studio's sliders read the defaults from here without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from engine.checks import MAX_SEED, check_seed, is_number, is_whole

MAX_NEW_TOKENS = 1_000_000  # a ceiling on one story (the context window slides, so more is possible)
MIN_TEMPERATURE = 1e-3  # positive temperatures below this sample as greedy would (and overflow float32)
PENALTY_RANGE = (0.01, 100.0)  # repetition penalties outside this turn logits into inf or 0
# The fields the sampler reads, in the order of the columns of their tensor form (`SamplingParams.knobs`,
# engine.generation.sampler.knob_tensor): the one list a new sampling option joins.
KNOBS = ("temperature", "top_k", "top_p", "repetition_penalty", "frequency_penalty", "presence_penalty", "name_bonus")
ADDITIVE_RANGE = (-2.0, 2.0)  # OpenAI's range for frequency and presence penalties
MAX_NAME_BONUS = 10.0  # more than this and a seen name is all a story says
# which tokens the penalties count (`engine.generation.sampler.penalty_counts`), not sampler columns
WINDOW_FIELDS = ("repeat_last_n", "penalize_prompt")


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token."""

    max_new_tokens: int = 400  # stop after this many generated tokens
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # keep only the k most likely tokens (0 = off)
    top_p: float = 0.95  # nucleus: smallest set with this much probability (1 = off)
    repetition_penalty: float = 1.1  # CTRL-style penalty on tokens already in context (1 = off)
    frequency_penalty: float = 0.0  # OpenAI's: logit minus this times the token's count so far (0 = off)
    presence_penalty: float = 0.0  # OpenAI's: logit minus this once the token has occurred (0 = off)
    repeat_last_n: int = -1  # llama.cpp's: the penalties look at the last n tokens (-1 = the context, 0 = none)
    penalize_prompt: bool = True  # the prompt's tokens count too (False: a story may repeat its prompt's names)
    # > 0: names (engine.generation.names) are never penalized and those the penalties count get this added
    name_bonus: float = 0.0
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
        lo, hi = ADDITIVE_RANGE
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            if not is_number(value) or not lo <= value <= hi:
                raise ValueError(f"{name.replace('_', ' ')} must be from {lo:g} to {hi:g} (0 = off), got {value}")
        if not is_whole(self.repeat_last_n) or self.repeat_last_n < -1:
            raise ValueError(f"repeat-last-n must be -1 (the whole context), 0 (off) or a count, got {self.repeat_last_n}")
        if not is_number(self.name_bonus) or not 0 <= self.name_bonus <= MAX_NAME_BONUS:
            raise ValueError(f"name bonus must be from 0 (off) to {MAX_NAME_BONUS:g}, got {self.name_bonus}")
        if not isinstance(self.penalize_prompt, bool):
            raise ValueError(f"penalize-prompt must be true or false, got {self.penalize_prompt!r}")
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
    def penalizes(self) -> bool:
        """True when some penalty (or the name bonus) changes logits (the sampler then needs the counts of earlier
        tokens)."""
        on = self.repetition_penalty != 1 or self.frequency_penalty != 0 or self.presence_penalty != 0
        on = on or self.name_bonus > 0
        return on and self.repeat_last_n != 0

    @property
    def greedy(self) -> bool:
        """True when every token is the most likely one (temperature 0, or below MIN_TEMPERATURE)."""
        return self.temperature < MIN_TEMPERATURE


# The settings a model's metadata may recommend ("sampling": {...} in metadata.json), with each one's JSON kind
MODEL_SETTINGS: dict[str, type] = {
    "temperature": float, "top_k": int, "top_p": float, "repetition_penalty": float, "frequency_penalty": float,
    "presence_penalty": float, "repeat_last_n": int, "penalize_prompt": bool, "name_bonus": float,
    "max_new_tokens": int,
}  # fmt: skip


def model_defaults(metadata: dict, source: str = "metadata.json") -> dict[str, Any]:
    """The sampling settings a bundle's metadata recommends ({} when none): each key checked by kind through
    engine.jsonfile, then all of them together by `SamplingParams.validate`; ValueError (one line) otherwise."""
    from engine.jsonfile import JsonFileError, field, need_object  # torch-free, small

    raw = metadata.get("sampling")
    if raw is None:
        return {}
    need_object(raw, source, "sampling")
    unknown = sorted(set(raw) - set(MODEL_SETTINGS))
    if unknown:
        raise JsonFileError(f"{source}: sampling.{unknown[0]} is not a setting ({', '.join(MODEL_SETTINGS)})")
    settings = {key: field(raw, key, kind, source=source, label=f"sampling.{key}") for key, kind in
                MODEL_SETTINGS.items() if raw.get(key) is not None}  # fmt: skip
    try:
        SamplingParams(**settings).validate()
    except ValueError as exc:
        raise JsonFileError(f"{source}: sampling: {exc}") from None
    return settings


def settle(model: dict[str, Any] | None = None, **chosen: Any) -> SamplingParams:
    """The settings of a story, checked: the engine's defaults, then the model's (`model_defaults`), then what the
    user chose (a value of None is not a choice)."""
    names = {f.name for f in fields(SamplingParams)}
    given = {key: value for key, value in chosen.items() if value is not None}
    bad = sorted(set(given) - names)
    if bad:
        raise TypeError(f"not a sampling setting: {bad[0]}")
    return SamplingParams(**{**(model or {}), **given}).validate()


def recommended(metadata: dict) -> SamplingParams:
    """The settings a model recommends (its metadata's "sampling") over the engine's defaults, checked."""
    return settle(model_defaults(metadata))


def describe(p: SamplingParams) -> str:
    """Settings in words, as a model card says them: 'temperature 0.3, top-p 0.95, repetition penalty 1.2 over the
    last 64 tokens, the prompt not penalized'."""
    parts = ["greedy (temperature 0)" if p.greedy else f"temperature {p.temperature:g}"]
    parts += [f"top-k {p.top_k}"] if p.top_k else []
    parts += [f"top-p {p.top_p:g}"] if p.top_p < 1 else []
    window = {-1: "", 0: " (counting no tokens)"}.get(p.repeat_last_n, f" over the last {p.repeat_last_n} tokens")
    parts += [f"repetition penalty {p.repetition_penalty:g}{window}"] if p.repetition_penalty != 1 else []
    parts += [f"frequency penalty {p.frequency_penalty:g}"] if p.frequency_penalty else []
    parts += [f"presence penalty {p.presence_penalty:g}"] if p.presence_penalty else []
    parts += [f"name bonus {p.name_bonus:g}"] if p.name_bonus else []
    parts += [] if p.penalize_prompt or not p.penalizes else ["the prompt not penalized"]
    return ", ".join(parts)
