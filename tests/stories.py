"""Tell stories through the one generation loop (`Generator.tell` / `stream`) in a line, for tests."""

from __future__ import annotations

from engine.generation.generate import GenerationResult, Generator, Request
from engine.generation.sampling import SamplingParams


def told(gen: Generator, prompt: str, params: SamplingParams = SamplingParams()) -> GenerationResult:
    """One story, to its end."""
    stream = gen.stream(prompt, params)
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result


def told_rows(gen: Generator, prompt: str, n: int, params: SamplingParams = SamplingParams()) -> list[str]:
    """The texts of n rows told as one batch, row i with params.for_row(i) (as the compare view tells them)."""
    telling = gen.tell([Request(prompt, params.for_row(i)) for i in range(n)])
    for _ in telling:
        pass
    return [row.result.text for row in telling.rows]
