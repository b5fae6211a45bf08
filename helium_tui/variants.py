"""Tell one prompt several times at once for the compare view: a batch per model, stepped in turn.

Each model tells its variants as one batch (`Generator.tokens(..., batch=n)`: one prefill, n rows drawn from
one seeded torch.Generator), so its rows are exactly `Generator.generate_batch`'s. With two models their
batches take turns token by token, so both columns grow together. No Textual here: `emit` gets the text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field

import torch

from engine.generate import Generator
from engine.sampling import SamplingParams
from engine.tokenizer import StreamDecoder

Emit = Callable[[int, str, str], None]  # (column, new text, finish reason); one call per token while telling


@dataclass
class Batch:
    """One model's share of the variants: the columns it fills, rows in order."""

    generator: Generator  # the model telling them
    columns: list[int]  # the column of each row
    steps: Iterator = field(init=False, repr=False)  # Generator.tokens while it runs
    decoders: list[StreamDecoder] = field(init=False, repr=False)
    finished: list[bool] = field(init=False, repr=False)


def tell_variants(
    batches: list[Batch], prompt: str, params: SamplingParams, cancel: threading.Event, emit: Emit
) -> None:
    """Tell prompt with params on every batch until each row ends (end token, max tokens or cancel).

    ValueError for a prompt a model cannot start from (empty, and no start token).
    """
    params = params.validate()
    # One inference mode around everything: each token iterator enters and leaves its own, and those are
    # thread-local, so the first batch to end would otherwise switch it off under the other one.
    with torch.inference_mode(), ExitStack() as stack:
        for batch in batches:
            tok = batch.generator.tok
            ids = tok.encode(prompt)
            if not ids:
                raise ValueError("empty prompt, and this model has no start token to begin from")
            steps = batch.generator.tokens(ids, params, len(batch.columns), cancel)
            batch.steps = stack.enter_context(closing(steps))  # closed on the way out, whatever happens
            batch.decoders = [StreamDecoder(tok, ids) for _ in batch.columns]
            batch.finished = [False] * len(batch.columns)
        live = list(batches)
        while live:
            for batch in list(live):
                if not _step(batch, params, cancel, emit):
                    batch.steps.close()  # releases the model for the next story
                    live.remove(batch)


def _step(batch: Batch, params: SamplingParams, cancel: threading.Event, emit: Emit) -> bool:
    """One token for every live row of batch; False once all its rows have ended."""
    try:
        nxt, _ = next(batch.steps)
    except StopIteration:  # max tokens reached, or cancelled before this token
        reason = "cancelled" if cancel.is_set() else "length"
        for i, column in enumerate(batch.columns):
            if not batch.finished[i]:
                batch.finished[i] = True
                emit(column, batch.decoders[i].flush(), reason)
        return False
    eos = batch.generator.tok.eos_id
    for i, token in enumerate(nxt.tolist()):
        if batch.finished[i]:
            continue
        if params.stop_at_eos and token == eos:
            batch.finished[i] = True
            emit(batch.columns[i], batch.decoders[i].flush(), "eos")
        else:
            emit(batch.columns[i], batch.decoders[i].push(token), "")
    return not all(batch.finished)
