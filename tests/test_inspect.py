"""engine.inspect against outside implementations: transformers (the `helium export hf` directory, and Mistral for a
sliding window), llama2.c's forward in numpy; int8, bf16 and Helium's kernel linears; the attribution identity.

The transformers oracle runs eager attention with its attention weights and hidden states out; a knock-out there
zeroes the head's slice of o_proj's input with a forward pre-hook. float32 agrees to 1e-4.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine.bundles.bundle import load_bundle, save_bundle
from engine.errors import BundleError
from engine.formats.hf import export_hf, to_hf_state
from engine.inspect import (
    direct_logit_attribution,
    lens_at,
    logit_lens,
    parse_head,
    run_with_cache,
    token_attribution,
    token_attribution_by_head,
)
from engine.inspect.cache import check_heads, check_token_ids
from engine.model.config import ModelConfig
from engine.model.cpu_kernels import Bf16DotLinear, VnniLinear
from engine.model.cpu_linear import PackedLinear
from engine.model.quant import Int8Linear, quantize_model
from engine.model.tinyslm import TinySLM

ATOL = 1e-4  # float32 against transformers
KNOCKS = [(), ((1, 2), (0, 0))]
KNOCK_IDS = ["all-heads", "two-knocked-out"]

# the GQA model of the oracle tests: 2 layers, 4 query heads over 2 key/value heads, a tied head
GQA = ModelConfig(
    vocab_size=300, d_model=64, n_layer=2, n_head=4, n_kv_head=2, hidden_dim=128, context_length=64
)
# HeliumLM's shape, small: 8 query heads over 2, a 6-token sliding window, eps 1e-6, an untied head
WINDOW = ModelConfig(
    vocab_size=300, d_model=64, n_layer=3, n_head=8, n_kv_head=2, hidden_dim=160, context_length=64,
    norm_eps=1e-6, sliding_window=6, tie_embeddings=False,
)  # fmt: skip
PROMPT = "Once upon a time, there was a girl named Lily. Lily had a ball. One day, the ball was lost."


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (see conftest.one_thread)."""


# ---------------------------------------------------------------------------------------------------------
# Helpers (test_inspect_cli.py uses them too)


def random_slm(cfg: ModelConfig, seed: int = 0) -> TinySLM:
    """A TinySLM with weights large enough for sharp attention and norms away from 1 (a swapped norm shows)."""
    torch.manual_seed(seed)
    model = TinySLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            mean, std = (1.0, 0.2) if name.endswith("norm.weight") else (0.0, 0.25)
            p.normal_(mean, std)
    return model


def transformers_module():
    return pytest.importorskip(
        "transformers", reason="needs transformers (pip install 'helium-studio[interop]')"
    )


def load_exported(directory: Path):
    """A `helium export hf` directory in transformers: float32, eager attention."""
    transformers = transformers_module()
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager"
    )
    return hf.eval()


def mistral_of(model: TinySLM):
    """The same weights in transformers' MistralForCausalLM: its sliding window is Helium's rule (Llama has none)."""
    transformers = transformers_module()
    cfg = model.config
    hf_cfg = transformers.MistralConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.context_length, rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta, sliding_window=cfg.sliding_window, tie_word_embeddings=cfg.tie_embeddings,
        attn_implementation="eager",
    )  # fmt: skip
    hf = transformers.MistralForCausalLM(hf_cfg).eval()
    hf.load_state_dict(to_hf_state(cfg, model.state_dict()))
    return hf


def transformers_run(hf, ids: Sequence[int], knock: Sequence[tuple[int, int]] = ()):
    """hf's output for ids (attentions, hidden_states, logits), the heads in knock zeroed before o_proj."""
    head_dim = hf.config.hidden_size // hf.config.num_attention_heads
    hooks = []
    for layer, head in knock:

        def zero(module, args, head=head):
            x = args[0].clone()
            x[..., head * head_dim : (head + 1) * head_dim] = 0.0
            return (x,)

        hooks.append(hf.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(zero))
    try:
        with torch.no_grad():
            return hf(torch.tensor([list(ids)]), output_attentions=True, output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()


def transformers_lens(hf, out) -> torch.Tensor:
    """(L + 1, T, V) the logit lens by transformers: the final norm, then lm_head, on each hidden state.

    Its last hidden state comes normed already (it is the model's output); the others are each layer's input."""
    states = out.hidden_states
    with torch.no_grad():
        lens = [hf.lm_head(hf.model.norm(h[0])) for h in states[:-1]] + [hf.lm_head(states[-1][0])]
    return torch.stack(lens)


def check_against_transformers(model: TinySLM, hf, ids: list[int], knock=()) -> None:
    """Attention, residual stream, lens (top 5 and probabilities) and logits equal transformers' to 1e-4."""
    cache = run_with_cache(model, ids, knock)
    out = transformers_run(hf, ids, knock)
    L = model.config.n_layer
    torch.testing.assert_close(
        cache.attention, torch.stack([a[0] for a in out.attentions]), atol=ATOL, rtol=0
    )
    for layer in range(L):  # transformers' hidden states: the input of each layer, then the normed output
        torch.testing.assert_close(cache.resid[layer], out.hidden_states[layer][0], atol=ATOL, rtol=0)
    torch.testing.assert_close(cache.logits, out.logits[0], atol=ATOL, rtol=0)
    want = transformers_lens(hf, out).softmax(-1)
    lens = logit_lens(model, cache)
    torch.testing.assert_close(lens.probs, want.topk(5, dim=-1).values, atol=ATOL, rtol=0)
    picked = want.gather(-1, lens.ids)  # ids may swap where probabilities tie: compare what they pick
    torch.testing.assert_close(picked, lens.probs, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# transformers as the oracle


@pytest.mark.parametrize("knock", KNOCKS, ids=KNOCK_IDS)
def test_a_gqa_model_matches_transformers_on_its_hf_export(tiny_tokenizer, tmp_path, knock):
    model = random_slm(GQA.with_(vocab_size=tiny_tokenizer.vocab_size))
    bundle = load_bundle(save_bundle(tmp_path / "b", model, tiny_tokenizer, {"data": "synthetic"}))
    hf = load_exported(export_hf(bundle, tmp_path / "hf"))
    check_against_transformers(bundle.model, hf, tiny_tokenizer.encode(PROMPT), knock)


@pytest.mark.parametrize("knock", KNOCKS, ids=KNOCK_IDS)
def test_a_sliding_window_model_matches_mistral(tiny_tokenizer, tmp_path, knock):
    """The export refuses a window (transformers' Llama attends over everything): Mistral's window is the oracle."""
    model = random_slm(WINDOW)
    bundle = load_bundle(save_bundle(tmp_path / "b", model, tiny_tokenizer, {"data": "synthetic"}))
    with pytest.raises(BundleError, match="sliding-window"):
        export_hf(bundle, tmp_path / "hf")
    ids = tiny_tokenizer.encode(PROMPT)
    assert len(ids) > 3 * WINDOW.sliding_window
    check_against_transformers(bundle.model, mistral_of(model), ids, knock)
    pattern = run_with_cache(model, ids).attention
    q, k = torch.meshgrid(torch.arange(len(ids)), torch.arange(len(ids)), indexing="ij")
    outside = (k > q) | (q - k >= WINDOW.sliding_window)
    assert torch.all(pattern[..., outside] == 0) and torch.all(pattern[..., ~outside] > 0)


# ---------------------------------------------------------------------------------------------------------
# Knock-outs, the lens and the names


def test_a_knock_out_equals_zeroing_the_heads_columns_of_the_output_projection():
    """A second oracle for knock-outs: the model's own forward with head h's columns of wo set to zero."""
    model = random_slm(GQA)
    ids = list(range(3, 40))
    cache = run_with_cache(model, ids, [(1, 3), (0, 1), (1, 3)])
    edited = copy.deepcopy(model)
    D = GQA.head_dim
    with torch.no_grad():
        for layer, head in [(1, 3), (0, 1)]:
            edited.layers[layer].attn.wo.weight[:, head * D : (head + 1) * D] = 0.0
        want = edited(torch.tensor([ids]))[0]
    assert cache.ablated == [(0, 1), (1, 3)]  # sorted, once each
    torch.testing.assert_close(cache.logits, want, atol=ATOL, rtol=0)
    assert torch.all(cache.head_out[1, 3] == 0) and torch.all(cache.head_out[0, 1] == 0)
    assert not torch.allclose(cache.logits, run_with_cache(model, ids).logits, atol=1e-2)


def test_the_cache_answers_transformer_lens_names_consistently():
    model = random_slm(GQA)
    ids = list(range(5, 25))
    cache = run_with_cache(model, ids)
    T, C, H = len(ids), GQA.d_model, GQA.n_head
    assert cache["hook_embed"].shape == (T, C) and cache["blocks.1.attn.hook_pattern"].shape == (H, T, T)
    assert cache["blocks.0.attn.hook_result"].shape == (T, H, C)
    assert cache["blocks.1.attn.hook_v"].shape == (T, GQA.kv_heads, GQA.head_dim)
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])
    for layer in range(GQA.n_layer):
        mid = cache[f"blocks.{layer}.hook_resid_pre"] + cache[f"blocks.{layer}.attn.hook_result"].sum(1)
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_mid"], mid)
        post = mid + cache[f"blocks.{layer}.hook_mlp_out"]
        torch.testing.assert_close(cache[f"blocks.{layer}.hook_resid_post"], post, atol=1e-5, rtol=0)
    torch.testing.assert_close(cache.attention.sum(-1), torch.ones(GQA.n_layer, H, T))
    assert torch.all(cache.attention.triu(diagonal=1) == 0)
    for name in ("blocks.2.hook_resid_post", "blocks.0.hook_nothing", "resid", "blocks.x.attn.hook_pattern"):
        with pytest.raises(KeyError):
            cache[name]
    assert all(cache[name] is not None for name in cache.names)


def test_the_lens_last_layer_is_the_model_and_prob_of_reads_the_whole_distribution():
    model = random_slm(GQA)
    ids = list(range(5, 30))
    cache = run_with_cache(model, ids)
    lens = logit_lens(model, cache, top=3)
    assert lens.probs.shape == lens.ids.shape == (GQA.n_layer + 1, len(ids), 3)
    full = cache.logits.softmax(-1)
    torch.testing.assert_close(lens.probs[-1], full.topk(3).values)
    assert torch.all(lens.probs[..., :-1] >= lens.probs[..., 1:])
    token = int(full[7].argmin())  # one far from the top
    assert lens.prob_of(GQA.n_layer, 7, token) == pytest.approx(float(full[7, token]), abs=1e-7)
    assert lens.prob_of(0, 7, int(lens.ids[0, 7, 0])) == pytest.approx(float(lens.probs[0, 7, 0]), abs=1e-6)
    with pytest.raises(IndexError):
        lens.prob_of(GQA.n_layer + 1, 0, 0)
    full_lens = logit_lens(model, cache)
    for position in (0, 7, len(ids) - 1):  # one position's lens equals the whole lens there
        probs, top_ids = lens_at(model, cache, position)
        torch.testing.assert_close(probs, full_lens.probs[:, position], atol=1e-6, rtol=0)
        assert torch.equal(top_ids[:, 0], full_lens.ids[:, position, 0])


def test_a_run_that_keeps_no_logits_computes_each_position_s_as_the_kept_ones():
    """The view's runs skip the (T, vocab) logits: a position's logits, the lens and the attribution computed
    from the last stream instead are the kept ones (to float32 rounding)."""
    model = random_slm(WINDOW)
    ids, knock = list(range(5, 40)), [(1, 3)]
    kept, lazy = run_with_cache(model, ids, knock), run_with_cache(model, ids, knock, keep_logits=False)
    assert lazy.logits is None
    for position in (0, 17, -1):
        torch.testing.assert_close(lazy.logits_at(position), kept.logits[position], atol=1e-5, rtol=0)
    want, got = logit_lens(model, kept), logit_lens(model, lazy)
    assert torch.equal(got.ids, want.ids)
    torch.testing.assert_close(got.probs, want.probs, atol=1e-6, rtol=0)
    torch.testing.assert_close(lens_at(model, lazy, 9)[0], lens_at(model, kept, 9)[0], atol=1e-6, rtol=0)
    dla = direct_logit_attribution(model, lazy, 20, 7)
    assert dla.logit == pytest.approx(float(kept.logits[20, 7]), abs=1e-5)
    assert dla.total == pytest.approx(dla.logit, abs=1e-4)


@pytest.mark.parametrize("chunk", [64, 7, 4096], ids=["five-slices", "slices-smaller-than-top", "one-slice"])
def test_the_streamed_lens_equals_a_softmax_over_the_whole_vocabulary(monkeypatch, chunk):
    """The lens goes through the vocabulary a slice at a time (its running top tokens and normalizer must carry
    over from slice to slice, the last one shorter): the same ids and probabilities as the whole softmax,
    computed in float64 from the same float32 logits."""
    from engine.inspect import lens as lens_module
    from engine.inspect.weights import dense, rms_norm

    monkeypatch.setattr(lens_module, "VOCAB_CHUNK", chunk)
    model = random_slm(GQA)  # vocabulary 300: 64-token slices are 4 whole ones and 44
    cache = run_with_cache(model, list(range(5, 45)))
    logits = cache.logits.clone()
    got = logit_lens(model, cache, top=5)
    assert torch.equal(cache.logits, logits)  # the model's logits are read, not overwritten
    with torch.no_grad():
        lens = rms_norm(model.norm, cache.resid[:-1]) @ dense(model.output).T
    stream = torch.cat([lens, cache.logits[None]])
    want_p, want_ids = stream.double().softmax(-1).topk(5)  # (L + 1, T, 5): the float32 logits' exact softmax
    assert torch.equal(got.ids, want_ids)
    torch.testing.assert_close(got.probs.double(), want_p, atol=1e-6, rtol=0)  # torch's float32 softmax: 2e-6


# ---------------------------------------------------------------------------------------------------------
# Direct logit attribution


@pytest.mark.parametrize("cfg", [GQA, WINDOW], ids=["gqa-tied", "window-untied"])
def test_the_parts_sum_to_the_logit_and_the_tokens_to_the_heads(cfg):
    """embed + every head + every MLP = the logit (frozen final-norm scale, no bias left out); the earlier tokens'
    parts sum to the heads' part; a knocked-out head has no part."""
    model = random_slm(cfg)
    ids = list(range(10, 40))
    cache = run_with_cache(model, ids, [(1, 2)])
    for position, token in [(29, 7), (12, 100), (0, 3)]:
        dla = direct_logit_attribution(model, cache, position, token)
        assert dla.heads.shape == (cfg.n_layer, cfg.n_head) and dla.mlps.shape == (cfg.n_layer,)
        assert dla.total == pytest.approx(
            dla.embed + float(dla.heads.sum()) + float(dla.mlps.sum()), abs=1e-6
        )
        assert dla.total == pytest.approx(float(cache.logits[position, token]), abs=1e-4)
        assert dla.logit == float(cache.logits[position, token]) and dla.heads[1, 2] == 0
        tokens = token_attribution(model, cache, position, token)
        assert tokens.shape == (position + 1,)
        assert float(tokens.sum()) == pytest.approx(float(dla.heads.sum()), abs=1e-4)
        by_head = token_attribution_by_head(model, cache, position, token)
        torch.testing.assert_close(by_head.sum(-1), dla.heads, atol=1e-5, rtol=0)
        if cfg.sliding_window is not None:  # tokens outside every head's window had no part
            assert torch.all(tokens[: max(0, position - cfg.sliding_window + 1)] == 0)


# ---------------------------------------------------------------------------------------------------------
# Every bundle Helium runs: int8, bf16, Helium's kernel linears, llama2.c and HeliumLM imports


def swap_linears(model: nn.Module, make) -> int:
    """Replace each child module for which make(child) gives a module; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = make(child)
            if new is not None:
                setattr(parent, name, new)
                swapped += 1
    return swapped


def same_cache(a, b) -> None:
    for name in ("attention", "resid", "head_out", "logits", "mlp_out"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=0)


def test_int8_weights_run_as_they_are_in_their_own_linears_and_in_heliums_kernels():
    model = quantize_model(random_slm(GQA))
    ids = list(range(3, 50))
    cache = run_with_cache(model, ids, [(0, 2)])
    plain = run_with_cache(model, ids)
    with torch.no_grad():  # Int8Linear in float32 computes what the inspection does
        torch.testing.assert_close(plain.logits, model(torch.tensor([ids]))[0], atol=ATOL, rtol=0)
    kernels = copy.deepcopy(model)
    assert swap_linears(kernels, lambda m: VnniLinear.from_int8(m) if type(m) is Int8Linear else None) > 0
    same_cache(run_with_cache(kernels, ids, [(0, 2)]), cache)
    dla = direct_logit_attribution(model, cache, 10, 5)
    assert dla.total == pytest.approx(float(cache.logits[10, 5]), abs=1e-4)
    assert logit_lens(model, cache).probs.shape[0] == GQA.n_layer + 1


def test_int4_weights_are_inspected_as_their_blocks_stand_for():
    """`helium inspect --model` on an int4 bundle (`models install --dtype int4`) died with a shape error: its
    packed uint8 blocks were read as a float matrix."""
    from engine.model.quant4 import quantize_model_int4

    model = quantize_model_int4(random_slm(GQA))
    ids = list(range(3, 50))
    cache = run_with_cache(model, ids, [(0, 2)])
    with torch.no_grad():  # Int4Linear in float32 computes what the inspection does
        torch.testing.assert_close(run_with_cache(model, ids).logits, model(torch.tensor([ids]))[0], atol=ATOL, rtol=0)
    dla = direct_logit_attribution(model, cache, 10, 5)
    assert dla.total == pytest.approx(float(cache.logits[10, 5]), abs=1e-4)
    assert logit_lens(model, cache).probs.shape[0] == GQA.n_layer + 1


def test_bfloat16_weights_are_inspected_in_float32_and_agree_with_the_bf16_forward():
    model = random_slm(GQA).to(torch.bfloat16)
    ids = list(range(3, 50))
    cache = run_with_cache(model, ids)
    assert cache.logits.dtype == torch.float32
    same_cache(cache, run_with_cache(copy.deepcopy(model).float(), ids))  # the same weights, read exactly
    with torch.no_grad():
        own = model(torch.tensor([ids]))[0].float()
    assert (
        own - cache.logits
    ).abs().max() < 0.1 * cache.logits.abs().max()  # bf16 rounding in the model's forward
    assert (own.argmax(-1) == cache.logits.argmax(-1)).float().mean() > 0.9
    packed = copy.deepcopy(model)

    def pack(m):
        if type(m) is nn.Linear:
            return PackedLinear.sharing(m, None)
        return Bf16DotLinear.from_linear(m) if type(m) is PackedLinear else None

    assert swap_linears(packed, pack) > 0 and swap_linears(packed, pack) > 0
    assert any(type(m) is Bf16DotLinear for m in packed.modules())
    same_cache(run_with_cache(packed, ids), cache)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-classifier", "own-classifier"])
def test_a_llama2c_import_matches_run_c_forward_in_numpy(tmp_path, shared):
    from engine.formats.llama2c import import_llama2c
    from tests.test_llama2c import (
        PARAMS,
        llama2c_forward,
        synthetic_tokenizer,
        synthetic_weights,
        write_checkpoint,
        write_tokenizer,
    )

    pieces, scores = synthetic_tokenizer()
    tok_path = write_tokenizer(tmp_path / "tok.bin", pieces, scores)
    w = synthetic_weights(len(pieces), shared, seed=1)
    model_bin = write_checkpoint(tmp_path / "model.bin", w, len(pieces), 1)
    bundle = load_bundle(import_llama2c(model_bin, tok_path, tmp_path / "bundle"))
    tokens = [1, 270, 5, 300, 261, 42, 262, 1, 299]
    cache = run_with_cache(bundle.model, tokens, [(1, 1)])
    plain = run_with_cache(bundle.model, tokens)
    np.testing.assert_allclose(
        plain.logits.double().numpy(), llama2c_forward(w, PARAMS, tokens), atol=2e-4, rtol=0
    )
    assert not torch.allclose(cache.logits, plain.logits)


def test_a_heliumlm_import_with_a_window_shorter_than_the_text(tmp_path):
    from engine.formats.heliumlm import import_heliumlm
    from tests.test_heliumlm import CFG, write_checkpoint

    model, ckpt, tok = write_checkpoint(tmp_path)
    (tmp_path / "c.json").write_text(
        json.dumps({"n_head": 8, "window_size": 12, "max_seq_len": 96, "n_layers": 2})
    )
    bundle = load_bundle(import_heliumlm(ckpt, tok, tmp_path / "b", config=tmp_path / "c.json"))
    ids = torch.randint(0, CFG.vocab_size, (60,), generator=torch.Generator().manual_seed(0)).tolist()
    cache = run_with_cache(bundle.model, ids)
    with torch.no_grad():
        torch.testing.assert_close(cache.logits, model(torch.tensor([ids]))[0], atol=ATOL, rtol=0)
    assert torch.all(cache.attention[:, :, 40, :29] == 0)  # 12 back from 40 is 29: it sees 29..40


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_heads_and_token_ids_are_one_clear_value_error():
    assert parse_head("3.5") == (3, 5) and parse_head(" 0.0 ") == (0, 0)
    for text in ("x", "3", "3.5.1", "-1.0", "1.-2", "a.b", "", "1.5e3"):
        with pytest.raises(ValueError, match="LAYER.HEAD"):
            parse_head(text)
    with pytest.raises(
        ValueError, match=r"no head 99\.0: the model has 2 layers of 4 heads \(0\.0 to 1\.3\)"
    ):
        check_heads(GQA, [(99, 0)])
    with pytest.raises(ValueError, match="no head 1.4"):
        check_heads(GQA, [(1, 4)])
    with pytest.raises(ValueError, match="no tokens"):
        check_token_ids(GQA, [])
    with pytest.raises(ValueError, match="more than the model's context of 64"):
        check_token_ids(GQA, [1] * 65)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        check_token_ids(GQA, [1, 300])
    model = random_slm(GQA)
    with pytest.raises(ValueError, match="no head"):
        run_with_cache(model, [1, 2], [(2, 0)])
    cache = run_with_cache(model, [1, 2, 3])
    with pytest.raises(IndexError):
        direct_logit_attribution(model, cache, 3, 0)
