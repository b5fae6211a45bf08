"""The decode path: the prefill's last-position head, the one sampler (`engine.generation.sampler.pick`, eager or inside a
compiled step) against reference formulas, and the fused generator against the plain one."""

from __future__ import annotations

import pytest
import torch

from engine.generation.generate import Generator
from engine.generation.sampler import knob_tensor, pick, seen_mask
from engine.generation.sampling import SamplingParams


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


def reference_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """The repetition penalty as Helium always applied it (greedy stories must not change by a bit)."""
    seen = logits.gather(1, context)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)


def reference_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, top-k, top-p written out plainly: the distribution the sampler must draw from."""
    probs = (logits.double() / temperature).softmax(-1)
    order = probs.argsort(-1, descending=True)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    mass = 0.0
    for rank, i in enumerate(order[0].tolist()):
        if (top_k and rank >= top_k) or (rank > 0 and mass >= top_p):
            break
        keep[0, i] = True
        mass += float(probs[0, i])
    probs = probs * keep
    return (probs / probs.sum()).float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_picks_penalize_exactly_as_before(dtype):
    torch.manual_seed(0)
    logits = (torch.randn(3, 50) * 4).to(dtype)
    ctx = torch.randint(0, 50, (3, 9))
    params = [SamplingParams(temperature=0, repetition_penalty=p) for p in (1.3, 1.1, 0.7)]
    nxt, penalized = pick(logits, seen_mask(ctx, 50), knob_tensor(params, logits.device), None)
    want = torch.cat([reference_penalty(logits[i : i + 1], ctx[i : i + 1], p.repetition_penalty)
                      for i, p in enumerate(params)])  # fmt: skip
    assert penalized.dtype == dtype and torch.equal(penalized, want)  # the same float operations, bit for bit
    assert torch.equal(nxt, want.argmax(-1))


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (5, 1.0), (0, 0.6), (8, 0.8)])
def test_pick_draws_from_the_nucleus(top_k, top_p):
    torch.manual_seed(0)
    logits = torch.randn(1, 20) * 2
    params = SamplingParams(temperature=0.7, top_k=top_k, top_p=top_p, repetition_penalty=1.0)
    want = reference_probs(logits, 0.7, top_k, top_p)[0]
    n = 40_000
    rows = logits.expand(n, -1)
    uniform = torch.rand(n, generator=torch.Generator().manual_seed(1))
    nxt, _ = pick(rows, torch.zeros(n, 20, dtype=torch.bool), knob_tensor([params] * n, rows.device), uniform)
    freq = torch.bincount(nxt, minlength=20).float() / n
    assert bool((freq[want == 0] == 0).all())  # never a token top-k / top-p removed
    assert (freq - want).abs().max() < 0.01  # ~4 standard errors at n = 40k


def test_each_row_samples_with_its_own_settings():
    torch.manual_seed(0)
    logits = torch.randn(1, 30).expand(3, -1)
    params = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.0, top_k=1),
        SamplingParams(top_p=1.0),
    ]
    knobs = knob_tensor(params, logits.device)
    for u in (0.0, 0.5, 0.999):
        nxt, _ = pick(logits, torch.zeros(3, 30, dtype=torch.bool), knobs, torch.tensor([u, u, u]))
        assert nxt[0] == nxt[1] == logits[0].argmax()  # greedy, and top-k 1, whatever the draw
    draws = {int(pick(logits, torch.zeros(3, 30, dtype=torch.bool), knobs, torch.full((3,), u))[0][2])
             for u in torch.linspace(0, 0.99, 50).tolist()}  # fmt: skip
    assert len(draws) > 5  # the third row samples


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=90, temperature=0, repetition_penalty=1.2, stop_at_eos=False),
        SamplingParams(max_new_tokens=90, temperature=0.9, top_k=20, top_p=0.9, seed=3, stop_at_eos=False),
    ],
    ids=["greedy", "sampled"],
)
def test_fused_generator_picks_exactly_the_plain_ones(params, tiny_model, tiny_tokenizer, one_thread):
    # one sampler, one random stream: the sampler inside the decode step or after it, the same story
    # (90 tokens outgrow the 64-token context: the window slides)
    prompt = tiny_tokenizer.encode("Once upon a time")
    fused = [(i.clone(), lg.clone()) for i, lg in Generator(tiny_model, tiny_tokenizer, fused_sampling=True)
             .tokens(prompt, params)]  # fmt: skip
    plain = [
        (i.clone(), lg.clone()) for i, lg in Generator(tiny_model, tiny_tokenizer).tokens(prompt, params)
    ]
    assert len(fused) == len(plain) == 90
    for (a, la), (b, lb) in zip(fused, plain, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
