"""The decode path: the prefill's last-position head, sampling with tensors only (`pick_token`, what a CUDA-graph
step runs) against the plain sampler, and the fused generator against the plain one."""

from __future__ import annotations

import pytest
import torch

from engine.generate import (
    Generator,
    apply_repetition_penalty,
    context_mask,
    logits_to_probs,
    pick_token,
    sample,
    sampling_knobs,
)
from engine.sampling import SamplingParams


def test_prefill_head_on_the_last_position_only(tiny_model):
    idx = torch.randint(0, tiny_model.config.vocab_size, (2, 12))
    pos = torch.arange(12)
    with torch.inference_mode():
        tiny_model.setup_cache(2)
        full = tiny_model(idx, pos)
        tiny_model.setup_cache(2)
        last = tiny_model(idx, pos, last_only=True)
    assert last.shape == (2, 1, tiny_model.config.vocab_size)
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-6)


def test_pick_token_penalizes_exactly_like_the_plain_sampler():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    ctx = torch.randint(0, 50, (3, 9))
    params = SamplingParams(temperature=0, repetition_penalty=1.3)
    nxt, penalized = pick_token(logits, context_mask(ctx, 50), sampling_knobs(params, logits.device), None)
    want = apply_repetition_penalty(logits, ctx, 1.3)
    assert torch.equal(penalized, want)  # the same float operations, bit for bit
    assert torch.equal(nxt, sample(want, params, None))


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (5, 1.0), (0, 0.6), (8, 0.8)])
def test_pick_token_draws_from_the_same_distribution(top_k, top_p):
    torch.manual_seed(0)
    logits = torch.randn(1, 20) * 2
    params = SamplingParams(temperature=0.7, top_k=top_k, top_p=top_p, repetition_penalty=1.0)
    want = logits_to_probs(logits, 0.7, top_k, top_p)[0]
    n = 40_000
    rows = logits.expand(n, -1)
    gen = torch.Generator().manual_seed(1)
    noise = torch.empty(n, 20).exponential_(generator=gen)
    seen = torch.zeros(n, 20, dtype=torch.bool)
    nxt, _ = pick_token(rows, seen, sampling_knobs(params, rows.device), noise)
    freq = torch.bincount(nxt, minlength=20).float() / n
    assert bool((freq[want == 0] == 0).all())  # never a token top-k / top-p removed
    assert (freq - want).abs().max() < 0.01  # ~4 standard errors at n = 40k


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=90, temperature=0, repetition_penalty=1.2, stop_at_eos=False),
        SamplingParams(max_new_tokens=90, temperature=0.9, top_k=20, top_p=0.9, seed=3, stop_at_eos=False),
    ],
    ids=["greedy", "sampled"],
)
def test_fused_generator_matches_pick_token_step_by_step(params, tiny_model, tiny_tokenizer, one_thread):
    # greedy: the same story as the plain generator (90 tokens outgrow the 64-token context: the window slides)
    prompt = tiny_tokenizer.encode("Once upon a time")
    fused = [(i.clone(), lg.clone()) for i, lg in Generator(tiny_model, tiny_tokenizer, fused_sampling=True)
             .tokens(prompt, params)]  # fmt: skip
    plain = [(i.clone(), lg.clone()) for i, lg in Generator(tiny_model, tiny_tokenizer).tokens(prompt, params)]
    assert len(fused) == len(plain) == 90
    if params.greedy:
        for (a, la), (b, lb) in zip(fused, plain, strict=True):
            assert torch.equal(a, b)
            torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    else:  # another random stream: the same seed gives the same story again, and a different one than `sample`
        again = [i.clone() for i, _ in Generator(tiny_model, tiny_tokenizer, fused_sampling=True).tokens(prompt, params)]
        assert torch.equal(torch.cat([i for i, _ in fused]), torch.cat(again))
