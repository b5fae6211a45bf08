"""What the "Look inside" view shows, from `engine.inspect`: off the UI thread one forward pass over the story's
tokens (with the knocked-out heads) and a greedy continuation; per selected token its lens and attribution.

No Textual here. The view's convention: the *selected token* is the one being written; everything about it is
read at the position before it (what the model attended to, predicted and was pushed by when it wrote it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from engine.inspect import (
    ActivationCache,
    direct_logit_attribution,
    lens_logits_at,
    run_with_cache,
    token_attribution,
)
from engine.inspect.continuation import greedy
from engine.model.tinyslm import TinySLM
from engine.model.tokenizer import StreamDecoder, TextTokenizer

Head = tuple[int, int]  # (layer, head), 0-based
NEXT_TOP = 10  # tokens of the next-token distribution shown
CONTINUATION_TOKENS = 12  # tokens of the greedy continuation


def story_ids(tok: TextTokenizer, prompt: str, text: str, sampled: Sequence[int] | None) -> list[int]:
    """The token ids of prompt + story: the prompt as the model read it, then the sampled ids when every token
    of the story is known (else the whole text tokenized again, e.g. a story reopened from the library)."""
    if sampled is not None:
        return tok.encode(prompt) + list(sampled)
    return tok.encode(prompt + text)


def window(ids: list[int], context: int) -> tuple[list[int], int]:
    """The last `context` ids (what the model can see at once) and how many were left out before them."""
    cut = max(0, len(ids) - context)
    return ids[cut:], cut


def token_pieces(tok: TextTokenizer, ids: Sequence[int], context: Sequence[int] = ()) -> list[str]:
    """The text each token adds after context (a special token or a piece held back for a later one: "")."""
    decoder = StreamDecoder(tok, list(context))
    pieces = [decoder.push(i) for i in ids]
    if pieces:
        pieces[-1] += decoder.flush()
    return pieces


@dataclass
class Look:
    """One look at a story: the activations with the knock-outs, and what the baseline gave for comparison."""

    model: TinySLM  # the model looked into
    tok: TextTokenizer  # its tokenizer (names of tokens)
    ids: list[int]  # the tokens looked at (the last context_length of the story)
    pieces: list[str]  # the text each token adds (model output: make it safe before showing)
    names: list[str]  # each token on its own, readable (tok.token_text)
    cut: int  # story tokens before `ids` left out (the story is longer than the model's context)
    cache: ActivationCache  # the forward pass with the knock-outs (its logits computed per position)
    base_stream: torch.Tensor  # (T, C) the last block's stream without knock-outs (cache.resid[-1] if none)
    ablated: tuple[Head, ...]  # the knocked-out heads, sorted
    seconds: float  # how long the computation took
    continuation: dict[tuple[Head, ...], str] = field(default_factory=dict)  # greedy text by knock-outs

    def names_of(self, token_id: int) -> str:
        """A token on its own, readable (model output: make it safe before showing)."""
        return self.tok.token_text(token_id)

    @property
    def n_layer(self) -> int:
        """Transformer blocks."""
        return self.cache.n_layer

    @property
    def n_head(self) -> int:
        """Query heads per block."""
        return self.cache.n_head

    @property
    def length(self) -> int:
        """Tokens looked at."""
        return len(self.ids)

    def query(self, selected: int) -> int:
        """The position the model wrote token `selected` from (selected == length: the next token)."""
        return selected - 1

    def target(self, selected: int) -> int:
        """The token id at `selected`; after the story, the baseline's most likely next token."""
        if selected < self.length:
            return self.ids[selected]
        return int(self.probs(self.length - 1, base=True).argmax())

    def probs(self, position: int, base: bool = False) -> torch.Tensor:
        """(vocab,) the next-token distribution at position, with the knock-outs (or without: base); computed
        for that position only (the view reads a few positions, never all T × vocab logits)."""
        if base and self.ablated:
            return self.cache.unembed(self.base_stream[position][None])[0].float().softmax(-1)
        return self.cache.logits_at(position).float().softmax(-1)

    def next_tokens(self, base: bool = False, top: int = NEXT_TOP) -> list[tuple[int, float]]:
        """(id, p) of the most likely tokens after the story, best first."""
        p, i = self.probs(self.length - 1, base).topk(min(top, self.model.config.vocab_size))
        return list(zip(i.tolist(), p.tolist(), strict=True))

    def attention(self, layer: int, head: int | None, query: int) -> torch.Tensor:
        """(query + 1,) how much position `query` attends to each position up to it (head None: mean of all)."""
        rows = self.cache.attention[layer, :, query, : query + 1]
        return rows.mean(0) if head is None else rows[head]


def compute(
    model: TinySLM,
    tok: TextTokenizer,
    ids: list[int],
    cut: int,
    ablate: Sequence[Head] = (),
    base: Look | None = None,
) -> Look:
    """Run the story once (twice with knock-outs, unless base already holds the same ids without them); the
    logits are left to be computed at the positions the view reads."""
    started = time.perf_counter()
    ablated = tuple(sorted(set(ablate)))
    cache = run_with_cache(model, ids, ablate=ablated, keep_logits=False)
    if not ablated:
        stream = cache.resid[-1]
    elif base is not None and base.ids == ids:
        stream = base.base_stream
    else:
        stream = run_with_cache(model, ids, keep_logits=False).resid[-1]
    if base is not None and base.ids == ids:  # the same story: its texts and continuations still hold
        look = Look(model, tok, ids, base.pieces, base.names, cut, cache, stream, ablated, 0.0)
        look.continuation = dict(base.continuation)
    else:
        names = [tok.token_text(i) for i in ids]
        look = Look(model, tok, ids, token_pieces(tok, ids), names, cut, cache, stream, ablated, 0.0)
    look.seconds = time.perf_counter() - started
    return look


def continuation(
    model: TinySLM, tok: TextTokenizer, ids: list[int], ablate: Sequence[Head], n: int = CONTINUATION_TOKENS
) -> str:
    """The next n tokens told greedily after ids with the heads in ablate knocked out (stops at the end token);
    the story once, then a token at a time with the keys and values kept (`engine.inspect.continuation`)."""
    out = greedy(model, ids, ablate, n, stop=tok.eos_id)
    return "".join(token_pieces(tok, out, context=ids)) if out else ""


LensRow = tuple[str, int, float, float]  # (layer name, its top-1 id, that p, p of the written token)


@dataclass(frozen=True)
class Reading:
    """Why the selected token was written: the logit lens at its position, each component's push on its
    logit (direct logit attribution), and each earlier token's push through attention."""

    lens: list[LensRow]  # embed, then the stream after each block (the last one is the model's output)
    embed: float  # the token embeddings' direct push
    heads: torch.Tensor  # (n_layer, n_head)
    mlps: torch.Tensor  # (n_layer,)
    tokens: torch.Tensor  # (query + 1,) each earlier token's contribution through attention


def layer_label(row: int) -> str:
    """A lens row's name: embed, then L0, L1 … (the residual stream after that block)."""
    return "embed" if row == 0 else f"L{row - 1}"


def lens_rows(look: Look, selected: int) -> list[LensRow]:
    """The logit lens at the position the selected token was written from, one row per layer."""
    model = look.model
    query, target = look.query(selected), look.target(selected)
    probs = lens_logits_at(model, look.cache, query).softmax(-1)  # (L + 1, vocab): one pass over W_U
    top_p, top_id = probs.max(-1)
    written = probs[:, target]
    return [
        (layer_label(row), int(top_id[row]), float(top_p[row]), float(written[row]))
        for row in range(look.n_layer + 1)
    ]


def read(look: Look, selected: int) -> Reading:
    """The lens and the attribution of the selected token (a few small products: fine on the UI thread)."""
    model = look.model
    query, target = look.query(selected), look.target(selected)
    dla = direct_logit_attribution(model, look.cache, query, target)
    tokens = token_attribution(model, look.cache, query, target)
    lens = lens_rows(look, selected)
    return Reading(lens, float(dla.embed), dla.heads.float(), dla.mlps.float(), tokens.float())


def first_certain(rows: list[LensRow], target: int) -> int | None:
    """The first lens row from which the written token is every later row's top-1 (None: not even the last)."""
    first = None
    for i, (_, top_id, _, _) in enumerate(rows):
        if top_id == target:
            first = i if first is None else first
        else:
            first = None
    return first


def top_components(attr: Reading, n: int) -> list[tuple[str, float]]:
    """The n components with the largest push (either sign): ("L3.H5", 2.3), ("MLP 4", -1.2), ("embed", 0.4)."""
    items = [("embed", attr.embed)]
    items += [(f"MLP {layer}", float(v)) for layer, v in enumerate(attr.mlps.tolist())]
    n_head = attr.heads.size(1)
    items += [(f"L{i // n_head}.H{i % n_head}", v) for i, v in enumerate(attr.heads.flatten().tolist())]
    return sorted(items, key=lambda kv: -abs(kv[1]))[:n]
