"""Per-row positions in the KV cache (`engine.generation.generate.Slots`): the engine side of `helium serve`.

A row that joins a running batch, beside rows at other positions that join and leave, picks exactly the tokens
it picks alone through `Generator.tokens` (the path of `helium tell`): greedy and seeded, with and without a
sliding window, across the context filling up, with a prompt longer than the context, on the native runtime and
on the torch path; rows that join together (prefilled in one forward) pick what they pick alone; both paths
pick the same tokens.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from engine.generation.generate import Generator, SamplingParams, Slots
from engine.model.native import NATIVE_ENV
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


@pytest.mark.parametrize("mode", ["auto", "off"])  # the native runtime (where it builds), the torch path
@pytest.mark.parametrize("window", [None, 16])
@pytest.mark.parametrize("params", SETTINGS)
@pytest.mark.parametrize("prompt", ["Once upon a time", "Tom had a ball. " * 12])
def test_a_row_in_a_changing_batch_picks_what_it_picks_alone(
    tiny_tokenizer, one_thread, monkeypatch, mode, window, params, prompt
):
    monkeypatch.setenv(NATIVE_ENV, mode)
    gen = generator(tiny_tokenizer, window)
    assert gen.native is None or mode == "auto"
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
    """The shipped model (bf16 on CPUs that have it; the native runtime decodes, oneDNN linears prefill): batching,
    and a prefill shared with rows that join at the same time, must not change a seeded story."""
    from engine.generation.session import open_session

    session = open_session(None, threads=1)
    gen, tok = session.generator, session.generator.tok
    ids = tok.encode("Once upon a time")
    for params in (SamplingParams(max_new_tokens=60, seed=1, stop_at_eos=False),
                   SamplingParams(max_new_tokens=60, temperature=0, stop_at_eos=False)):  # fmt: skip
        alone = [int(t) for t, _ in gen.tokens(ids, params)]
        with torch.inference_mode():
            slots = Slots(gen, 6)
            for k in range(3):
                slots.add(tok.encode("Tom " * (k + 1)), SamplingParams(seed=100 + k, temperature=1.2))
            # it joins with two rows as long as it, prefilled together in one forward (bf16 batched matmuls)
            same = [(tok.encode("The sun was up"), SamplingParams(seed=7)), (ids, params), (ids, SamplingParams())]
            assert len({len(a) for a, _ in same}) == 1
            row, token, _ = slots.join(same)[1]
            got = [token] + [slots.step()[0][slots.rows.index(row)] for _ in range(59)]
        assert got == alone


# penalties counted every way: the whole window, its last 5 tokens, not the prompt's, none
PENALIZED = [
    SamplingParams(seed=1, repetition_penalty=1.3),
    SamplingParams(seed=2, repetition_penalty=1.2, repeat_last_n=5, frequency_penalty=0.5),
    SamplingParams(temperature=0, repetition_penalty=1.5, penalize_prompt=False, presence_penalty=0.3),
    SamplingParams(seed=4, repetition_penalty=1.0),
]


def busy_batch(tok, gen: Generator) -> list[list[int]]:
    """Every row's tokens through joins (together and alone), leaves and the context sliding: one list a row."""
    told: dict[int, list[int]] = {}
    alive = []  # every row ever seen, so no id() is reused by a later row after one is removed
    with torch.inference_mode():
        slots = Slots(gen, 6)
        for row, token, _ in slots.join([(tok.encode(p), s) for p, s in zip(("Tom", "Lily ran", "Sue"), PENALIZED[:3], strict=True)]):
            told[id(row)] = [token]
        for step in range(90):
            ids, _ = slots.step()
            for row, token in zip(slots.rows, ids, strict=True):
                told.setdefault(id(row), []).append(token)
                alive.append(row)
            if step == 20:
                slots.remove(slots.rows[0])
            if step in (30, 31):
                for row, token, _ in slots.join([(tok.encode("Max had"), PENALIZED[3]), (tok.encode("Ann"), PENALIZED[1])]):
                    told[id(row)] = [token]
    return list(told.values())


@pytest.mark.parametrize("window", [None, 16])
def test_the_native_runtime_and_the_torch_path_pick_the_same_tokens(tiny_tokenizer, one_thread, monkeypatch, window):
    monkeypatch.setenv(NATIVE_ENV, "off")
    torch_path = busy_batch(tiny_tokenizer, generator(tiny_tokenizer, window))
    monkeypatch.setenv(NATIVE_ENV, "auto")
    gen = generator(tiny_tokenizer, window)
    if gen.native is None:
        pytest.skip("the native runtime does not run here")
    assert busy_batch(tiny_tokenizer, gen) == torch_path
    assert len({t for row in torch_path for t in row}) > 20


@pytest.mark.parametrize("window", [None, 16])
def test_rows_that_join_together_pick_what_they_pick_alone(tiny_tokenizer, one_thread, window):
    gen = generator(tiny_tokenizer, window)
    prompts = ["Once upon a time", "Tom", "Once upon a time", "Lily and Max", "Once upon a time"]  # 3 as long
    asks = [(tiny_tokenizer.encode(p), replace(s, max_new_tokens=40, stop_at_eos=False))
            for p, s in zip(prompts, PENALIZED + PENALIZED[:1], strict=True)]  # fmt: skip
    alone = [[int(t) for t, _ in gen.tokens(ids, params)] for ids, params in asks]
    with torch.inference_mode():
        slots = Slots(gen, 6)
        slots.add(tiny_tokenizer.encode("Sue"), SamplingParams(seed=5))
        joined = slots.join(asks)
        got = [[token] for _, token, _ in joined]
        for _ in range(39):
            ids, _ = slots.step()
            for told, (row, _, _) in zip(got, joined, strict=True):
                told.append(ids[slots.rows.index(row)])
    assert got == alone


def test_a_join_past_the_free_rows_or_a_failed_prefill_leaves_the_batch_as_it_was(tiny_tokenizer, one_thread):
    gen = generator(tiny_tokenizer, None)
    with torch.inference_mode():
        slots = Slots(gen, 3)
        slots.add([1, 2], SamplingParams())
        with pytest.raises(ValueError, match="3 rows, 2 free"):
            slots.join([([1, 2], SamplingParams())] * 3)
        with pytest.raises(RuntimeError, match="out of"):
            slots.join([([1, 2], SamplingParams()), ([10_000], SamplingParams())])  # a token past the vocabulary
        assert len(slots.rows) == 1
        assert len(slots.join([([1, 2], SamplingParams())] * 2)) == 2
