"""The one generation loop: rows of stories told as a batch, streamed as text deltas.

`Telling` turns each step's token ids into text (`StreamDecoder`), ends each row on its own (end token,
max tokens, its cancel), and gives the token inspector its per-token details. The studio and `helium tell`
read one row through `Stream`; the compare view reads several rows per model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from engine.generation.sampling import SamplingParams
from engine.model.tokenizer import StreamDecoder, TextTokenizer

if TYPE_CHECKING:
    from engine.generation.generate import Decoding, Generator


@dataclass
class TokenInfo:
    """One generated token for the inspector: its id, text, probability and the top alternatives."""

    id: int
    text: str
    prob: float  # under the model's distribution (after repetition penalty, temperature 1)
    top: list[tuple[str, int, float]] = field(default_factory=list)  # (text, id, prob), best first


@dataclass
class Delta:
    """A piece of a row's streamed text; `token` is set when the row asked for token details.

    `finish` is set on a row's last delta ("eos", "length" or "cancelled"; its text may be empty).
    """

    text: str
    token: TokenInfo | None = None
    row: int = 0  # which row of the batch
    finish: str = ""


@dataclass
class GenerationResult:
    """What a finished generation produced and how fast."""

    text: str  # the generated continuation (without the prompt)
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float  # time to first token: prefill and the first sample
    tokens_per_s: float  # generated tokens / decode time after the first token
    finish_reason: str  # "eos", "length" or "cancelled"
    elapsed_s: float


@dataclass
class Request:
    """One row of a batch: what to continue, how to sample, when to give up, how much detail to stream."""

    prompt: str
    params: SamplingParams = SamplingParams()  # its own settings and seed
    cancel: Callable[[], bool] | None = None  # checked before every token; True ends the row
    inspect_top: int = 0  # > 0: each delta carries a TokenInfo with this many alternatives


def as_cancel(cancel: threading.Event | Callable[[], bool] | None) -> Callable[[], bool] | None:
    """An Event's is_set, a callable as it is, or None."""
    return cancel.is_set if isinstance(cancel, threading.Event) else cancel


class Row:
    """One story of a Telling while it is told: its decoder, counters and, once it ends, its result."""

    def __init__(self, request: Request, prompt_ids: list[int], tok: TextTokenizer) -> None:
        self.request = request
        self.params = request.params.validate()
        self.prompt_ids = prompt_ids
        self.decoder = StreamDecoder(tok, prompt_ids)
        self.pieces: list[str] = []
        self.count = 0  # tokens generated (end tokens not counted)
        self.first: float | None = None  # when its first token was picked
        self.result: GenerationResult | None = None  # set when it ends

    def end(self, reason: str, started: float) -> str:
        """Finish the row; returns the text its decoder held back."""
        tail = self.decoder.flush()
        self.pieces.append(tail)
        end = time.perf_counter()
        first = self.first or end
        decode_time = end - first
        self.result = GenerationResult(
            text="".join(self.pieces),
            prompt_tokens=len(self.prompt_ids),
            generated_tokens=self.count,
            ttft_s=first - started,
            tokens_per_s=(self.count - 1) / decode_time if self.count > 1 and decode_time > 0 else 0.0,
            finish_reason=reason,
            elapsed_s=end - started,
        )
        return tail


class Telling:
    """Requests told as one batch: iterating yields, per step, the `Delta`s of every row still going
    (one per generated token, its text empty while the decoder holds a piece back).

    Each row ends on its own (end token, its max tokens, its cancel) with a last Delta that carries the
    finish reason; the iteration ends when every row has ended, and `rows[i].result` holds row i's
    `GenerationResult`. The batch holds the generator's KV cache (its lock) from the first step to the end
    (or until the iterator is closed: rows still going end "cancelled"). Each step runs in its own
    inference mode, so several Tellings (of different generators) can be stepped in turn on one thread.

    Every row carries its own settings, seed, cancel and detail, and each can leave between steps (its cancel).
    Rows of one Telling share their prompt and position; for rows that join a running batch, each at its own
    position (a server's requests), see `engine.generation.generate.Slots`.
    ValueError for a prompt the model cannot start from, or rows with different prompts.
    """

    def __init__(self, gen: Generator, requests: Sequence[Request]) -> None:
        if not requests:
            raise ValueError("nothing to tell: no rows")
        self.gen = gen
        ids = gen.tok.encode(requests[0].prompt)
        if not ids:
            raise ValueError("empty prompt, and this model has no start token to begin from")
        if any(r.prompt != requests[0].prompt for r in requests):
            raise ValueError("the rows of one batch share their prompt")
        self.rows = [Row(r, ids, gen.tok) for r in requests]

    def __iter__(self) -> Iterator[list[Delta]]:
        started = time.perf_counter()
        with self.gen.lock:
            try:
                with torch.inference_mode():
                    decoding = self.gen.decoding(self.rows[0].prompt_ids, [r.params for r in self.rows])
                while not all(r.result for r in self.rows):
                    with torch.inference_mode():
                        deltas = self._step(decoding, started)
                    yield deltas
            finally:
                for row in self.rows:
                    if row.result is None:  # closed early: the rows still going were cancelled
                        row.end("cancelled", started)

    def _step(self, decoding: Decoding, started: float) -> list[Delta]:
        """Cancelled rows end; every other row gets its next token."""
        deltas = []
        for i, row in enumerate(self.rows):
            if row.result is None and row.request.cancel is not None and row.request.cancel():
                deltas.append(Delta(row.end("cancelled", started), row=i, finish="cancelled"))
        if all(r.result for r in self.rows):
            return deltas
        nxt, logits = decoding.step()
        now = time.perf_counter()
        eos = self.gen.tok.eos_id
        for i, token in enumerate(nxt.tolist()):  # the step's one sync: the ids become text
            row = self.rows[i]
            if row.result is not None:
                continue
            row.first = row.first or now
            if row.params.stop_at_eos and token == eos:
                deltas.append(Delta(row.end("eos", started), row=i, finish="eos"))
                continue
            row.count += 1
            top = row.request.inspect_top
            info = token_info(self.gen.tok, token, logits[i], top) if top else None
            text = row.decoder.push(token)
            row.pieces.append(text)
            deltas.append(Delta(text, info, row=i))  # one per token, its text possibly held back ("")
            if row.count >= row.params.max_new_tokens:
                deltas.append(Delta(row.end("length", started), row=i, finish="length"))
        return deltas


def token_info(tok: TextTokenizer, token_id: int, logits: torch.Tensor, top: int) -> TokenInfo:
    """token_id's probability and the top alternatives under logits (V,) at temperature 1."""
    probs = logits.float().softmax(-1)
    top_p, top_i = probs.topk(top)
    alternatives = [(tok.token_text(i), i, p) for p, i in zip(top_p.tolist(), top_i.tolist(), strict=True)]
    return TokenInfo(token_id, tok.token_text(token_id), float(probs[token_id]), alternatives)


class Stream:
    """The `Delta`s of a Telling's one row; `result` holds its `GenerationResult` once it ends."""

    def __init__(self, telling: Telling) -> None:
        self.telling = telling
        self.prompt_ids = telling.rows[0].prompt_ids

    @property
    def result(self) -> GenerationResult | None:
        """The story's result, once it has ended."""
        return self.telling.rows[0].result

    def __iter__(self) -> Iterator[Delta]:
        with closing(iter(self.telling)) as steps:  # ended early: the story ends "cancelled" now
            for deltas in steps:
                yield from (d for d in deltas if d.text or d.token)
