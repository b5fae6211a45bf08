"""TinySLM: KV-cached decoding equals full recompute; RoPE stays float32; presets."""

from __future__ import annotations

import torch

from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model.config import PRESETS, ModelConfig, get_preset
from engine.model.tinyslm import TinySLM, apply_rope, precompute_rope

CFG = ModelConfig(vocab_size=97, d_model=32, n_layer=2, n_head=4, n_kv_head=2, hidden_dim=64, context_length=24)


def _model(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return TinySLM(cfg).eval()


def test_nano_preset_is_about_45m_parameters():
    cfg = PRESETS["nano"]
    per_layer = cfg.d_model * (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim + cfg.d_model**2
    per_layer += 3 * cfg.d_model * cfg.hidden_dim + 2 * cfg.d_model
    total = cfg.vocab_size * cfg.d_model + cfg.n_layer * per_layer + cfg.d_model
    assert 43e6 < total < 47e6
    assert cfg.vocab_size == 32000 and cfg.d_model == 512 and cfg.n_head == 8 and cfg.n_layer == 10
    assert cfg.context_length == 512 and cfg.rope_theta == 10000.0
    with torch.device("meta"):
        assert TinySLM(cfg).num_params() == total


def test_tiny_preset_under_one_million():
    with torch.device("meta"):
        assert TinySLM(get_preset("tiny")).num_params() < 1_000_000


def test_rope_is_float32_in_bf16_model():
    cos, sin = precompute_rope(8, 16, 10000.0)
    assert cos.dtype == torch.float32
    x = torch.randn(1, 16, 2, 8, dtype=torch.bfloat16)
    out = apply_rope(x, cos, sin)
    ref = apply_rope(x.float(), cos, sin)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)
    model = TinySLM(CFG).to(torch.bfloat16)  # casting the model must not cast the RoPE tables
    assert model.rope_cos.dtype == model.rope_sin.dtype == torch.float32
    torch.testing.assert_close(model.rope_cos, precompute_rope(8, 24, 10000.0)[0])


def test_rope_rotates_adjacent_pairs():
    cos, sin = precompute_rope(4, 3, 10000.0)
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = apply_rope(x, cos, sin)
    # position p rotates pair 0 by angle p and pair 1 by p / 100
    for p in range(3):
        torch.testing.assert_close(out[0, p, 0, :2], torch.tensor([torch.cos(torch.tensor(p * 1.0)), torch.sin(torch.tensor(p * 1.0))]))


def test_prefill_logits_equal_training_forward():
    model = _model()
    idx = torch.randint(0, CFG.vocab_size, (2, 17))
    full = model(idx)
    model.setup_cache(2)
    cached = model(idx, torch.arange(17))
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_decode_logits_equal_full_recompute_across_prompt_lengths():
    model = _model()
    for prompt_len in (1, 2, 5, 11):
        idx = torch.randint(0, CFG.vocab_size, (1, prompt_len + 8))
        full = model(idx)
        model.setup_cache(1)
        step_logits = [model(idx[:, :prompt_len], torch.arange(prompt_len))[:, -1]]
        for pos in range(prompt_len, idx.size(1)):
            step_logits.append(model(idx[:, pos : pos + 1], torch.tensor([pos]))[:, -1])
        got = torch.stack(step_logits[:-1], 1)
        torch.testing.assert_close(got, full[:, prompt_len - 1 : -1], atol=1e-5, rtol=1e-5)


def test_continued_prefill_matches_full_recompute():
    model = _model()
    idx = torch.randint(0, CFG.vocab_size, (1, 20))
    full = model(idx)
    model.setup_cache(1)
    model(idx[:, :7], torch.arange(7))
    chunk = model(idx[:, 7:20], torch.arange(7, 20))
    torch.testing.assert_close(chunk, full[:, 7:20], atol=1e-5, rtol=1e-5)


class _RecomputeReference:
    """Greedy generation by full recompute over the same sliding window rule (no cache)."""

    def __init__(self, model: TinySLM):
        self.model = model
        self.ctx = model.config.context_length
        self.keep = self.ctx // 2

    def logits_trace(self, prompt: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
        history = list(prompt)
        window = len(history) if len(history) < self.ctx else self.keep
        out_tokens, out_logits = [], []
        for _ in range(steps):
            logits = self.model(torch.tensor([history[-window:]]))[:, -1]
            nxt = int(logits.argmax(-1))
            out_tokens.append(nxt)
            out_logits.append(logits)
            history.append(nxt)
            window = self.keep if window >= self.ctx else window + 1
        return out_tokens, out_logits


class _Tok:
    """Minimal tokenizer stand-in: the Generator only needs encode/eos for token-level tests."""

    def __init__(self, prompt):
        self.prompt, self.eos_id, self.bos_id = prompt, None, None

    def encode(self, text):
        return list(self.prompt)


def test_cached_generation_equals_recompute_through_sliding_window():
    model = _model()
    for prompt_len in (3, 23, 30):  # short, one short of the context, longer than the context
        prompt = torch.randint(0, CFG.vocab_size, (prompt_len,)).tolist()
        gen = Generator(model, _Tok(prompt))
        params = SamplingParams(max_new_tokens=60, temperature=0, repetition_penalty=1.0, stop_at_eos=False)
        got_tokens, got_logits = [], []
        for nxt, logits in gen.tokens(prompt, params):
            got_tokens.append(int(nxt))
            got_logits.append(logits)
        ref_tokens, ref_logits = _RecomputeReference(model).logits_trace(prompt, 60)
        assert got_tokens == ref_tokens
        torch.testing.assert_close(torch.cat(got_logits), torch.cat(ref_logits), atol=1e-4, rtol=1e-4)
