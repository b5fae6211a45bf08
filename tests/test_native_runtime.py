"""The native decode runtime (engine/model/native.py): greedy stories token for token as the torch path tells them
(float32, int8 both ways), bf16 logits within a bf16 rounding, the same on 1 and 2 threads and on the portable C path,
odd shapes (tails, GQA ratios, head dims, rings), and the fallback with its reason."""

from __future__ import annotations

import pytest
import torch

from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model import native
from engine.model.config import ModelConfig
from engine.model.cpu_kernels import load_kernels, use_cpu_kernels
from engine.model.quant import quantize_model
from engine.model.tinyslm import TinySLM

# tails everywhere (vocab, width, hidden not multiples of 4/16/64), 3 query heads a KV head, head dim 12 (the
# portable attention), and a ring of 16 slots in a context of 40
ODD = ModelConfig(vocab_size=301, d_model=72, n_layer=2, n_head=6, n_kv_head=2, hidden_dim=100, context_length=40,
                  sliding_window=16)  # fmt: skip
# 4 query heads on one KV head, head dim 16 (the vector attention), untied head, full attention
GQA = ModelConfig(vocab_size=300, d_model=64, n_layer=2, n_head=4, n_kv_head=1, hidden_dim=176, context_length=48,
                  tie_embeddings=False)  # fmt: skip
# head dim 64, 2 query heads a KV head, peaked attention (std 0.3 below): a wrong score scale shows in the logits
WIDE = ModelConfig(vocab_size=300, d_model=128, n_layer=2, n_head=2, n_kv_head=1, hidden_dim=176, context_length=48)
SHAPES = {"odd": ODD, "gqa": GQA, "wide": WIDE}


def runnable() -> None:
    if load_kernels("auto").lib is None:
        pytest.skip(f"Helium's library does not build here: {load_kernels('auto').why_not}")


def build(cfg: ModelConfig, weights: str, std: float = 0.3) -> TinySLM:
    """A random model: float32, bf16, int8 (weight-only, as small models run) or int8-vnni (int8 activations too).
    Weights of std 0.3 (the default init's 0.02 makes a tied model repeat its input token) give stories that branch."""
    torch.manual_seed(0)
    model = TinySLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    if weights.startswith("int8"):
        quantize_model(model)
    if weights in ("bf16", "int8-bf16"):
        model = model.to(torch.bfloat16)
    if weights == "int8-vnni":
        use_cpu_kernels(model, min_params=0)
    return model


class _Ids:
    """A tokenizer of token ids: the prompt is given as ids."""

    bos_id = eos_id = None

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def encode(self, text: str) -> list[int]:
        return self.ids


def greedy(model: TinySLM, monkeypatch, mode: str, tokens: int = 100, batch: int = 1) -> list[list[int]]:
    """Greedy ids (a repetition penalty keeps random weights from repeating one token) from a fixed prompt: mode 'off' (the torch path), 'auto' or 'scalar' (the native runtime)."""
    monkeypatch.setenv(native.NATIVE_ENV, mode)
    prompt = list(range(3, 11))
    gen = Generator(model, _Ids(prompt))
    assert (gen.native is None) == (mode == "off")
    params = SamplingParams(max_new_tokens=tokens, temperature=0, repetition_penalty=1.5, stop_at_eos=False)
    return torch.stack([ids for ids, _ in gen.tokens(prompt, params, batch)], dim=1).tolist()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weights", ["float32", "int8", "int8-vnni"])
def test_greedy_stories_equal_the_torch_path_past_the_window_and_the_context(shape, weights, monkeypatch, one_thread):
    runnable()
    model = build(SHAPES[shape], weights)
    torch_ids = greedy(model, monkeypatch, "off")  # 100 tokens: the context (40, 48) slides twice
    assert greedy(model, monkeypatch, "auto") == torch_ids
    assert len(set(torch_ids[0])) > 5  # a story, not one token repeated


@pytest.mark.parametrize(
    "shape, weights, ulps",
    [("odd", "bf16", 1), ("gqa", "bf16", 1), ("wide", "bf16", 1), ("gqa", "int8-bf16", 2)],  # PyTorch's int8 kernel rounds its own way
)  # (and it crashes on rows of a width that is not a multiple of 16, as the odd shape's: not run there)
def test_bf16_logits_are_within_a_bf16_rounding_of_the_torch_path(shape, weights, ulps, one_thread):
    runnable()
    std = 0.3 if shape == "wide" else 0.1  # wide: peaked attention, so its scores' scale shows in the logits
    model = build(SHAPES[shape], weights, std=std)
    model.setup_cache(1)
    reference = build(SHAPES[shape], weights, std=std)
    if weights == "bf16":  # Helium's bf16 matmuls, as models over 20M parameters decode (int8: PyTorch's kernel)
        use_cpu_kernels(reference, min_params=0)
    reference.setup_cache(1)
    decoder = native.native_decoder(model)
    assert decoder is not None
    torch.manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, 30))
    with torch.inference_mode():
        model(ids[:, :4], torch.arange(4))
        reference(ids[:, :4], torch.arange(4))
        for pos in range(4, 30):
            got = decoder.step(ids[:, pos : pos + 1], pos).float()
            want = reference(ids[:, pos : pos + 1], torch.tensor([pos]))[:, -1].float()
            assert got.dtype == torch.float32 and want.dtype == torch.float32
            assert (got - want).abs().max() <= want.abs().max() * ulps * 2**-7  # bf16 ulps of the largest logit


@pytest.mark.parametrize("weights", ["float32", "bf16", "int8", "int8-vnni"])
def test_one_and_two_threads_and_the_portable_path_agree(weights, monkeypatch):
    runnable()
    model = build(ODD, weights)
    model.setup_cache(2)
    decoder = native.native_decoder(model)
    scalar = native.NativeDecoder(model, decoder.lib, scalar=True)
    tokens = torch.tensor([[5], [7]])
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]] * 2), torch.arange(3))
        for pos in range(3, 30):  # past the ring of 16
            one = decoder.step(tokens, pos, threads=1)
            two = decoder.step(tokens, pos, threads=2)
            portable = scalar.step(tokens, pos, threads=2)
            assert torch.equal(one, two)  # each value is computed by one thread, whichever
            torch.testing.assert_close(portable.float(), one.float(), atol=2e-2 if weights == "bf16" else 1e-4, rtol=0)
            tokens = one.argmax(-1, keepdim=True)


def test_the_portable_path_tells_the_same_greedy_story(monkeypatch, one_thread):
    runnable()
    model = build(GQA, "int8-vnni")
    assert greedy(model, monkeypatch, "scalar", tokens=60) == greedy(model, monkeypatch, "auto", tokens=60)


def test_rows_of_a_batch_each_tell_the_torch_story(monkeypatch, one_thread):
    runnable()
    model = build(ODD, "float32")
    assert greedy(model, monkeypatch, "auto", tokens=50, batch=3) == greedy(model, monkeypatch, "off", 50, batch=3)


def test_it_says_why_it_does_not_run(monkeypatch, tmp_path):
    model = build(GQA, "float32")
    monkeypatch.setenv(native.NATIVE_ENV, "off")
    assert native.native_status(model) == "HELIUM_NATIVE_DECODE=off" and native.native_decoder(model) is None
    monkeypatch.setenv(native.NATIVE_ENV, "fast")
    with pytest.raises(ValueError, match="HELIUM_NATIVE_DECODE='fast' is not one of auto, scalar, off"):
        native.native_status(model)
    monkeypatch.setenv(native.NATIVE_ENV, "auto")
    monkeypatch.setenv("HELIUM_CPU_KERNELS", "torch")
    assert native.native_status(model) == "HELIUM_CPU_KERNELS=torch"
    monkeypatch.delenv("HELIUM_CPU_KERNELS")
    model.layers[1].mlp.w2 = torch.nn.Sequential(model.layers[1].mlp.w2)  # a wrapper it does not know
    assert native.native_status(model) == "layers.1.w2 is a Sequential the native runtime cannot read"
    assert Generator(model, _Ids([1])).native is None  # and the torch path tells the story


def test_without_a_compiler_the_torch_path_runs_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("HELIUM_CACHE", str(tmp_path / "cache"))
    load_kernels.cache_clear()
    try:
        model = build(GQA, "float32")
        assert "no C compiler" in native.native_status(model)
        assert Generator(model, _Ids([1])).native is None
    finally:
        load_kernels.cache_clear()


def test_bad_input_is_one_clear_error(monkeypatch):
    runnable()
    model = build(GQA, "float32")
    decoder = native.native_decoder(model)
    with pytest.raises(ValueError, match="no KV cache"):
        decoder.step(torch.tensor([[1]]), 0)
    model.setup_cache(1)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="a token outside the vocabulary"):
            decoder.step(torch.tensor([[300]]), 0)
        with pytest.raises(ValueError, match="2 rows for a KV cache of 1"):
            decoder.step(torch.tensor([[1], [2]]), 0)
        with pytest.raises(ValueError, match="position 48 is past the KV cache's 48 slots"):
            decoder.step(torch.tensor([[1]]), 48)


def test_bench_decode_says_which_runtime_ran(monkeypatch):
    from benchmarks.decode import bench_decode

    runnable()
    args = dict(preset="tiny", device="cpu", dtype="float32", prompt_tokens=8, new_tokens=8, repeats=1)
    result = bench_decode(**args)
    assert result.native_decode == "on" and result.cpu_kernel == "native (float32, attention avx2)"
    monkeypatch.setenv(native.NATIVE_ENV, "off")
    assert bench_decode(**args).native_decode == "HELIUM_NATIVE_DECODE=off"


def test_one_generator_follows_its_cache_across_batch_sizes_and_threads(monkeypatch):
    runnable()
    model = build(GQA, "int8-vnni")
    monkeypatch.setenv(native.NATIVE_ENV, "off")
    reference = Generator(build(GQA, "int8-vnni"), _Ids([3, 4, 5]))
    monkeypatch.setenv(native.NATIVE_ENV, "auto")
    gen = Generator(model, _Ids([3, 4, 5]))
    params = SamplingParams(max_new_tokens=30, temperature=0, repetition_penalty=1.5, stop_at_eos=False)
    before = torch.get_num_threads()
    try:
        for batch, threads in ((1, 1), (2, 2), (1, 2)):  # a new KV cache each time the batch changes
            torch.set_num_threads(threads)
            got = [ids.tolist() for ids, _ in gen.tokens([3, 4, 5], params, batch)]
            assert got == [ids.tolist() for ids, _ in reference.tokens([3, 4, 5], params, batch)]
    finally:
        torch.set_num_threads(before)


def test_compile_is_a_no_op_that_says_so_where_the_native_runtime_decodes(tiny_bundle, monkeypatch):
    """With the native runtime there is no torch step to compile: --compile compiles nothing, and says why."""
    from engine.generation.session import NATIVE_COMPILE_NOTE, open_session

    session = open_session(str(tiny_bundle), device="cpu", dtype="float32", compile=True)
    assert session.generator.native is not None
    assert not session.compile and session.compile_note == NATIVE_COMPILE_NOTE
    assert session.generator._decode.compiled is None and session.compile_now() == 0.0
    monkeypatch.setenv("HELIUM_NATIVE_DECODE", "off")
    session = open_session(str(tiny_bundle), device="cpu", dtype="float32", compile=True)
    assert session.compile and session.compile_note is None


def test_tell_compile_where_it_does_nothing_reports_nothing_compiled(tiny_bundle):
    import json

    from typer.testing import CliRunner

    from helium_tui.cli import app

    args = ["tell", "Lily had", "--model", str(tiny_bundle), "--dtype", "float32", "--max-tokens", "4", "--compile"]
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["compiled"] is False and "does nothing here" in r.stderr  # it said true
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "compiling took" not in r.stderr, r.stderr
