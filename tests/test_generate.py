"""Sampling properties, streaming detokenization, cancellation, batches of rows and token details."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.generation.generate import Generator, Request
from engine.generation.sampler import knob_tensor, nucleus, penalize, pick, seen_mask
from engine.generation.sampling import SamplingParams
from engine.model.tokenizer import StreamDecoder
from tests.stories import told, told_rows

TEXTS = [
    "Once upon a time, Lily had a ball.",
    "café naïve 😀 日本 — “quoted”",
    "Tom said, \"Hi!\"\n\nThe end.",
    "  spaces   and\ttabs ",
]


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """What the sampler draws from, in vocabulary order (B, V), normalized."""
    probs, order = nucleus(logits, knob_tensor([params] * logits.size(0), logits.device))
    probs = torch.zeros_like(probs).scatter(1, order, probs)
    return probs / probs.sum(-1, keepdim=True)


def test_top_k_never_leaves_the_k_best():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    probs = probabilities(logits, SamplingParams(temperature=1.0, top_k=5, top_p=1.0))
    best = logits.topk(5).indices
    for row in range(4):
        assert set(probs[row].nonzero().flatten().tolist()) == set(best[row].tolist())
    params = SamplingParams(temperature=1.5, top_k=3, top_p=1.0)
    knobs, seen = knob_tensor([params] * 4, logits.device), torch.zeros(4, 50, dtype=torch.bool)
    best3 = logits.topk(3).indices
    for u in torch.linspace(0, 1, 200):
        tok, _ = pick(logits, seen, knobs, u.expand(4))  # u = 1 included: the end of the running sum
        assert all(int(tok[r]) in best3[r].tolist() for r in range(4))


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    probs = probabilities(logits, SamplingParams(temperature=1.0, top_p=0.7))
    assert probs[0, 2] == 0 and probs[0, 3] == 0
    torch.testing.assert_close(probs[0, :2], torch.tensor([0.625, 0.375]))
    tiny_p = probabilities(logits, SamplingParams(temperature=1.0, top_p=0.01))
    assert tiny_p[0].nonzero().flatten().tolist() == [0]


def test_repetition_penalty_lowers_repeated_token_probability():
    logits = torch.tensor([[2.0, 1.0, -1.0, 0.5]])
    out = penalize(logits, seen_mask(torch.tensor([[0, 2, 0]]), 4), torch.tensor([[2.0]]))
    assert out[0, 0] == 1.0 and out[0, 2] == -2.0 and out[0, 1] == 1.0 and out[0, 3] == 0.5
    assert out.softmax(-1)[0, 0] < logits.softmax(-1)[0, 0]
    assert out.softmax(-1)[0, 2] < logits.softmax(-1)[0, 2]
    assert torch.equal(penalize(logits, seen_mask(torch.tensor([[0]]), 4), torch.tensor([[1.0]])), logits)


def test_sampling_params_reject_bad_values():
    for bad in (dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1), dict(max_new_tokens=0)):
        with pytest.raises(ValueError):
            SamplingParams(**bad).validate()


def test_temperature_zero_is_deterministic_and_greedy(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    p = SamplingParams(max_new_tokens=30, temperature=0, repetition_penalty=1.0, stop_at_eos=False)
    a, b = told(gen, "Once upon a time", p), told(gen, "Once upon a time", p)
    assert a.text == b.text and a.generated_tokens == 30
    ids = tiny_tokenizer.encode("Once upon a time")
    manual = list(ids)
    with torch.no_grad():
        for _ in range(30):
            manual.append(int(tiny_model(torch.tensor([manual]))[0, -1].argmax()))
    assert tiny_tokenizer.decode(manual[len(ids) :]) == a.text


def test_same_seed_same_story_different_seed_differs(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    p = SamplingParams(max_new_tokens=40, temperature=1.0, seed=7, stop_at_eos=False)
    assert told(gen, "Tom", p).text == told(gen, "Tom", p).text
    other = SamplingParams(max_new_tokens=40, temperature=1.0, seed=8, stop_at_eos=False)
    assert told(gen, "Tom", p).text != told(gen, "Tom", other).text


@pytest.mark.parametrize("text", TEXTS)
def test_stream_decoder_round_trips_text(tiny_tokenizer, text):
    ids = tiny_tokenizer.encode(text, add_bos=False)
    dec = StreamDecoder(tiny_tokenizer, [tiny_tokenizer.bos_id])
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)  # never a broken UTF-8 character


def test_stream_decoder_holds_back_split_multibyte_characters(tiny_tokenizer):
    ids = tiny_tokenizer.encode("😀", add_bos=False)
    assert len(ids) > 1  # the emoji is split over byte tokens in this tiny vocabulary
    dec = StreamDecoder(tiny_tokenizer)
    pieces = [dec.push(i) for i in ids]
    assert pieces[:-1] == [""] * (len(ids) - 1) and pieces[-1] == "😀"


def test_stream_yields_incremental_deltas_and_result(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    p = SamplingParams(max_new_tokens=25, temperature=0, stop_at_eos=False)
    stream = gen.stream("Lily", p)
    deltas = [d.text for d in stream]
    assert len(deltas) > 1
    r = stream.result
    assert "".join(deltas) == r.text and r.generated_tokens == 25 and r.finish_reason == "length"
    assert r.prompt_tokens == len(tiny_tokenizer.encode("Lily"))


def test_stops_at_end_of_story_token(tiny_model, tiny_tokenizer):
    with torch.no_grad():  # make EOS overwhelmingly likely
        tiny_model.output.weight.data[tiny_tokenizer.eos_id] *= 0
        tiny_model.norm.weight.data.fill_(1.0)
    bias = torch.zeros(tiny_model.config.vocab_size)
    bias[tiny_tokenizer.eos_id] = 1e4
    tiny_model.output.register_forward_hook(lambda m, i, o: o + bias)
    r = told(Generator(tiny_model, tiny_tokenizer), "Tom", SamplingParams(max_new_tokens=50, temperature=0))
    assert r.finish_reason == "eos" and r.generated_tokens == 0 and r.text == ""


def test_cancellation_stops_between_tokens(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    cancel = threading.Event()
    stream = gen.stream("Tom", SamplingParams(max_new_tokens=200, stop_at_eos=False, seed=1), cancel=cancel)
    for n, _ in enumerate(stream):
        if n == 3:
            cancel.set()
    assert stream.result.finish_reason == "cancelled"
    assert stream.result.generated_tokens <= 6


def test_token_details_carry_probabilities_and_alternatives(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    p = SamplingParams(max_new_tokens=10, temperature=0, repetition_penalty=1.0, stop_at_eos=False)
    infos = [d.token for d in gen.stream("Tom", p, inspect_top=3) if d.token]
    assert len(infos) == 10
    for info in infos:
        assert len(info.top) == 3
        probs = [pr for _, _, pr in info.top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert info.top[0][1] == info.id and info.prob == pytest.approx(probs[0])  # greedy picks the best


def test_batched_sampling_gives_several_stories(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    stories = told_rows(
        gen, "Once", 4, SamplingParams(max_new_tokens=20, seed=3, temperature=1.0, stop_at_eos=False)
    )
    assert len(stories) == 4 and len(set(stories)) > 1
    greedy = SamplingParams(max_new_tokens=20, temperature=0, stop_at_eos=False)
    assert told_rows(gen, "Once", 3, greedy) == [told(gen, "Once", greedy).text] * 3


def test_a_row_tells_its_own_story_whatever_shares_the_batch(tiny_model, tiny_tokenizer, one_thread):
    gen = Generator(tiny_model, tiny_tokenizer)
    mine = SamplingParams(max_new_tokens=30, temperature=0.9, top_k=40, seed=5, stop_at_eos=False)
    alone = told(gen, "Once", mine).text
    others = [
        SamplingParams(max_new_tokens=8, temperature=0, stop_at_eos=False),  # greedy, ends early
        SamplingParams(max_new_tokens=40, temperature=1.3, top_p=0.5, repetition_penalty=1.5),  # unseeded
        replace(mine, seed=6),
    ]
    for shared in (others, others[::-1], others[:1]):
        telling = gen.tell([Request("Once", p) for p in shared] + [Request("Once", mine)])
        for _ in telling:
            pass
        assert telling.rows[-1].result.text == alone


def test_rows_end_on_their_own_max_tokens_and_cancel(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    stop = threading.Event()
    long = SamplingParams(max_new_tokens=200, temperature=0, stop_at_eos=False)
    telling = gen.tell([Request("Tom", replace(long, max_new_tokens=5)), Request("Tom", long, stop.is_set),
                        Request("Tom", replace(long, max_new_tokens=12))])  # fmt: skip
    ends = {}
    for step, deltas in enumerate(telling):
        ends |= {d.row: (d.finish, step) for d in deltas if d.finish}
        if step == 7:
            stop.set()
    assert ends == {0: ("length", 4), 1: ("cancelled", 8), 2: ("length", 11)}
    assert [r.result.generated_tokens for r in telling.rows] == [5, 8, 12]


def test_rows_of_one_batch_share_their_prompt(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="share their prompt"):
        Generator(tiny_model, tiny_tokenizer).tell([Request("Tom"), Request("Lily")])


def test_long_generation_slides_past_the_context(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    ctx = tiny_model.config.context_length
    r = told(gen, "Tom", SamplingParams(max_new_tokens=3 * ctx, stop_at_eos=False, seed=0))
    assert r.generated_tokens == 3 * ctx
    long_prompt = "Lily had a ball. " * 40
    assert len(tiny_tokenizer.encode(long_prompt)) > ctx
    assert told(gen, long_prompt, SamplingParams(max_new_tokens=5, stop_at_eos=False)).generated_tokens == 5


ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)


@settings(max_examples=150, deadline=None)
@given(temperature=ANY_FLOAT, top_p=ANY_FLOAT, penalty=ANY_FLOAT)
def test_any_float_either_is_refused_in_one_line_or_samples_a_real_token(temperature, top_p, penalty):
    params = SamplingParams(temperature=temperature, top_p=top_p, repetition_penalty=penalty, seed=0)
    try:
        params.validate()
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    logits = torch.tensor([[3.0, 1.0, 0.5, -2.0, 0.0]])
    knobs = knob_tensor([params], logits.device)
    seen = seen_mask(torch.tensor([[0, 3]]), 5)
    if not params.greedy:
        probs, _ = nucleus(penalize(logits, seen, knobs[:, 3:4]), knobs)
        assert torch.isfinite(probs).all() and 0 < probs.sum().item() <= 1.0001
    tok, _ = pick(logits, seen, knobs, torch.tensor([0.999]))
    assert 0 <= int(tok) < 5


@pytest.mark.parametrize(
    "bad",
    [dict(temperature=float("nan")), dict(temperature=float("inf")), dict(top_p=float("nan")),
     dict(repetition_penalty=float("nan")), dict(repetition_penalty=1e-300), dict(seed=10**23), dict(seed=-1),
     dict(max_new_tokens=10**9), dict(top_k=2.5)],
)  # fmt: skip
def test_nan_inf_and_huge_values_are_refused(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad).validate()


def test_tiny_temperatures_and_top_p_sample_like_greedy(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    greedy = told(gen, "Tom", SamplingParams(max_new_tokens=12, temperature=0, stop_at_eos=False)).text
    for params in (dict(temperature=1e-45), dict(temperature=0.5, top_p=1e-300)):
        p = SamplingParams(max_new_tokens=12, stop_at_eos=False, seed=1, **params)
        assert told(gen, "Tom", p).text == greedy


def test_one_story_at_a_time_a_second_caller_waits(tiny_model, tiny_tokenizer):
    gen = Generator(tiny_model, tiny_tokenizer)
    params = SamplingParams(max_new_tokens=20, temperature=0, stop_at_eos=False)
    first = gen.tokens(tiny_tokenizer.encode("Tom"), params)
    next(first)  # the first generation holds the model
    started, finished = threading.Event(), threading.Event()

    def second() -> None:
        started.set()
        told(gen, "Lily", params)
        finished.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert started.wait(5)
    assert not finished.wait(0.3)  # blocked while the first is open
    rest = list(first)  # the first runs to its end and releases the model
    assert len(rest) == 19
    assert finished.wait(10)
    thread.join(5)
