"""The sampler's name bonus (`name_bonus`): names spared from the repetition penalties and the seen ones raised,
in every path that picks tokens; 0 changes nothing."""

from __future__ import annotations

import pytest
import torch

from engine.generation.generate import Generator, SamplingParams, Slots
from engine.generation.names import is_name, name_tokens
from engine.generation.sampler import knob_tensor, penalty_counts, pick
from engine.model.tinyslm import TinySLM
from tests.conftest import TINY, make_stories, train_bpe

VOCAB = ["Mia", " Tom", " She", "The", " Mom", "mia", " Ab.", " ", "Lily's", " Sam", "ran", " Bella"]


def test_names_are_one_capitalised_word_that_is_not_common():
    mask = name_tokens(lambda ids: VOCAB[ids[0]], len(VOCAB))
    assert [VOCAB[i] for i in mask.nonzero().flatten().tolist()] == ["Mia", " Tom", " Sam", " Bella"]
    assert mask.dtype == torch.bool and mask.shape == (len(VOCAB),)


@pytest.fixture(scope="module")
def tok():
    """A tiny tokenizer whose vocabulary holds whole names (" Tom", " Lily", " Sam")."""
    return train_bpe(make_stories() + ["Tom and Lily went to the park. Tom saw Lily and Sam. "] * 30, vocab_size=300)


@pytest.fixture
def model(tok) -> TinySLM:
    torch.manual_seed(0)
    return TinySLM(TINY.with_(vocab_size=tok.vocab_size)).eval()


def test_the_mask_on_a_tiny_tokenizer(tok):
    mask = name_tokens(tok.decode, tok.vocab_size)
    names = {tok.decode([i]) for i in mask.nonzero().flatten().tolist()}
    assert " Lily" in names and all(is_name(t) for t in names)
    assert " She" not in names and not any(is_name(tok.decode([i])) for i in (~mask).nonzero().flatten().tolist())


def rows_and_counts(params: list[SamplingParams]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    history = torch.tensor([[0, 1, 10, 1]] * len(params))  # "Mia", " Tom" twice, "ran"
    counts = penalty_counts(history, 0, 1, params, len(VOCAB))
    return knob_tensor(params, torch.device("cpu")), counts, name_tokens(lambda ids: VOCAB[ids[0]], len(VOCAB))


def test_a_zero_bonus_changes_nothing():
    torch.manual_seed(0)
    params = [SamplingParams(repetition_penalty=1.3, frequency_penalty=0.2, presence_penalty=0.1), SamplingParams()]
    knobs, counts, names = rows_and_counts(params)
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(2, len(VOCAB)) * 3).to(dtype)
        plain = pick(logits, counts, knobs, torch.tensor([0.3, 0.7]))
        masked = pick(logits, counts, knobs, torch.tensor([0.3, 0.7]), names)
        assert torch.equal(plain[0], masked[0])
        assert plain[1].view(torch.int16 if dtype == torch.bfloat16 else torch.int32).equal(
            masked[1].view(torch.int16 if dtype == torch.bfloat16 else torch.int32))  # bit-equal  # fmt: skip


def test_a_seen_name_rises_by_the_bonus_and_is_not_penalized_while_other_seen_tokens_are():
    params = [SamplingParams(repetition_penalty=2.0, presence_penalty=0.5, name_bonus=1.5, penalize_prompt=False)]
    knobs, counts, names = rows_and_counts(params)
    logits = torch.full((1, len(VOCAB)), 2.0)
    _, out = pick(logits, counts, knobs, None, names)
    assert out[0, 1].item() == 2.0 + 1.5  # " Tom": seen, a name: raised, not penalized
    assert out[0, 0].item() == 2.0  # "Mia": a name, but in the prompt, which this row does not count
    assert out[0, 10].item() == 2.0 / 2.0 - 0.5  # "ran": seen, not a name: penalized
    assert out[0, 9].item() == 2.0  # " Sam": a name never seen: as it was
    # a row that counts its prompt raises the prompt's name too
    knobs, counts, names = rows_and_counts([SamplingParams(name_bonus=2.0, repetition_penalty=1.0)])
    assert pick(logits, counts, knobs, None, names)[1][0, 0].item() == 4.0


def test_the_bonus_alone_keeps_the_counts():
    assert SamplingParams(repetition_penalty=1.0, name_bonus=2.0).penalizes
    assert not SamplingParams(repetition_penalty=1.0).penalizes
    assert not SamplingParams(name_bonus=2.0, repeat_last_n=0).penalizes


@pytest.mark.parametrize("bad", [float("nan"), -0.5, float("inf"), 11.0, "2"])
def test_a_bad_bonus_is_a_one_line_error(bad):
    with pytest.raises(ValueError, match="name bonus"):
        SamplingParams(name_bonus=bad).validate()


def test_the_generator_makes_the_mask_only_for_a_bonus(model, tok):
    gen = Generator(model, tok)
    assert gen.names([SamplingParams()]) is None and gen._names is None
    mask = gen.names([SamplingParams(), SamplingParams(name_bonus=1.0)])
    assert mask is not None and gen.names([SamplingParams(name_bonus=3.0)]) is mask  # made once


BONUS = [
    SamplingParams(max_new_tokens=90, seed=3, name_bonus=2.0, stop_at_eos=False),
    SamplingParams(max_new_tokens=90, temperature=0, name_bonus=4.0, repetition_penalty=3.0, repeat_last_n=24,
                   stop_at_eos=False),
]  # fmt: skip


@pytest.mark.parametrize("params", BONUS)
def test_a_slots_row_and_a_generator_row_pick_the_same_with_a_bonus(model, tok, one_thread, params):
    ids = tok.encode("Tom and Lily went to the park. Lily")
    gen = Generator(model, tok)
    alone = [int(t) for t, _ in gen.tokens(ids, params)]  # 90 tokens: the 64-token context slides
    without = [int(t) for t, _ in gen.tokens(ids, SamplingParams(**{**params.__dict__, "name_bonus": 0.0}))]
    assert alone != without  # the bonus changes the story
    fused = [int(t) for t, _ in Generator(model, tok, fused_sampling=True).tokens(ids, params)]
    with torch.inference_mode():
        slots = Slots(gen, 4)
        slots.add(tok.encode("Sue"), SamplingParams(seed=9))  # a row without a bonus beside it
        row, token, _ = slots.add(ids, params)
        got = [token] + [slots.step()[0][slots.rows.index(row)] for _ in range(89)]
    assert got == alone == fused
