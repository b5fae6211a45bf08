"""The one sampler: the next token of every row of a batch, each row with its own settings and random stream.

Tensors only (no host sync, no Python numbers from the device), so the same function runs eagerly after any
forward (CPU, CUDA, a native runtime's logits) and inside a compiled CUDA-graph decode step. A row's draw is
one uniform number from its own seeded stream, drawn on the host: the same seed picks the same tokens on
every device and path, whatever else shares the batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from engine.generation.sampling import KNOBS, MIN_TEMPERATURE, SamplingParams

KNOB = {name: i for i, name in enumerate(KNOBS)}  # column of each setting in a knob tensor


def knob_tensor(rows: Sequence[SamplingParams], device: torch.device) -> torch.Tensor:
    """The rows' settings as one float32 tensor (B, len(KNOBS)), an input of the sampler."""
    return torch.tensor([p.knobs() for p in rows], dtype=torch.float32, device=device)


def seen_mask(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V) bool: which tokens occur in each row of ids (B, L), for the repetition penalty."""
    seen = torch.zeros(ids.size(0), vocab_size, dtype=torch.bool, device=ids.device)
    return seen.scatter_(1, ids, True)


def penalty_counts(history: torch.Tensor, start: int, prompt_len: int, rows: Sequence[SamplingParams],
                   vocab_size: int) -> torch.Tensor:
    """(B, V) float32: how often each token occurs among the tokens each row's penalties look at.

    history (B, L) holds the prompt and every generated token; the model's window begins at `start`. A row
    counts the window's last `repeat_last_n` tokens (-1: all of it; 0: none), leaving out the prompt's
    (the first prompt_len) when it does not `penalize_prompt`.
    """
    length = history.size(1)
    window = history[:, start:]
    position = torch.arange(start, length, device=history.device)
    first = []  # the first position each row counts
    for p in rows:
        lo = start if p.repeat_last_n < 0 else length - p.repeat_last_n
        first.append(max(lo, 0 if p.penalize_prompt else prompt_len))
    weight = (position[None, :] >= torch.tensor(first, device=history.device)[:, None]).float()
    counts = torch.zeros(history.size(0), vocab_size, dtype=torch.float32, device=history.device)
    return counts.scatter_add_(1, window, weight)


def random_stream(params: SamplingParams) -> random.Random:
    """A row's own random stream: seeded when params has a seed, else from the OS."""
    return random.Random(params.seed) if params.seed is not None else random.Random()


def draws(streams: Sequence[random.Random], device: torch.device) -> torch.Tensor:
    """One uniform number in [0, 1) per row (B,) from each row's own stream: the next token's draw."""
    return torch.tensor([s.random() for s in streams], dtype=torch.float32).to(device, non_blocking=True)


def penalize(
    logits: torch.Tensor, counts: torch.Tensor, penalty: torch.Tensor,
    frequency: torch.Tensor | None = None, presence: torch.Tensor | None = None,
    bonus: torch.Tensor | None = None, names: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """The penalties over tokens seen (counts (B, V), bool or float): CTRL's (positive logits divided by the row's
    penalty (B, 1), negative multiplied), then OpenAI's (minus frequency (B, 1) × count, minus presence (B, 1)).
    With names (V,) bool and bonus (B, 1): in the rows whose bonus is > 0 names are spared, and the seen ones
    get + bonus.

    Computed in float32 and rounded back to the logits' dtype: for bf16 logits the same numbers as
    dividing by a Python float (which PyTorch also applies in float32). Zero OpenAI penalties change nothing,
    nor does a zero bonus (those rows' logits are bit-equal to no names at all).
    """
    x = logits.float()
    seen = counts > 0
    spared = None
    if names is not None and bonus is not None:
        spared = names[None, :] & (bonus > 0)  # (B, V)
        seen_names, seen = seen & spared, seen & ~spared
        counts = counts.masked_fill(spared, 0)
    x = torch.where(seen, torch.where(x > 0, x / penalty, x * penalty), x)
    if frequency is not None and presence is not None:
        x = x - frequency * counts.float() - presence * seen.float()
    if spared is not None:
        x = torch.where(seen_names, x + bonus, x)
    return x.to(logits.dtype)


def nucleus(logits: torch.Tensor, knobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities best first (B, V), their token ids (B, V)) after temperature, top-k and top-p.

    The probabilities of dropped tokens are 0 and the rest are not renormalized. The best logit is
    subtracted before dividing, so a tiny temperature gives 0 and -inf, never nan. Ties sort stably (by
    token id), so every device orders them alike; top-k keeps exactly k tokens; the likeliest always stays.
    """
    temperature = knobs[:, KNOB["temperature"], None].clamp_min(MIN_TEMPERATURE)  # greedy rows: any number
    top_k, top_p = knobs[:, KNOB["top_k"], None], knobs[:, KNOB["top_p"], None]
    scaled = logits.float()
    scaled = (scaled - scaled.amax(-1, keepdim=True)) / temperature
    sorted_logits, order = torch.sort(scaled, dim=-1, descending=True, stable=True)
    rank = torch.arange(scaled.size(-1), device=scaled.device)
    sorted_logits = sorted_logits.masked_fill((top_k > 0) & (rank >= top_k), float("-inf"))
    probs = sorted_logits.softmax(-1)
    drop = (probs.cumsum(-1) - probs >= top_p) & (top_p < 1) & (rank > 0)  # keep until the mass before ≥ p
    return probs.masked_fill(drop, 0.0), order


PENALTY_KNOBS = ("repetition_penalty", "frequency_penalty", "presence_penalty", "name_bonus")


def penalty_knobs(knobs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows' (repetition, frequency, presence, name bonus) settings from knobs (B, K), each (B, 1)."""
    return tuple(knobs[:, KNOB[name], None] for name in PENALTY_KNOBS)


def needs_names(rows: Sequence[SamplingParams]) -> bool:
    """True when some row raises names (`name_bonus` > 0): the sampler then needs the names mask."""
    return any(p.name_bonus > 0 and p.penalizes for p in rows)


def pick(
    logits: torch.Tensor, seen: torch.Tensor | None, knobs: torch.Tensor, uniform: torch.Tensor | None,
    names: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(next ids (B,), penalized logits (B, V)) from logits (B, V), knobs (B, K) and draws (B,).

    Penalties over the tokens counted in seen (B, V) (`penalty_counts`; None: no row penalizes), names (V,) bool
    spared and raised in the rows with a name bonus (`engine.generation.names`; None: no row has one), then per
    row: greedy (temperature below MIN_TEMPERATURE, or uniform None for a batch of greedy rows only) or the kept
    token where the row's draw falls in the running sum of the nucleus's probabilities (inverse transform sampling).
    """
    penalized = logits if seen is None else penalize(logits, seen, *penalty_knobs(knobs), names=names)
    best = penalized.max(-1).indices  # argmax's ids (the first of ties), 2-4x faster on CPU (bf16: 122 -> 31 µs, 32K vocab)
    if uniform is None:
        return best, penalized
    probs, order = nucleus(penalized, knobs)
    running = probs.cumsum(-1)
    target = uniform[:, None] * running[:, -1:]  # ≤ the total, so the first running sum ≥ it has p > 0
    choice = (running < target).sum(-1, keepdim=True).clamp_max(probs.size(-1) - 1)
    sampled = order.gather(1, choice).squeeze(1)
    return torch.where(knobs[:, KNOB["temperature"]] < MIN_TEMPERATURE, best, sampled), penalized
