"""The repetition penalty's other forms in the one sampler: a window over recent tokens (llama.cpp's
repeat_last_n), OpenAI's frequency and presence penalties, and sparing the prompt's tokens."""

from __future__ import annotations

import pytest
import torch

from engine.generation.generate import Generator
from engine.generation.sampler import knob_tensor, penalize, penalty_counts, pick
from engine.generation.sampling import SamplingParams


def test_counts_look_at_the_window_and_spare_the_prompt():
    history = torch.tensor([[5, 6, 7, 5, 8, 8, 9]] * 4)  # prompt: the first 3
    rows = [
        SamplingParams(),  # the whole window
        SamplingParams(repeat_last_n=3),  # 8, 8, 9
        SamplingParams(penalize_prompt=False),  # 5, 8, 8, 9
        SamplingParams(repeat_last_n=0),  # nothing
    ]
    counts = penalty_counts(history, 0, 3, rows, 10)
    assert counts[0].tolist() == [0, 0, 0, 0, 0, 2, 1, 1, 2, 1]
    assert counts[1].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 2, 1]
    assert counts[2].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 2, 1]
    assert counts[3].tolist() == [0] * 10
    # a slid window starts later: tokens before `start` never count
    assert penalty_counts(history[:1], 4, 3, rows[:1], 10)[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 2, 1]


def test_frequency_and_presence_penalties_subtract_as_openai_defines_them():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    counts = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    rows = [SamplingParams(repetition_penalty=1.0, frequency_penalty=0.5, presence_penalty=0.25)]
    _, out = pick(logits, counts, knob_tensor(rows, logits.device), None)
    assert out.tolist() == [[2.0 - 1.0 - 0.25, -1.0 - 0.5 - 0.25, 0.5, 3.0]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_openai_penalties_change_no_bit(dtype):
    torch.manual_seed(0)
    logits = (torch.randn(2, 40) * 4).to(dtype)
    counts = torch.randint(0, 3, (2, 40)).float()
    penalty = torch.tensor([[1.1], [0.8]])
    zero = torch.zeros(2, 1)
    assert torch.equal(penalize(logits, counts, penalty, zero, zero), penalize(logits, counts > 0, penalty))


def reference_story(model, prompt: list[int], n: int, params: SamplingParams) -> list[int]:
    """Greedy decoding written plainly: the whole sequence through the model each step, the penalties over
    the tokens the settings name (a context longer than the story, so no window slides)."""
    ids = list(prompt)
    for _ in range(n):
        model.setup_cache(1)
        with torch.inference_mode():
            logits = model(torch.tensor([ids]), torch.arange(len(ids)))[0, -1].float()
        logits = torch.tensor(logits.tolist())  # outside inference mode: editable
        start = 0 if params.penalize_prompt else len(prompt)
        if params.repeat_last_n > 0:
            start = max(start, len(ids) - params.repeat_last_n)
        counted = ids[start:]
        for t in set(counted):
            x = logits[t]
            logits[t] = x / params.repetition_penalty if x > 0 else x * params.repetition_penalty
            logits[t] -= params.frequency_penalty * counted.count(t) + params.presence_penalty
        ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize(
    "knobs",
    [
        dict(repetition_penalty=1.5, repeat_last_n=6),
        dict(repetition_penalty=1.5, penalize_prompt=False),
        dict(repetition_penalty=1.0, frequency_penalty=0.8, presence_penalty=0.3),
        dict(repetition_penalty=1.3, frequency_penalty=0.4, repeat_last_n=5, penalize_prompt=False),
    ],
)
def test_generator_penalizes_as_the_plain_reference(knobs, tiny_model, tiny_tokenizer, one_thread):
    params = SamplingParams(max_new_tokens=30, temperature=0, stop_at_eos=False, **knobs)
    prompt = tiny_tokenizer.encode("Once upon a time Lily")
    got = [int(i) for i, _ in Generator(tiny_model.float(), tiny_tokenizer).tokens(prompt, params)]
    assert got == reference_story(tiny_model, prompt, 30, params)


def test_a_row_without_a_window_counts_as_before(tiny_model, tiny_tokenizer, one_thread):
    # a window longer than the story counts what the whole context counts, token for token
    prompt = tiny_tokenizer.encode("Once upon a time")
    base = SamplingParams(max_new_tokens=40, temperature=0, repetition_penalty=1.4, stop_at_eos=False)
    gen = Generator(tiny_model, tiny_tokenizer)
    whole = [int(i) for i, _ in gen.tokens(prompt, base)]
    window = [int(i) for i, _ in gen.tokens(prompt, SamplingParams(**{**base.__dict__, "repeat_last_n": 500}))]
    assert whole == window


@pytest.mark.parametrize(
    "bad",
    [dict(frequency_penalty=3.0), dict(presence_penalty=float("nan")), dict(repeat_last_n=-2),
     dict(repeat_last_n=1.5), dict(penalize_prompt=1)],
)  # fmt: skip
def test_bad_penalties_are_one_line_errors(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad).validate()


def test_the_fused_step_penalizes_as_the_plain_one_across_a_slide(tiny_model, tiny_tokenizer, one_thread):
    # the sampler inside the decode step (as in a CUDA graph) gets the same counts, and the window slides
    # (90 tokens outgrow the 64-token context)
    params = SamplingParams(max_new_tokens=90, temperature=0.9, top_p=0.9, seed=5, repetition_penalty=1.3,
                            frequency_penalty=0.2, presence_penalty=0.1, repeat_last_n=12, penalize_prompt=False,
                            stop_at_eos=False)  # fmt: skip
    prompt = tiny_tokenizer.encode("Once upon a time Lily")
    fused = [int(i) for i, _ in Generator(tiny_model, tiny_tokenizer, fused_sampling=True).tokens(prompt, params)]
    plain = [int(i) for i, _ in Generator(tiny_model, tiny_tokenizer).tokens(prompt, params)]
    assert fused == plain and len(plain) == 90
