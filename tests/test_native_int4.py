"""int4 (Q4_0) in the native decode runtime (engine/model/csrc/q4_mm.c): logits and greedy stories as a torch reference
that rounds activations the same way (int8 per block of 32), the portable C path, 1 and 2 threads, odd shapes."""

from __future__ import annotations

import ctypes

import pytest
import torch
import torch.nn.functional as F

from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model import native
from engine.model.config import ModelConfig
from engine.model.cpu_kernels import load_kernels
from engine.model.quant4 import (
    Int4Linear,
    dequantize_q4_0,
    q8_0_activations,
    quantize_model_int4,
    quantize_q4_0,
)
from engine.model.tinyslm import TinySLM
from tests.test_native_runtime import _Ids, runnable

# width of 3 blocks (no whole group of 4: the kernel's tail), hidden of 5 (a group and a tail), vocab 301 (a last
# block of 1 row), 3 query heads a KV head, a ring of 16 slots in a context of 40; tied head (the embedding's blocks)
ODD = ModelConfig(vocab_size=301, d_model=96, n_layer=2, n_head=6, n_kv_head=2, hidden_dim=160, context_length=40,
                  sliding_window=16)  # fmt: skip
# 4 query heads on one KV head, untied head; hidden 100 is not whole blocks: w2 stays float32 beside int4 matrices
MIXED = ModelConfig(vocab_size=300, d_model=64, n_layer=2, n_head=4, n_kv_head=1, hidden_dim=100, context_length=48,
                    tie_embeddings=False)  # fmt: skip
SHAPES = {"odd": ODD, "mixed": MIXED}
# Activations are rounded to int8: a value within a float32 rounding of a half step can round either way on two paths
# that sum in different orders, which moves a logit by about one activation step times a weight (~1% of the largest
# logit here). Such flips are rare (0-1 in 40 steps of these shapes); every other step agrees to float32 rounding.
FLOAT_ROUNDING, FLIP = 1e-5, 0.05  # of the largest logit's magnitude
MOST = 0.8  # of the steps at least agree to float rounding


def build(cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> TinySLM:
    """A random int4 model (weights of std 0.3, as tests/test_native_runtime.py, so that stories branch)."""
    torch.manual_seed(0)
    model = TinySLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return quantize_model_int4(model).to(dtype)


def _q8_forward(self: Int4Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(q8_0_activations(x).to(x.dtype), dequantize_q4_0(self.weight, self.weight_scale).to(x.dtype))


def round_activations(model: TinySLM) -> TinySLM:
    """model's torch path made to round its int4 matmuls' activations as the native runtime does, in place: the
    reference (the native runtime reads the weights, not these forwards)."""
    for module in model.modules():
        if isinstance(module, Int4Linear):
            module.forward = _q8_forward.__get__(module)
    return model


def assert_steps_agree(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    pairs = zip(got, want, strict=True)
    errors = [((g.float() - w.float()).abs().max() / w.float().abs().max()).item() for g, w in pairs]
    assert max(errors) <= FLIP, errors
    assert sum(e <= FLOAT_ROUNDING for e in errors) >= MOST * len(errors), errors


def test_it_runs_natively_and_says_int4():
    runnable()
    model = build(ODD)
    assert native.native_status(model) == ""
    assert "int4 q4_0" in native.native_decoder(model).describe()


@pytest.mark.parametrize("shape", SHAPES)
def test_logits_equal_a_reference_that_rounds_activations_the_same_way(shape, one_thread):
    runnable()
    model, reference = build(SHAPES[shape]), round_activations(build(SHAPES[shape]))
    decoder = native.native_decoder(model)
    model.setup_cache(1)
    reference.setup_cache(1)
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, 45))  # past the ring of 16 and the odd context of 40
    got, want = [], []
    with torch.inference_mode():
        for pos in range(min(45, model.config.context_length)):
            same_history(reference, model)  # else one flip, kept in the KV cache, would show in every later step
            want.append(reference(ids[:, pos : pos + 1], torch.tensor([pos]))[:, -1])
            got.append(decoder.step(ids[:, pos : pos + 1], pos))
    assert_steps_agree(got, want)


def same_history(reference: TinySLM, model: TinySLM) -> None:
    """The reference's KV cache set to the model's (what the native steps wrote so far)."""
    for ref_layer, layer in zip(reference.layers, model.layers, strict=True):
        ref_layer.attn.cache.k.copy_(layer.attn.cache.k)
        ref_layer.attn.cache.v.copy_(layer.attn.cache.v)


def greedy(model: TinySLM, monkeypatch, mode: str, tokens: int = 100) -> list[int]:
    monkeypatch.setenv(native.NATIVE_ENV, mode)
    prompt = list(range(3, 11))
    gen = Generator(model, _Ids(prompt))
    assert (gen.native is None) == (mode == "off")
    params = SamplingParams(max_new_tokens=tokens, temperature=0, repetition_penalty=1.5, stop_at_eos=False)
    return [int(ids[0]) for ids, _ in gen.tokens(prompt, params)]


@pytest.mark.parametrize("shape", SHAPES)
def test_greedy_stories_equal_the_reference_past_the_window_and_the_context(shape, monkeypatch, one_thread):
    runnable()
    model = round_activations(build(SHAPES[shape]))  # its prefill on the torch path rounds as the reference does
    want = greedy(model, monkeypatch, "off")
    assert greedy(model, monkeypatch, "auto") == want
    assert len(set(want)) > 5  # a story, not one token repeated


def test_logits_stay_near_the_weight_only_torch_path(one_thread):
    """Against the torch int4 path (float activations): the int8 activations' error, a few percent at most."""
    runnable()
    model, torch_path = build(MIXED), build(MIXED)
    decoder = native.native_decoder(model)
    model.setup_cache(1)
    torch_path.setup_cache(1)
    ids = torch.randint(0, MIXED.vocab_size, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        for pos in range(20):
            got = decoder.step(ids[:, pos : pos + 1], pos)
            want = torch_path(ids[:, pos : pos + 1], torch.tensor([pos]))[:, -1]
            assert (got - want).abs().max() <= 0.05 * want.abs().max()
            assert F.cosine_similarity(got, want).item() > 0.999


def test_bf16_logits_are_near_the_reference(one_thread):
    """bf16 activations: the torch path also rounds the dequantized weights to bf16, C multiplies them exact."""
    runnable()
    model, reference = build(ODD, torch.bfloat16), round_activations(build(ODD, torch.bfloat16))
    decoder = native.native_decoder(model)
    assert decoder.dtype == torch.bfloat16
    model.setup_cache(1)
    reference.setup_cache(1)
    ids = torch.randint(0, ODD.vocab_size, (1, 24), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        for pos in range(24):
            got = decoder.step(ids[:, pos : pos + 1], pos).float()
            want = reference(ids[:, pos : pos + 1], torch.tensor([pos]))[:, -1].float()
            assert (got - want).abs().max() <= 0.05 * want.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_and_two_threads_and_the_portable_path_agree(dtype):
    runnable()
    model = build(ODD, dtype)
    model.setup_cache(2)
    decoder = native.native_decoder(model)
    scalar = native.NativeDecoder(model, decoder.lib, scalar=True)
    tokens, ones, portables = torch.tensor([[5], [7]]), [], []
    with torch.inference_mode():
        for pos in range(30):  # past the ring of 16
            one = decoder.step(tokens, pos, threads=1)
            two = decoder.step(tokens, pos, threads=2)
            portables.append(scalar.step(tokens, pos, threads=2))
            assert torch.equal(one, two)  # each value is computed by one thread, whichever
            ones.append(one)
            tokens = one.argmax(-1, keepdim=True)
    if dtype == torch.float32:
        assert_steps_agree(portables, ones)
    else:  # sums in another order, rounded to bf16: a bf16 rounding of the largest logit, or a flip
        pairs = zip(portables, ones, strict=True)
        assert all((p.float() - o.float()).abs().max() <= FLIP * o.float().abs().max() for p, o in pairs)


def test_the_portable_path_tells_the_same_greedy_story(monkeypatch, one_thread):
    runnable()
    model = round_activations(build(MIXED))
    assert greedy(model, monkeypatch, "scalar", tokens=60) == greedy(model, monkeypatch, "auto", tokens=60)


def test_every_kernel_path_multiplies_as_the_reference():
    """AVX512-VNNI, AVX-VNNI (laptops; 2 blocks a step, a last group block by block) and the portable C, each on
    widths of 1 to 36 blocks (whole groups of 4 and tails) and 7 rows (a block of 4, then 3 one by one)."""
    runnable()
    rows = load_kernels("auto").lib.helium_q4_rows
    rows.restype = ctypes.c_int
    rows.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                     ctypes.c_void_p]  # fmt: skip
    ran = set()
    gen = torch.Generator().manual_seed(4)
    for k in (32, 96, 160, 512, 1152):
        w = torch.randn(7, k, generator=gen)
        x = torch.randn(k, generator=gen) * torch.rand(k, generator=gen) * 4
        x[:32] = 0  # an all-zero block: scale 0
        packed, scales = quantize_q4_0(w)
        want = (q8_0_activations(x).double() @ dequantize_q4_0(packed, scales).double().T).float()
        for path in (0, 1, 2):  # portable C, AVX-VNNI, AVX512-VNNI
            y = torch.empty(7)
            status = rows(path, x.data_ptr(), k, packed.data_ptr(), scales.data_ptr(), 7, y.data_ptr())
            if status == -1:
                continue  # this CPU (or compiler) has no such path
            assert status == 0
            ran.add(path)
            torch.testing.assert_close(y, want, atol=1e-5 * want.abs().max().item(), rtol=0)
    assert 0 in ran
