"""Tell one prompt several times at once for the compare view: a batch per model, stepped in turn.

Each model tells its variants as one batch (`Generator.tell`: one prefill, one row per variant); row n
samples with `params.for_row(n)` (seed + n), so a variant is the story its seed tells alone. With two models
their batches take turns token by token, so both columns grow together. No Textual here: `emit` gets the text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass

from engine.generation.generate import Generator, Request
from engine.generation.sampling import SamplingParams

Emit = Callable[[int, str, str], None]  # (column, new text, finish reason); one call per token while telling


@dataclass
class Batch:
    """One model's share of the variants: the columns it fills, rows in order."""

    generator: Generator  # the model telling them
    columns: list[int]  # the column of each row
    params: SamplingParams | None = None  # its own settings (None: those tell_variants is given)


def tell_variants(
    batches: list[Batch], prompt: str, params: SamplingParams, cancel: threading.Event, emit: Emit
) -> None:
    """Tell prompt with params on every batch until each row ends (end token, max tokens or cancel).

    ValueError for a prompt a model cannot start from (empty, and no start token).
    """
    with ExitStack() as stack:
        live = []
        for batch in batches:
            own = batch.params or params
            rows = [Request(prompt, own.for_row(n), cancel.is_set) for n in range(len(batch.columns))]
            steps = stack.enter_context(closing(iter(batch.generator.tell(rows))))  # closed however it ends
            live.append((batch.columns, steps))
        while live:
            for columns, steps in list(live):
                deltas = next(steps, None)
                if deltas is None:  # every row has ended: the model is free for the next story
                    steps.close()
                    live.remove((columns, steps))
                    continue
                for delta in deltas:
                    emit(columns[delta.row], delta.text, delta.finish)
