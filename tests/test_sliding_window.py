"""Sliding-window attention: the kernels equal an explicit masked reference, the ring-buffer KV cache decodes
like a full recompute far past the window, the Generator's context slide still works, bundles keep it."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from engine.bundles.bundle import load_bundle, save_bundle
from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model.attention import causal_attention, flex_available, flex_window_attention, window_mask
from engine.model.config import ModelConfig, get_preset
from engine.model.tinyslm import TinySLM
from tests.test_model import _RecomputeReference, _Tok

CFG = ModelConfig(
    vocab_size=97,
    d_model=32,
    n_layer=2,
    n_head=4,
    n_kv_head=2,
    hidden_dim=64,
    context_length=64,
    sliding_window=8,
)

FULL = replace(CFG, sliding_window=None)


def _model(cfg: ModelConfig = CFG, seed: int = 0) -> TinySLM:
    torch.manual_seed(seed)
    return TinySLM(cfg).eval()


def naive_attention(q, k, v, window):
    """Textbook attention: repeat the kv heads, scores, -inf outside the causal window, softmax."""
    rep = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    T = q.size(2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    i, j = torch.arange(T, device=q.device)[:, None], torch.arange(T, device=q.device)[None, :]
    allowed = (j <= i) & (i - j < (window if window is not None else T))
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def _qkv(T, heads=4, kv_heads=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, heads, T, dim, generator=g),
        torch.randn(2, kv_heads, T, dim, generator=g),
        torch.randn(2, kv_heads, T, dim, generator=g),
    )


@pytest.mark.parametrize(("T", "window"), [(1, 1), (9, 1), (20, 8), (20, 19), (20, 20), (20, 64), (20, None)])
def test_causal_attention_equals_the_explicit_masked_reference(T, window):
    q, k, v = _qkv(T)
    torch.testing.assert_close(causal_attention(q, k, v, window), naive_attention(q, k, v, window))


def test_window_mask_sees_itself_and_window_minus_one_before():
    pos = torch.arange(6)
    mask = window_mask(pos, pos, 3)
    assert mask[5].tolist() == [False, False, False, True, True, True]
    assert mask[1].tolist() == [True, True, False, False, False, False]
    assert torch.equal(window_mask(pos, pos, None), torch.ones(6, 6, dtype=torch.bool).tril())


@pytest.mark.skipif(not flex_available(), reason="this torch has no FlexAttention")
@pytest.mark.slow
def test_flex_kernel_equals_the_masked_reference_on_cpu(one_thread):
    # the CUDA kernel's block mask, checked where it can run here (compiled FlexAttention on the CPU)
    q, k, v = _qkv(40, dim=16)
    torch.testing.assert_close(
        flex_window_attention(q, k, v, 8), naive_attention(q, k, v, 8), atol=1e-5, rtol=1e-5
    )


@pytest.mark.gpu
def test_cuda_picks_a_windowed_kernel_equal_to_the_masked_reference():
    assert flex_available()
    q, k, v = (t.cuda().requires_grad_() for t in _qkv(300, dim=64))
    out = causal_attention(q, k, v, 128)
    ref = naive_attention(*(t.detach().double().requires_grad_() for t in (q, k, v)), 128)
    torch.testing.assert_close(out.double(), ref.detach(), atol=1e-3, rtol=1e-3)
    out.square().sum().backward()  # training runs it backwards too
    assert q.grad is not None and torch.isfinite(q.grad).all()


GPU_CFG = ModelConfig(
    vocab_size=97, d_model=64, n_layer=2, n_head=4, n_kv_head=2, hidden_dim=128, context_length=256, sliding_window=16
)  # 16-wide heads: FlexAttention's smallest on CUDA


@pytest.mark.gpu
def test_a_compiled_windowed_model_trains_on_cuda_like_the_cpu_reference():
    cpu = _model(GPU_CFG)
    gpu = torch.compile(_model(GPU_CFG).cuda().train())  # as the trainer runs it: kernel and mask in one graph
    idx = torch.randint(0, GPU_CFG.vocab_size, (2, 200))
    logits = gpu(idx.cuda())
    torch.testing.assert_close(logits.cpu(), cpu(idx).detach(), atol=2e-3, rtol=2e-3)  # a wrong mask: ~0.1
    logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters())


@pytest.mark.gpu
def test_cuda_graph_decode_through_the_ring_matches_eager():
    model = _model(GPU_CFG).cuda()
    prompt = torch.randint(0, GPU_CFG.vocab_size, (20,)).tolist()
    params = SamplingParams(max_new_tokens=300, temperature=0, repetition_penalty=1.0, stop_at_eos=False)
    eager = [int(t) for t, _ in Generator(model, _Tok(prompt)).tokens(prompt, params)]
    compiled = Generator(model, _Tok(prompt), compile=True)
    assert [int(t) for t, _ in compiled.tokens(prompt, params)] == eager
    assert compiled.compile_failed is None, compiled.compile_failed


def test_a_window_covering_the_sequence_changes_nothing():
    full, windowed = _model(FULL), _model(CFG.with_(sliding_window=64))
    idx = torch.randint(0, CFG.vocab_size, (2, 30))
    assert torch.equal(full(idx), windowed(idx))


def test_a_window_shorter_than_the_text_changes_the_logits_past_it():
    full, windowed = _model(FULL), _model()
    idx = torch.randint(0, CFG.vocab_size, (1, 30))
    a, b = full(idx), windowed(idx)
    torch.testing.assert_close(a[:, :8], b[:, :8])  # the first `window` tokens see all there is
    assert not torch.allclose(a[:, 8:], b[:, 8:], atol=1e-3)


def test_ring_cache_holds_window_slots():
    model = _model()
    model.setup_cache(3)
    cache = model.layers[0].attn.cache
    assert cache.ring and cache.k.shape == (3, 2, 8, 8) and model.cache_slots == 8 and model.cache_len == 64
    _model(CFG.with_(sliding_window=64)).setup_cache(
        1
    )  # a window as long as the cache: one slot per position
    model = _model(CFG.with_(sliding_window=64))
    model.setup_cache(1)
    assert not model.layers[0].attn.cache.ring and model.cache_slots == 64


def test_cached_decode_equals_full_recompute_far_past_the_window():
    model = _model()
    idx = torch.randint(0, CFG.vocab_size, (2, 64))
    full = model(idx)
    for prompt_len in (1, 5, 8, 13):  # shorter than, equal to and longer than the window
        model.setup_cache(2)
        steps = [model(idx[:, :prompt_len], torch.arange(prompt_len))[:, -1]]
        for pos in range(prompt_len, 64):
            steps.append(model(idx[:, pos : pos + 1], torch.tensor([pos]))[:, -1])
        torch.testing.assert_close(torch.stack(steps, 1), full[:, prompt_len - 1 :], atol=1e-5, rtol=1e-5)


def test_continued_prefill_through_the_ring_matches_full_recompute():
    model = _model()
    idx = torch.randint(0, CFG.vocab_size, (1, 60))
    full = model(idx)
    for chunks in ((7, 3, 20, 1, 29), (30, 30), (1, 2, 3, 4, 50)):
        model.setup_cache(1)
        start, got = 0, []
        for n in chunks:
            got.append(model(idx[:, start : start + n], torch.arange(start, start + n)))
            start += n
        torch.testing.assert_close(torch.cat(got, 1), full, atol=1e-5, rtol=1e-5)


def test_generator_with_a_window_equals_recompute_through_the_context_slide():
    # window 8, context 64: 100 new tokens decode far past the window and slide the context once
    model = _model()
    for prompt_len in (3, 30, 70):
        prompt = torch.randint(0, CFG.vocab_size, (prompt_len,)).tolist()
        params = SamplingParams(max_new_tokens=100, temperature=0, repetition_penalty=1.0, stop_at_eos=False)
        got = [(int(nxt), logits) for nxt, logits in Generator(model, _Tok(prompt)).tokens(prompt, params)]
        ref_tokens, ref_logits = _RecomputeReference(model).logits_trace(prompt, 100)
        assert [t for t, _ in got] == ref_tokens
        torch.testing.assert_close(
            torch.cat([lg for _, lg in got]), torch.cat(ref_logits), atol=1e-4, rtol=1e-4
        )


def test_sliding_window_config_is_validated_and_round_trips():
    for bad in (0, -3, 2.5, "8", True):
        with pytest.raises(ValueError, match="sliding_window"):
            ModelConfig(sliding_window=bad)
    assert ModelConfig.from_dict(CFG.to_dict()) == CFG
    old = ModelConfig().to_dict()
    del old["sliding_window"]  # bundles written before the field existed
    assert ModelConfig.from_dict(old).sliding_window is None
    preset = get_preset("heliumlm-nano")
    assert (preset.sliding_window, preset.context_length, preset.kv_heads, preset.hidden_dim) == (
        128,
        512,
        2,
        1280,
    )
    assert (
        preset.norm_eps == 1e-6 and preset.n_head == 8 and preset.n_layer == 10 and preset.vocab_size == 32000
    )
    with torch.device("meta"):
        assert round(TinySLM(preset).num_params() / 1e5) == 426  # the card's 42.6M


def test_bundle_keeps_the_window(tmp_path, tiny_tokenizer):
    model = _model(CFG.with_(vocab_size=tiny_tokenizer.vocab_size))
    path = save_bundle(tmp_path / "b", model, tiny_tokenizer)
    assert json.loads((path / "config.json").read_text())["model"]["sliding_window"] == 8
    loaded = load_bundle(path)
    assert loaded.config.sliding_window == 8
    idx = torch.randint(0, 97, (1, 40))
    assert torch.equal(loaded.model(idx), model(idx))
