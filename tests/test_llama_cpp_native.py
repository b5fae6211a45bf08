"""The llama.cpp baseline must be a native build: its system info parsed, the native check, the warning.

Sample strings are llama_print_system_info() of the native wheel in ../shared/peers/llama.cpp and of a
GGML_NATIVE=OFF build on the same CPU; no llama.cpp needed.
"""

from __future__ import annotations

import pytest

from benchmarks.llama_cpp import LLAMA_BATCH, cpu_flags, enabled_features, native_problem, parse_system_info
from helium_tui.commands.bench import llama_cpp_rows

NATIVE = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
GENERIC = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | LLAMAFILE = 1 | OPENMP = 1 | "
)
SAPPHIRE_RAPIDS = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_tile", "amx_bf16"}


def test_system_info_parses_into_features():
    features = parse_system_info(NATIVE)
    assert features["AVX512_VNNI"] == "1" and features["AMX_INT8"] == "1" and features["REPACK"] == "1"
    assert features["SSE3"] == "1" and "CPU" not in features and len(features) == 16
    multi = parse_system_info("CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : AVX2 = 1 | AVX512 = 0 | junk |")
    assert multi == {"ARCHS": "890", "USE_GRAPHS": "1", "AVX2": "1", "AVX512": "0"}
    assert parse_system_info("") == {}


def test_enabled_features_lists_what_is_on():
    assert enabled_features(NATIVE).split()[-3:] == ["LLAMAFILE", "OPENMP", "REPACK"]
    assert "AVX512" not in enabled_features("CPU : AVX2 = 1 | AVX512 = 0 |").split()


def test_a_native_build_passes_and_a_generic_one_is_named_with_the_rebuild():
    assert native_problem(NATIVE, SAPPHIRE_RAPIDS) is None
    problem = native_problem(GENERIC, SAPPHIRE_RAPIDS)
    assert problem is not None
    assert "AVX512, AVX512_VNNI, AVX512_BF16, AMX_INT8" in problem and "GGML_NATIVE=ON" in problem
    assert native_problem(GENERIC, {"avx2"}) is None  # an AVX2-only CPU: the generic build is native there
    assert native_problem(GENERIC, set()) is None  # flags unknown (not Linux, or not x86): nothing to say


def test_cpu_flags_read_the_flags_lines(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu avx2 avx512f\n"
    )
    assert cpu_flags(info) == {"fpu", "avx2", "avx512f"}
    assert cpu_flags(tmp_path / "absent") == set()


def test_prompts_go_one_token_a_batch():
    """llama.cpp's AMX kernel SIGILLs on batched Q8_0 matmuls on these VMs."""
    assert LLAMA_BATCH == {"n_batch": 1, "n_ubatch": 1}


@pytest.mark.parametrize("info, warned", [(NATIVE, False), (GENERIC, True)])
def test_bench_decode_rows_show_the_build_and_warn_when_not_native(info, warned, capsys):
    ll = {"type": "Q8_0", "tokens_per_s": 200.0, "runs": [200.0], "system_info": info,
          "not_native": native_problem(info, SAPPHIRE_RAPIDS)}  # fmt: skip
    rows = dict(llama_cpp_rows(100.0, ll))
    assert rows["Helium / llama.cpp"] == "0.50x" and "AVX2" in rows["llama.cpp build"]
    assert ("WARNING" in rows) is warned
    assert ("NOT A NATIVE llama.cpp" in capsys.readouterr().err) is warned
