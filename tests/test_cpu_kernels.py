"""Helium's CPU decode kernels (engine/model/csrc/cpu_mm.c): int8 exact against an integer reference on both VNNI
paths, bf16 within float32 summation of the exact products, the same on any thread count, inside models
(eager and compiled), and a clear fallback where they cannot run."""

from __future__ import annotations

import copy

import pytest
import torch

import engine.model.cpu_kernels as cpu_kernels
from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model.cpu_kernels import (
    Bf16DotLinear,
    VnniLinear,
    bf16_mm,
    decode_attention,
    int8_mm,
    kernel_status,
    kernels_in_use,
    load_kernels,
    use_cpu_kernels,
)
from engine.model.quant import Int8Linear, quantize_model, quantize_rows
from tests.stories import told

PATHS = ("vnni512", "vnni256")


def runnable(choice: str = "auto", bf16: bool = False) -> None:
    """Skip (with the reason) where this machine cannot run the int8 kernel path (bf16: the bf16 kernel)."""
    k = load_kernels(choice)
    if not (k.bf16 if bf16 else k.int8_path):
        pytest.skip(f"Helium's {'bf16' if bf16 else choice} kernel cannot run here: {k.why_not or 'no AVX512-BF16'}")


def reference(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The kernel's arithmetic in torch: each row of x to int8 with scale max|x|/127 (round half to even),
    exact integer dot products, then (sx * ws) * dot in float32, in x's dtype."""
    xf = x.float()
    amax = xf.abs().amax(dim=1)
    sx = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    xq = torch.round(xf * (1 / sx)[:, None])
    dots = (xq.double() @ q.double().T).float()  # integers below 2^24: exact
    return ((sx[:, None] * scale[None, :]) * dots).to(x.dtype)


@pytest.fixture
def kernel_path(monkeypatch, request):
    monkeypatch.setenv(cpu_kernels.KERNEL_ENV, request.param)
    runnable(request.param)
    return request.param


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n, k, m", [(512, 512, 1), (1152, 512, 1), (512, 1152, 3), (7, 100, 2), (13, 33, 15), (4, 64, 1)])
def test_the_kernel_equals_an_exact_integer_reference(kernel_path, dtype, n, k, m):
    torch.manual_seed(n * k + m)
    q, scale = quantize_rows(torch.randn(n, k))
    x = (torch.randn(m, k) * torch.rand(m, 1) * 4).to(dtype)
    x[0, 0] = 0.5  # a tie for the rounding (x * 127 / max is not always representable: exact ties are rare)
    got = int8_mm(x, q, scale, q.sum(dim=1, dtype=torch.int32))
    assert got.dtype == dtype and got.shape == (m, n)
    assert torch.equal(got, reference(x, q, scale))


@pytest.mark.parametrize("kernel_path", PATHS, indirect=True)
def test_an_all_zero_row_and_extreme_weights(kernel_path):
    q = torch.tensor([[127] * 70, [-127] * 70, [0] * 70], dtype=torch.int8)
    scale = torch.tensor([0.5, 2.0, 1.0])
    x = torch.stack([torch.zeros(70), torch.full((70,), -3.0), torch.linspace(-1, 1, 70)])
    got = int8_mm(x, q, scale, q.sum(dim=1, dtype=torch.int32))
    assert torch.equal(got, reference(x, q, scale))
    assert torch.equal(got[0], torch.zeros(3)) and got[1, 0] == -3.0 * 0.5 * 127 * 70


def test_threads_give_the_same_result(monkeypatch):
    runnable()
    q, scale = quantize_rows(torch.randn(1001, 320))
    x = torch.randn(2, 320)
    sums = q.sum(dim=1, dtype=torch.int32)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = int8_mm(x, q, scale, sums), bf16_mm(x.bfloat16(), q.bfloat16()) if load_kernels().bf16 else None
        torch.set_num_threads(2)
        two = int8_mm(x, q, scale, sums), bf16_mm(x.bfloat16(), q.bfloat16()) if load_kernels().bf16 else None
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and (one[1] is None or torch.equal(one[1], two[1]))


@pytest.mark.parametrize("n, k, m", [(512, 512, 1), (2304, 512, 1), (512, 1152, 3), (7, 100, 2), (13, 33, 15)])
def test_the_bf16_kernel_sums_the_exact_products_in_float32(n, k, m):
    runnable(bf16=True)
    torch.manual_seed(n + k + m)
    w, x = torch.randn(n, k).bfloat16(), torch.randn(m, k).bfloat16()
    exact = x.double() @ w.double().T
    got = bf16_mm(x, w)
    assert got.dtype == torch.bfloat16 and got.shape == (m, n)
    # float32 sums (any order) then one rounding to bf16: within one bf16 step of the exact value
    bound = exact.abs().amax() * 2**-24 * k + exact.abs() * 2**-8
    assert ((got.double() - exact).abs() <= bound).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 7, 33, 40])
def test_decode_attention_equals_masked_sdpa_over_the_written_slots(dtype, n):
    runnable()
    torch.manual_seed(n)
    q = torch.randn(2, 4, 1, 16).to(dtype)  # batch 2, 4 query heads sharing 2 cache heads, head_dim 16
    k, v = torch.randn(2, 2, 40, 16).to(dtype), torch.randn(2, 2, 40, 16).to(dtype)
    mask = (torch.arange(40) < n)[None, :]
    want = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True
    )
    got = decode_attention(q, k, v, torch.tensor([n - 1]))
    assert got.dtype == dtype and got.shape == q.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    else:  # float32 inside, one rounding to bf16 at the end
        assert ((got.float() - want).abs() <= want.abs() * 2**-8 + 1e-6).all()
    # past the end of a ring (position >= slots) every slot is seen
    assert torch.equal(decode_attention(q, k, v, torch.tensor([100])), decode_attention(q, k, v, torch.tensor([39])))


@pytest.mark.parametrize("window", [None, 8])
def test_cached_decoding_through_the_kernels_equals_a_full_recompute(tiny_model, window):
    from dataclasses import replace

    from engine.model.tinyslm import TinySLM

    runnable()
    model = TinySLM(replace(tiny_model.config, sliding_window=window)).eval()
    model.load_state_dict(tiny_model.state_dict())
    ids = torch.randint(0, model.config.vocab_size, (1, 30))
    with torch.inference_mode():
        full = model(ids).float()
        assert use_cpu_kernels(model, min_params=0) == model.config.n_layer  # float32: the attention layers only
        model.setup_cache(1, 64)
        model(ids[:, :6], torch.arange(6))
        steps = [model(ids[:, t : t + 1], torch.tensor([t]))[:, -1].float() for t in range(6, 30)]
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, 6:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_the_kernels_linears_keep_the_state_dict_and_the_tied_head(tiny_model, weights):
    runnable(bf16=weights == "bf16")
    model = copy.deepcopy(tiny_model)
    model = quantize_model(model) if weights == "int8" else model.to(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    changed = use_cpu_kernels(model, min_params=0)
    kind = VnniLinear if weights == "int8" else Bf16DotLinear
    linears = sum(isinstance(m, torch.nn.Linear | Int8Linear) for m in model.modules())
    assert changed == linears + model.config.n_layer and linears > 0  # and each layer's attention
    assert all(type(m) is kind for m in model.modules() if isinstance(m, torch.nn.Linear | Int8Linear))
    assert model.output.weight is model.tok_embeddings.weight  # still tied
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert kernels_in_use(model) == ("vnni512" if weights == "int8" else "avx512-bf16") + " + decode attention"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vnni_logits_stay_within_the_int8_bound(tiny_model, dtype):
    from tests.test_quant import MAX_ERR_OF_STD

    runnable()
    idx = torch.randint(0, tiny_model.config.vocab_size, (1, 12))  # 12 rows: the kernel's side of the threshold
    with torch.inference_mode():
        want = tiny_model(idx).float()
        model = quantize_model(copy.deepcopy(tiny_model)).to(dtype)
        assert use_cpu_kernels(model, min_params=0) > 0
        got = model(idx).float()
    assert ((got - want).abs().amax(dim=-1) / want.std(dim=-1)).max() <= MAX_ERR_OF_STD


@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_the_compiled_step_runs_the_kernels_and_tells_the_eager_story(tiny_model, tiny_tokenizer, one_thread, weights):
    runnable(bf16=weights == "bf16")
    model = copy.deepcopy(tiny_model)
    model = quantize_model(model) if weights == "int8" else model.to(torch.bfloat16)
    assert use_cpu_kernels(model, min_params=0) > 0
    params = SamplingParams(max_new_tokens=24, temperature=0, stop_at_eos=False)
    eager = told(Generator(model, tiny_tokenizer), "Once upon a time", params).text
    compiled = Generator(model, tiny_tokenizer, compile=True)
    assert told(compiled, "Once upon a time", params).text == eager
    assert compiled.compile_failed is None


def test_small_models_keep_torch_kernels(tiny_model):
    runnable()
    model = quantize_model(copy.deepcopy(tiny_model))
    assert use_cpu_kernels(model) == 0
    assert kernels_in_use(model) == "torch (models under 20M parameters are bound by the cost of each call)"


def test_torch_or_no_compiler_falls_back_with_the_reason(tiny_model, monkeypatch, tmp_path):
    monkeypatch.setenv(cpu_kernels.KERNEL_ENV, "torch")
    why = "torch (HELIUM_CPU_KERNELS=torch)"
    assert kernel_status() == f"int8 {why}, bf16 {why}"
    int8 = quantize_model(copy.deepcopy(tiny_model))
    assert use_cpu_kernels(int8, min_params=0) == 0 and kernels_in_use(int8) == why
    assert use_cpu_kernels(copy.deepcopy(tiny_model).to(torch.bfloat16), min_params=0) == 0
    monkeypatch.setenv(cpu_kernels.KERNEL_ENV, "auto")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("HELIUM_CACHE", str(tmp_path / "cache"))
    load_kernels.cache_clear()
    try:
        why = f"torch (no C compiler ({tmp_path / 'no-such-cc'}) to build Helium's CPU kernels)"
        assert kernel_status() == f"int8 {why}, bf16 {why}"
    finally:
        load_kernels.cache_clear()
    monkeypatch.setenv(cpu_kernels.KERNEL_ENV, "fast")
    with pytest.raises(ValueError, match="HELIUM_CPU_KERNELS='fast' is not one of auto, vnni512, vnni256, torch"):
        kernel_status()


def test_a_compiler_without_avx_vnni_still_builds_the_avx512_path(monkeypatch, tmp_path):
    import shutil

    if shutil.which("gcc") is None or load_kernels().int8_path != 2:
        pytest.skip("needs gcc and an AVX512-VNNI CPU")
    cc = tmp_path / "old-cc"  # gcc that refuses AVX-VNNI, as gcc 10 does
    cc.write_text(
        '#!/bin/sh\ncase "$*" in *HELIUM_NO_AVX_VNNI*|--version) exec gcc "$@";; esac\n'
        'echo "error: attribute(target(\"avxvnni\")) is unknown" >&2; exit 1\n'
    )
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setenv("HELIUM_CACHE", str(tmp_path / "cache"))
    load_kernels.cache_clear()
    try:
        assert load_kernels("auto").int8 == "vnni512"
        assert load_kernels("vnni256").int8 == "torch (the C compiler could not build the vnni256 path)"
    finally:
        load_kernels.cache_clear()


def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    from engine.model.kernel_build import compiler, library_path, load_library

    if load_kernels().lib is None:
        pytest.skip(f"Helium's CPU kernels do not build here: {load_kernels().why_not}")
    monkeypatch.setenv("HELIUM_CACHE", str(tmp_path))
    load_library()
    first = library_path(compiler())
    stamp = first.stat().st_mtime_ns
    load_library()
    assert first.stat().st_mtime_ns == stamp  # loaded from the cache, not built again
    # the library and its recorded sha256, private, and no temporary files left
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([first.name, first.with_suffix(".sha256").name])
    assert all(p.stat().st_mode & 0o777 in (0o700, 0o600) for p in (first.parent, *first.parent.iterdir()))


def test_a_bad_kernel_choice_is_one_line_at_the_cli(tiny_bundle, monkeypatch):
    from typer.testing import CliRunner

    from helium_tui.cli import app

    monkeypatch.setenv(cpu_kernels.KERNEL_ENV, "fast")
    result = CliRunner().invoke(app, ["tell", "--model", str(tiny_bundle), "--quantize", "int8", "Hi"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "helium: error: HELIUM_CPU_KERNELS='fast' is not one of auto, vnni512, vnni256, torch"
    ]


def test_the_default_model_tells_the_int8_golden_story(one_thread):
    # Quantizing the activations too moves the default model within its near-tie at character 312 (see
    # test_quant.test_default_model_int8_greedy_story): eager float32 tells the int8 golden story exactly.
    from engine.bundles.bundle import load_bundle
    from engine.paths import assets_dir
    from tests.test_default_model import GOLDEN_FILE, GOLDEN_PROMPT

    runnable()
    bundle = load_bundle(assets_dir() / "helium-default", quantize="int8")
    assert use_cpu_kernels(bundle.model, min_params=0) > 0  # it decodes faster on PyTorch's: a test of the kernels
    params = SamplingParams(max_new_tokens=120, temperature=0, repetition_penalty=1.0)
    story = GOLDEN_PROMPT + told(Generator(bundle.model, bundle.tokenizer), GOLDEN_PROMPT, params).text
    assert story == (GOLDEN_FILE.parent / "default_greedy_int8.txt").read_text(encoding="utf-8")


def _int8_args(n: int = 8, k: int = 16) -> dict[str, torch.Tensor]:
    q, scale = quantize_rows(torch.randn(n, k))
    return {"x": torch.randn(2, k), "weight": q, "scale": scale, "row_sum": q.sum(dim=1, dtype=torch.int32)}


def _attention_args(d: int = 16) -> dict[str, torch.Tensor]:
    return {"q": torch.randn(1, 4, 1, d), "k": torch.randn(1, 2, 8, d), "v": torch.randn(1, 2, 8, d),
            "input_pos": torch.tensor([3])}  # fmt: skip


@pytest.mark.parametrize(
    "op, change, message",
    [
        (bf16_mm, {"x": torch.randn(2, 64).bfloat16()}, r"shapes do not fit: x \(2, 64\) @ weight \(8, 16\)\^T"),
        (bf16_mm, {"weight": torch.randn(16, 8).bfloat16().T}, r"weight is not contiguous \(shape \(8, 16\)"),
        (bf16_mm, {"x": torch.randn(2, 16)}, "x is torch.float32, not torch.bfloat16"),
        (bf16_mm, {"weight": torch.randn(8, 16)}, "weight is torch.float32, not torch.bfloat16"),
        (bf16_mm, {"x": torch.randn(16).bfloat16()}, r"x has shape \(16,\), not 2 dimensions"),
        (bf16_mm, {"weight": torch.empty(8, 16, dtype=torch.bfloat16, device="meta")}, "weight is on meta, not the CPU"),
        (int8_mm, {"x": torch.randn(2, 64)}, r"shapes do not fit: x \(2, 64\) @ weight \(8, 16\)\^T"),
        (int8_mm, {"weight": torch.zeros(16, 8, dtype=torch.int8).T}, "weight is not contiguous"),
        (int8_mm, {"weight": torch.zeros(8, 16)}, "weight is torch.float32, not torch.int8"),
        (int8_mm, {"x": torch.randn(2, 16).half()}, "x is torch.float16, not torch.float32 or torch.bfloat16"),
        (int8_mm, {"scale": torch.ones(7)}, r"scale \(7,\) and row_sum \(8,\) \(N,\)"),
        (int8_mm, {"scale": torch.ones(8).half()}, "scale is torch.float16, not torch.float32"),
        (int8_mm, {"scale": torch.ones(16)[::2]}, "scale is not contiguous"),
        (int8_mm, {"row_sum": torch.zeros(8, dtype=torch.int64)}, "row_sum is torch.int64, not torch.int32"),
        (int8_mm, {"row_sum": torch.zeros(9, dtype=torch.int32)}, r"row_sum \(9,\) \(N,\)"),
        (decode_attention, {"q": torch.randn(1, 4, 1, 3), "k": torch.randn(1, 2, 8, 3), "v": torch.randn(1, 2, 8, 3)},
         "head dim 3 is not a multiple of 8 up to 512"),  # fmt: skip
        (decode_attention, {"q": torch.randn(1, 4, 1, 1024), "k": torch.randn(1, 2, 8, 1024),
                            "v": torch.randn(1, 2, 8, 1024)}, "head dim 1024 is not"),  # fmt: skip
        (decode_attention, {"q": torch.randn(1, 4, 2, 16)}, r"shapes do not fit: q \(1, 4, 2, 16\) \(B, H, 1, D\)"),
        (decode_attention, {"q": torch.randn(1, 3, 1, 16)}, "H a multiple of H_kv"),
        (decode_attention, {"q": torch.randn(2, 4, 1, 16)}, "shapes do not fit"),
        (decode_attention, {"v": torch.randn(1, 2, 9, 16)}, "shapes do not fit"),
        (decode_attention, {"k": torch.randn(1, 2, 0, 16), "v": torch.randn(1, 2, 0, 16)}, "S > 0"),
        (decode_attention, {"k": torch.randn(1, 2, 16, 8).transpose(2, 3)}, "k is not contiguous"),
        (decode_attention, {"v": torch.randn(1, 2, 8, 16).bfloat16()}, "v is torch.bfloat16, not torch.float32"),
        (decode_attention, {"q": torch.randn(1, 4, 1, 16).half(), "k": torch.randn(1, 2, 8, 16).half(),
                            "v": torch.randn(1, 2, 8, 16).half()}, "q is torch.float16"),  # fmt: skip
        (decode_attention, {"input_pos": torch.tensor([3.0])}, "input_pos must be one integer position"),
        (decode_attention, {"input_pos": torch.tensor([3, 4])}, "input_pos must be one integer position"),
        (decode_attention, {"input_pos": torch.tensor([-2])}, "input_pos -2 is negative"),
    ],
)
def test_each_op_checks_its_tensors_before_c_reads_them(op, change, message):
    runnable()
    args = {**(_int8_args() if op is int8_mm else _attention_args() if op is decode_attention else {
        "x": torch.randn(2, 16).bfloat16(), "weight": torch.randn(8, 16).bfloat16()}), **change}  # fmt: skip
    with pytest.raises(ValueError, match=f"helium::{op.__name__}: .*{message}"):
        op(**args)


def test_a_strided_activation_is_read_as_its_values():
    runnable(bf16=True)
    x, w = torch.randn(16, 4), torch.randn(8, 16)
    q, scale = quantize_rows(w)
    sums = q.sum(dim=1, dtype=torch.int32)
    assert torch.equal(int8_mm(x.T, q, scale, sums), int8_mm(x.T.contiguous(), q, scale, sums))
    xb, wb = x.T.bfloat16(), w.bfloat16()
    assert torch.equal(bf16_mm(xb, wb), bf16_mm(xb.contiguous(), wb))


def test_an_op_that_cannot_run_says_why(monkeypatch):
    monkeypatch.setenv(cpu_kernels.KERNEL_ENV, "torch")
    with pytest.raises(RuntimeError, match=r"helium::int8_mm cannot run here: torch \(HELIUM_CPU_KERNELS=torch\)"):
        int8_mm(**_int8_args())
    with pytest.raises(RuntimeError, match="helium::decode_attention cannot run here: HELIUM_CPU_KERNELS=torch"):
        decode_attention(**_attention_args())


def test_a_non_contiguous_weight_keeps_torch_kernels(tiny_model):
    runnable(bf16=True)
    model = copy.deepcopy(tiny_model).to(torch.bfloat16)
    head = model.layers[0].mlp.w2
    head.weight = torch.nn.Parameter(head.weight.detach().T.contiguous().T, requires_grad=False)
    use_cpu_kernels(model, min_params=0)
    assert type(model.layers[0].mlp.w2) is torch.nn.Linear and type(model.layers[0].mlp.w13) is Bf16DotLinear
