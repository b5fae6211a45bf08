"""One inspection as plain data: the JSON `helium inspect --json` prints (issue 22's contract), and the summaries
its table shows (each layer's lens top-1, the earlier token each layer attends to most)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.inspect.cache import ActivationCache, Head, run_with_cache
from engine.inspect.lens import LensResult, logit_lens
from engine.model.config import ModelConfig
from engine.model.tinyslm import TinySLM
from engine.model.tokenizer import TextTokenizer

LENS_TOP = 5  # tokens per layer and position in the JSON
NEXT_TOP = 10  # tokens of the next-token distribution in the JSON
ATTENTION_DECIMALS = (
    7  # the JSON's attention weights are rounded to 1e-7 (short numbers, rows still sum to 1)
)


@dataclass
class Inspection:
    """A prompt run once, with its lens: what the JSON and the table are made from."""

    name: str  # the model's name
    tokenizer: TextTokenizer
    cache: ActivationCache
    lens: LensResult


def fit_context(config: ModelConfig, token_ids: Sequence[int]) -> list[int]:
    """The last context_length ids: what the model attends over when it continues a longer text."""
    return list(token_ids[-config.context_length :])


def inspect_ids(
    name: str, model: TinySLM, tokenizer: TextTokenizer, token_ids: Sequence[int], ablate: Sequence[Head] = ()
) -> Inspection:
    """Run token_ids (at most the context) with the knock-outs, and the logit lens over the run."""
    cache = run_with_cache(model, token_ids, ablate)
    return Inspection(name, tokenizer, cache, logit_lens(model, cache, top=LENS_TOP))


def top_tokens(tokenizer: TextTokenizer, probs: torch.Tensor, ids: torch.Tensor) -> list[dict]:
    """[{"id", "token", "p"}] for matching rows of probabilities and ids."""
    return [
        {"id": i, "token": tokenizer.token_text(i), "p": p}
        for p, i in zip(probs.tolist(), ids.tolist(), strict=True)
    ]


def to_json(inspection: Inspection) -> dict:
    """The contract's object: model, token_ids, tokens, n_layer, n_head, attention [layer][head][query][key],
    logit_lens [layer 0..L][position] {"top": 5 tokens}, next_token (10, after the last position), ablated."""
    cache, lens, tok = inspection.cache, inspection.lens, inspection.tokenizer
    next_probs, next_ids = cache.logits[-1].softmax(-1).topk(NEXT_TOP)
    lens_rows = [
        [
            {"top": top_tokens(tok, lens.probs[layer, t], lens.ids[layer, t])}
            for t in range(len(cache.token_ids))
        ]
        for layer in range(cache.n_layer + 1)
    ]
    return {
        "model": inspection.name,
        "token_ids": cache.token_ids,
        "tokens": [tok.token_text(i) for i in cache.token_ids],
        "n_layer": cache.n_layer,
        "n_head": cache.n_head,
        "attention": cache.attention.double().round(decimals=ATTENTION_DECIMALS).tolist(),
        "logit_lens": lens_rows,
        "next_token": top_tokens(tok, next_probs, next_ids),
        "ablated": [f"{layer}.{head}" for layer, head in cache.ablated],
    }


def most_attended(cache: ActivationCache) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, T) each: the earlier position each layer attends to most from each position (heads averaged), and
    that weight; position 0 has no earlier token (-1, 0)."""
    mean = cache.attention.mean(dim=1)  # (L, T, T)
    earlier = torch.ones_like(mean[0], dtype=torch.bool).tril(diagonal=-1)  # key < query
    weights, where = mean.masked_fill(~earlier, -1.0).max(dim=-1)
    return torch.where(weights >= 0, where, -1), weights.clamp(min=0.0)
