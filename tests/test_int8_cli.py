"""int8 and threads from the command line: `models install --dtype int8`, `--quantize`, `--threads`,
HELIUM_THREADS, and one-line errors (exit 2) for bad values."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from helium_tui.cli import app

runner = CliRunner()
GREEDY = ["--temperature", "0", "--dtype", "float32", "--max-tokens", "12", "--json"]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_install_int8_then_tell_runs_int8(tiny_bundle, helium_home, restore_threads):
    r = runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", "tiny8", "--dtype", "int8"])
    assert r.exit_code == 0, r.output
    installed = helium_home / "models" / "tiny8"
    meta = json.loads((installed / "metadata.json").read_text())
    assert meta["quantization"] == "int8" and meta["parameters"] > 0
    stored = runner.invoke(app, ["tell", "Tom", "--model", "tiny8", "--threads", "1", *GREEDY])
    assert stored.exit_code == 0, stored.output
    out = json.loads(stored.stdout)
    assert out["quantize"] == "int8" and out["threads"] == 1  # an int8 bundle runs in int8 by default
    fresh = runner.invoke(app, ["tell", "Tom", "--model", str(tiny_bundle), "--quantize", "int8", *GREEDY])
    assert json.loads(fresh.stdout)["text"] == out["text"]  # quantized now or stored: the same weights
    back = runner.invoke(app, ["tell", "Tom", "--model", "tiny8", "--quantize", "none", *GREEDY])
    assert json.loads(back.stdout)["quantize"] == "none"


def test_eval_with_int8_weights(tiny_bundle, tmp_path, stories, restore_threads):
    data = tmp_path / "valid.txt"
    data.write_text("\n<|endoftext|>\n".join(stories[:5]), encoding="utf-8")
    runs = {}
    for q in ("none", "int8"):
        r = runner.invoke(app, ["eval", "--model", str(tiny_bundle), "--data", str(data), "--quantize", q, "--json"])
        assert r.exit_code == 0, r.output
        runs[q] = json.loads(r.stdout.strip().splitlines()[-1])
    assert runs["int8"]["quantize"] == "int8" and runs["int8"]["tokens"] == runs["none"]["tokens"]
    assert runs["int8"]["bits_per_byte"] == pytest.approx(runs["none"]["bits_per_byte"], rel=0.01)


def test_helium_threads_sets_the_thread_count(tiny_bundle, monkeypatch, restore_threads):
    monkeypatch.setenv("HELIUM_THREADS", "1")
    r = runner.invoke(app, ["tell", "Tom", "--model", str(tiny_bundle), *GREEDY])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["threads"] == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["tell", "Tom", "--quantize", "int3"], None, "unknown --quantize 'int3'"),
        (["tell", "Tom", "--threads", "0"], None, "--threads must be a whole number from 1"),
        (["tell", "Tom", "--threads", "-3"], None, "--threads must be a whole number from 1"),
        (["tell", "Tom"], "abc", "HELIUM_THREADS must be a whole number from 1"),
        (["tell", "Tom"], "0", "HELIUM_THREADS must be a whole number from 1"),
        (["eval", "--data", "README.md", "--quantize", "fp8"], None, "unknown --quantize 'fp8'"),
        (["eval", "--data", "README.md", "--threads", "99999"], None, "--threads must be a whole number from 1"),
        (["bench", "decode", "--quantize", "int3"], None, "unknown quantization 'int3'"),
        (["--quantize", "int3"], None, "unknown --quantize 'int3'"),  # the studio: refused before it opens
        (["--threads", "0"], None, "--threads must be a whole number from 1"),
        ([], "x", "HELIUM_THREADS must be a whole number from 1"),
        (["bench", "decode", "--threads", "0"], None, "--threads must be a whole number from 1"),
        (["bench", "decode", "--background-load", "-1"], None, "--background-load must be a whole number from 0"),
    ],
)
def test_bad_values_are_one_line_errors(args, env, message, helium_home, monkeypatch, restore_threads):
    if env is not None:
        monkeypatch.setenv("HELIUM_THREADS", env)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("helium: error: ") and message in lines[0], r.stderr


def test_install_refuses_an_unknown_dtype(tiny_bundle, helium_home):
    r = runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", "x", "--dtype", "int2"])
    assert r.exit_code == 2 and "unknown dtype 'int2'" in r.stderr and "int8" in r.stderr
    assert not (helium_home / "models" / "x").exists()
