"""The logit lens: what each layer's residual stream would predict if the model stopped there.

The final norm, recomputed on each layer's stream, then the unembedding (TransformerLens'
`accumulated_resid(apply_ln=True)` followed by `W_U`); the last layer gives the model's own logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.inspect.cache import ActivationCache, unembedding
from engine.inspect.weights import dense, rms_norm
from engine.model.tinyslm import TinySLM


@dataclass
class LensResult:
    """The top tokens of every layer at every position; L + 1 layers, 0 the embeddings, L the model's output."""

    probs: torch.Tensor  # (L + 1, T, top): probabilities of the top tokens, descending
    ids: torch.Tensor  # (L + 1, T, top): their token ids
    model: TinySLM = field(repr=False)
    cache: ActivationCache = field(repr=False)

    def prob_of(self, layer: int, position: int, token_id: int) -> float:
        """The probability layer's lens gives token_id at position (the full distribution, computed now)."""
        return float(layer_logits(self.model, self.cache, layer, position).softmax(-1)[token_id])


def layer_logits(model: TinySLM, cache: ActivationCache, layer: int, position: int) -> torch.Tensor:
    """The lens' logits (vocab,) of one layer (0..L) at one position, float32 on the CPU."""
    if not 0 <= layer <= cache.n_layer or not 0 <= position < len(cache.token_ids):
        shape = f"layers 0..{cache.n_layer}, {len(cache.token_ids)} positions"
        raise IndexError(f"no layer {layer} at position {position} ({shape})")
    if layer == cache.n_layer:
        return cache.logits_at(position)
    return (cache.unembed or unembedding(model))(cache.resid[layer, position][None])[0]


VOCAB_CHUNK = 4096  # unembedding rows per step of the lens: (T, 4096) logits at a time, not (T, vocab)


def logit_lens(model: TinySLM, cache: ActivationCache, top: int = 5) -> LensResult:
    """The top `top` tokens and their probabilities for every layer 0..L and position of cache, exact float32.

    The unembedding is applied a slice of the vocabulary at a time, keeping each row's best tokens so far and
    its softmax normalizer (a running max and sum of exponentials), so the (T, vocab) logits of a layer never
    exist at once; the last layer is the model's own logits, as they are.
    """
    device = model.norm.weight.device
    T, V = len(cache.token_ids), model.config.vocab_size
    probs = torch.empty(cache.n_layer + 1, T, top)
    ids = torch.empty(cache.n_layer + 1, T, top, dtype=torch.long)
    with torch.no_grad():
        unembed = dense(model.output)  # (V, C) once: its row slices are contiguous
        for layer in range(cache.n_layer + (cache.logits is None)):  # the last too if no logits were kept
            x = rms_norm(model.norm, cache.resid[layer].to(device))  # (T, C)
            chunks = (x @ unembed[start : start + VOCAB_CHUNK].T for start in range(0, V, VOCAB_CHUNK))
            probs[layer], ids[layer] = streamed_top(chunks, top)
        if cache.logits is not None:  # the model's own output, exactly (copied: streamed_top overwrites it)
            probs[-1], ids[-1] = streamed_top([cache.logits.to(device, copy=True)], top)
    return LensResult(probs, ids, model, cache)


def streamed_top(chunks, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, ids), each (T, top): the softmax's `top` largest probabilities of each row, best first, for the
    logits given as consecutive column slices (T, n) of the vocabulary; each slice is overwritten."""
    best = ids = most = total = None
    offset = 0
    for logits in chunks:
        chunk_best, chunk_ids = logits.topk(min(top, logits.size(-1)), dim=-1)
        chunk_most = logits.amax(dim=-1, keepdim=True)
        if best is None:
            best, ids, most = chunk_best, chunk_ids, chunk_most
            total = logits.sub_(most).exp_().sum(dim=-1, keepdim=True)
        else:
            best, pick = torch.cat([best, chunk_best], dim=-1).topk(top, dim=-1)
            ids = torch.cat([ids, chunk_ids + offset], dim=-1).gather(-1, pick)
            new_most = torch.maximum(most, chunk_most)
            total = total * (most - new_most).exp_() + logits.sub_(new_most).exp_().sum(dim=-1, keepdim=True)
            most = new_most
        offset += logits.size(-1)
    return ((best - most).exp_() / total).cpu(), ids.cpu()


def lens_logits_at(model: TinySLM, cache: ActivationCache, position: int) -> torch.Tensor:
    """(L + 1, vocab): every layer's lens logits at one position, float32 on the CPU: L + 1 rows through the
    unembedding in one product (a view of one selected token need not wait for the whole lens)."""
    if not 0 <= position < len(cache.token_ids):
        raise IndexError(f"no position {position} ({len(cache.token_ids)} positions)")
    unembed = cache.unembed or unembedding(model)
    lens = unembed(cache.resid[:-1, position])  # (L, vocab): the embeddings and the stream after each block
    return torch.cat([lens, cache.logits_at(position)[None]])  # the last row: the model's own output


def lens_at(
    model: TinySLM, cache: ActivationCache, position: int, top: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, ids), each (L + 1, top): the logit lens of every layer at one position only."""
    probs, ids = lens_logits_at(model, cache, position).softmax(dim=-1).topk(top, dim=-1)
    return probs, ids
