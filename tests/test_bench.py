"""`helium bench decode | startup | studio`: a table, then one JSON object with --json; bad input exits 2.

These check what the benchmarks report and that their numbers hang together, never how fast anything is.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from helium_tui.cli import app

runner = CliRunner()


def last_json(output: str) -> dict:
    """The JSON object a benchmark prints after its table."""
    return json.loads(output.strip().splitlines()[-1])


def test_bench_decode_json_on_a_tiny_preset():
    args = ["bench", "decode", "--preset", "tiny", "--device", "cpu", "--dtype", "float32"]
    r = runner.invoke(app, [*args, "--prompt-tokens", "8", "--new-tokens", "8", "--repeats", "1", "--json"])
    assert r.exit_code == 0, r.output
    report = last_json(r.stdout)
    assert report["preset"] == "tiny" and report["dtype"] == "float32" and report["compiled"] is False
    assert report["decode_tokens_per_s"] > 0 and report["prefill_tokens_per_s"] > 0 and report["ttft_s"] > 0
    assert report["weight_bytes"] == report["params"] * 4  # float32 weights, each counted once
    roofline = report["bandwidth_bytes_per_s"] / report["weight_bytes"]
    assert report["roofline_tokens_per_s"] == pytest.approx(roofline)
    assert report["roofline_fraction"] == pytest.approx(report["decode_tokens_per_s"] / roofline)
    shown = runner.invoke(app, [*args, "--prompt-tokens", "8", "--new-tokens", "8", "--repeats", "1"])
    table = " ".join(shown.stdout.replace("│", " ").split())  # a tiny model's weights sit in caches: over 100%, and the table says why
    achieved = float(table.split("% of roofline")[0].rsplit(" ", 1)[-1])
    assert ("the weights fit in caches" in table) == (achieved > 100), table


def test_bench_decode_window_sets_the_ring_cache_size():
    args = ["bench", "decode", "--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--json"]
    args += ["--prompt-tokens", "20", "--new-tokens", "8", "--repeats", "1"]
    reports = {w: last_json(runner.invoke(app, [*args, "--window", w]).stdout) for w in ("0", "16")}
    assert reports["0"]["sliding_window"] is None and reports["16"]["sliding_window"] == 16
    # tiny: 2 layers x (k, v) x 2 kv heads x 16 dims x 4 bytes per slot; 128 slots (its context) or 16
    assert reports["0"]["kv_cache_bytes"] == 128 * 2 * 2 * 2 * 16 * 4 == 8 * reports["16"]["kv_cache_bytes"]


def test_bench_decode_rejects_a_run_longer_than_the_context():
    r = runner.invoke(app, ["bench", "decode", "--preset", "tiny", "--prompt-tokens", "9000", "--json"])
    assert r.exit_code == 2 and "must be under tiny's context (128)" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(app, ["bench", "decode", "--preset", "tiny", "--prompt-tokens", "100", "--new-tokens", "100"])
    assert r.exit_code == 2 and "lower one (e.g. --new-tokens 28)" in r.stderr, r.output  # names what to change


def test_bench_decode_shortens_its_defaults_to_fit_and_says_so():
    # mini's context is 256: 128 + 200 tokens do not fit (this failed with its own defaults)
    r = runner.invoke(app, ["bench", "decode", "--preset", "mini", "--device", "cpu", "--repeats", "1", "--json"])
    assert r.exit_code == 0, r.output
    report = last_json(r.stdout)
    assert (report["prompt_tokens"], report["new_tokens"]) == (64, 192) and report["model"] is None
    assert "helium: note: shortened to fit mini's context of 256 tokens: --prompt-tokens 64 (default 128), " \
        "--new-tokens 192 (default 200)" in r.stderr
    # a length the user gives is kept, the other fills the rest
    r = runner.invoke(app, ["bench", "decode", "--preset", "tiny", "--device", "cpu", "--repeats", "1",
                            "--new-tokens", "100", "--json"])  # fmt: skip
    assert (last_json(r.stdout)["prompt_tokens"], last_json(r.stdout)["new_tokens"]) == (28, 100)
    assert "shortened to fit tiny's context of 128 tokens: --prompt-tokens 28 (default 128)\n" in r.stderr, r.stderr
    # (it went on ", --new-tokens 100 (default 200)", as if the value given had been shortened)


def test_bench_decode_measures_a_bundle_and_by_default_the_model_tell_uses(tiny_bundle, helium_home, one_thread):
    args = ["bench", "decode", "--device", "cpu", "--repeats", "1", "--new-tokens", "4", "--json"]
    r = runner.invoke(app, [*args, "--model", str(tiny_bundle)])
    assert r.exit_code == 0, r.output
    report = last_json(r.stdout)
    assert report["model"] == report["preset"] == "tiny-bundle" and "its weights" in r.stderr
    assert report["prompt_tokens"] == 60  # its context is 64: 4 new tokens, the prompt fills the rest
    default = last_json(runner.invoke(app, args).stdout)
    assert default["model"] == "helium-default"  # what `helium tell` runs without --model
    both = runner.invoke(app, [*args, "--model", str(tiny_bundle), "--preset", "tiny"])
    assert both.exit_code == 2 and "not both" in both.stderr


def test_bench_studio_json_with_a_tiny_model(tiny_bundle, helium_home):
    args = ["bench", "studio", "--model", str(tiny_bundle), "--max-tokens", "32", "--repeats", "1", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    report = last_json(r.stdout)
    assert report["model"] == "tiny-bundle" and (report["width"], report["height"]) == (80, 24)
    assert len(report["studio_runs"]) == len(report["raw_runs"]) == 1
    assert report["studio_tokens_per_s"] > 0 and report["raw_tokens_per_s"] > 0
    assert report["studio_fraction"] == pytest.approx(report["studio_tokens_per_s"] / report["raw_tokens_per_s"])
    assert not (helium_home / "stories").exists()  # the benchmark's stories never reach the user's library


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-tokens", "20"], "multiple of 16"),
        (["--width", "40"], "at least 60x20"),
        (["--model", "no-such-model"], "no such model bundle"),
    ],
)
def test_bench_studio_bad_input_is_one_line(args, message, helium_home):
    r = runner.invoke(app, ["bench", "studio", *args])
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output


TINY_RUN = ["bench", "decode", "--preset", "tiny", "--device", "cpu", "--prompt-tokens", "8", "--new-tokens", "16"]


def test_bench_decode_under_background_load_reports_the_ratio():
    r = runner.invoke(app, [*TINY_RUN, "--dtype", "float32", "--repeats", "2", "--background-load", "1", "--json"])
    assert r.exit_code == 0, r.output
    report = last_json(r.stdout)
    assert report["background_load"] == 1 and len(report["loaded_runs"]) == len(report["decode_runs"]) == 2
    assert report["loaded_fraction"] == pytest.approx(report["loaded_tokens_per_s"] / report["decode_tokens_per_s"])


def test_bench_decode_int8_reads_a_quarter_of_the_float32_bytes():
    runs = {}
    for q in ("none", "int8"):
        r = runner.invoke(app, [*TINY_RUN, "--dtype", "float32", "--repeats", "1", "--quantize", q, "--json"])
        assert r.exit_code == 0, r.output
        runs[q] = last_json(r.stdout)
    assert runs["int8"]["quantize"] == "int8" and runs["int8"]["params"] == runs["none"]["params"]
    assert 0.25 < runs["int8"]["weight_bytes"] / runs["none"]["weight_bytes"] < 0.3  # int8 + scales + norms


def test_bench_decode_vs_llama_cpp_on_the_same_weights(monkeypatch):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("gguf", reason="the gguf package is not installed")
    r = runner.invoke(app, [*TINY_RUN, "--dtype", "float32", "--repeats", "2", "--vs-llama-cpp", "--json"])
    assert r.exit_code == 0, r.output
    ll = last_json(r.stdout)["llama_cpp"]
    assert ll["type"] == "F32" and len(ll["runs"]) == 2 and ll["tokens_per_s"] > 0
    assert ll["helium_over_llama_cpp"] == pytest.approx(last_json(r.stdout)["decode_tokens_per_s"] / ll["tokens_per_s"])
    assert "AVX" in ll["system_info"] and "llama.cpp build" in r.stderr  # llama.cpp's own system info, shown
    assert "not_native" in ll  # None for a native build; else a loud warning (tests/test_llama_cpp_native.py)


def test_bench_decode_vs_llama_cpp_without_it_notes_the_skip(monkeypatch):
    import benchmarks.llama_cpp

    monkeypatch.setattr(benchmarks.llama_cpp, "llama_cpp_missing", lambda: "llama-cpp-python is not installed")
    r = runner.invoke(app, [*TINY_RUN, "--dtype", "float32", "--repeats", "1", "--vs-llama-cpp", "--json"])
    assert r.exit_code == 0, r.output
    assert last_json(r.stdout)["llama_cpp"] == {"skipped": "llama-cpp-python is not installed"}
    assert "helium: note: llama-cpp-python is not installed" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "nano", "--device", "cpu", "--batch-size", "2"], "batch-1 decoding"),
        (["--preset", "heliumlm-nano"], "add --window 0"),
        ([], "random weights of a shape: give --preset with it"),  # the default model's own weights
    ],
)
def test_bench_decode_vs_llama_cpp_refuses_what_llama_cpp_cannot_run(args, message):
    r = runner.invoke(app, ["bench", "decode", "--vs-llama-cpp", *args])
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output


def test_bench_decode_compile_where_the_native_runtime_decodes_reports_nothing_compiled():
    from engine.model import native
    from engine.model.config import get_preset
    from engine.model.tinyslm import TinySLM

    args = ["bench", "decode", "--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--compile"]
    r = runner.invoke(app, [*args, "--prompt-tokens", "8", "--new-tokens", "8", "--repeats", "1", "--json"])
    assert r.exit_code == 0, r.output
    runs_native = native.native_decoder(TinySLM(get_preset("tiny")).eval()) is not None
    assert last_json(r.stdout)["compiled"] is (not runs_native)  # it said True with nothing compiled
