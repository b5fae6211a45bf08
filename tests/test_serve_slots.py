"""Per-row positions in the KV cache (`engine.generation.generate.Slots`): the engine side of `helium serve`.

A row that joins a running batch, beside rows at other positions that join and leave, picks exactly the tokens
it picks alone through `Generator.tokens` (the path of `helium tell`): greedy and seeded, with and without a
sliding window, across the context filling up, with a prompt longer than the context.
"""

from __future__ import annotations

import pytest
import torch

from engine.generation.generate import Generator, SamplingParams, Slots
from engine.model.tinyslm import TinySLM
from tests.conftest import TINY

SETTINGS = [
    SamplingParams(max_new_tokens=100, temperature=0, stop_at_eos=False),
    SamplingParams(max_new_tokens=100, seed=3, stop_at_eos=False, top_k=20),
    SamplingParams(max_new_tokens=100, seed=8, stop_at_eos=False, repetition_penalty=1.0, temperature=1.3),
]


def generator(tok, window: int | None) -> Generator:
    torch.manual_seed(0)
    return Generator(TinySLM(TINY.with_(vocab_size=tok.vocab_size, sliding_window=window)).eval(), tok)


@pytest.mark.parametrize("window", [None, 16])
@pytest.mark.parametrize("params", SETTINGS)
@pytest.mark.parametrize("prompt", ["Once upon a time", "Tom had a ball. " * 12])
def test_a_row_in_a_changing_batch_picks_what_it_picks_alone(tiny_tokenizer, one_thread, window, params, prompt):
    gen = generator(tiny_tokenizer, window)
    ids = tiny_tokenizer.encode(prompt)
    alone = [int(t) for t, _ in gen.tokens(ids, params)]  # 100 tokens: the 64-token context slides
    with torch.inference_mode():
        slots = Slots(gen, 6)
        first = slots.add(tiny_tokenizer.encode("Lily"), SamplingParams(seed=9))[0]
        row, token, _ = slots.add(ids, params)
        got = [token]
        for step in range(99):
            out, _ = slots.step()
            got.append(out[slots.rows.index(row)])
            if step == 5:
                slots.remove(first)  # the row moves into cache row 0
            if step in (10, 30):  # others join at their own positions
                slots.add(tiny_tokenizer.encode("Max " * (step // 5)), SamplingParams(seed=step))
                slots.add(tiny_tokenizer.encode("Sue"), SamplingParams(temperature=0, repetition_penalty=1.5))
            if step == 50:
                slots.remove(slots.rows[-1])
    assert got == alone


def test_per_row_positions_match_a_shared_position(tiny_tokenizer, one_thread):
    """A decode step with input_pos (B, 1) all equal gives the logits of the shared-position step."""
    gen = generator(tiny_tokenizer, None)
    model = gen.model
    ids = torch.tensor([tiny_tokenizer.encode("Once upon a time")] * 3)
    with torch.inference_mode():
        model.setup_cache(3, gen.ctx)
        model(ids, torch.arange(ids.size(1)))
        nxt = torch.tensor([[5], [6], [7]])
        shared = model(nxt, torch.tensor([ids.size(1)]))
        model.setup_cache(3, gen.ctx)
        model(ids, torch.arange(ids.size(1)))
        per_row = model(nxt, torch.full((3, 1), ids.size(1)))
    torch.testing.assert_close(per_row, shared)


def test_a_full_batch_refuses_another_row(tiny_tokenizer, one_thread):
    gen = generator(tiny_tokenizer, None)
    with torch.inference_mode():
        slots = Slots(gen, 1)
        slots.add([1, 2], SamplingParams())
        with pytest.raises(ValueError, match="all 1 slots are in use"):
            slots.add([1, 2], SamplingParams())
        assert len(slots.rows) == 1


def test_the_default_model_in_a_batch_tells_what_it_tells_alone(one_thread):
    """The shipped model (bf16 on CPUs that have it, oneDNN linears): batching must not change a seeded story."""
    from engine.generation.session import open_session

    session = open_session(None, threads=1)
    gen, tok = session.generator, session.generator.tok
    ids = tok.encode("Once upon a time")
    for params in (SamplingParams(max_new_tokens=60, seed=1, stop_at_eos=False),
                   SamplingParams(max_new_tokens=60, temperature=0, stop_at_eos=False)):  # fmt: skip
        alone = [int(t) for t, _ in gen.tokens(ids, params)]
        with torch.inference_mode():
            slots = Slots(gen, 6)
            for k in range(4):
                slots.add(tok.encode("Tom " * (k + 1)), SamplingParams(seed=100 + k, temperature=1.2))
            row, token, _ = slots.add(ids, params)
            got = [token] + [slots.step()[0][slots.rows.index(row)] for _ in range(59)]
        assert got == alone
