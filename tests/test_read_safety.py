"""Files Helium reads from a bundle, an HF directory, a run dir or a data dir: a FIFO never hangs a command, a
malformed or hostile JSON file gives one line (exit 2), and a path a file names never leaves its directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helium_tui.cli import app
from tests.export_helpers import one_error

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "assets" / "helium-default"
runner = CliRunner()
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


def helium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess; a hang fails the test (TimeoutExpired) instead of blocking it."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "HELIUM_CPU_KERNELS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "helium_tui.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def one_line_exit_2(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("helium: error: "), done.stderr
    return lines[0]


def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


@pytest.fixture
def hf_dir(tmp_path, tiny_bundle) -> Path:
    """A tiny transformers (LlamaForCausalLM) directory exported from the tiny bundle."""
    from engine.bundles.bundle import load_bundle
    from engine.formats.hf import export_hf

    return export_hf(load_bundle(tiny_bundle), tmp_path / "hf")


def import_hf_cli(source: Path, tmp_path: Path):
    return runner.invoke(app, ["import", "hf", str(source), "--out", str(tmp_path / "imported")])


# ---------------------------------------------------------------------------------------------------------
# FIFOs (issue 21, item 5)


@needs_fifo
def test_open_regular_refuses_a_fifo_at_once(tmp_path):
    from engine.safe_read import NotRegularFile, open_regular, read_regular

    pipe = fifo(tmp_path / "p")
    started = time.monotonic()
    for reader in (open_regular, lambda p: read_regular(p, 10)):
        with pytest.raises(NotRegularFile, match="it is a FIFO"):
            reader(pipe)
    with pytest.raises(NotRegularFile, match="directory"):
        open_regular(tmp_path)
    assert time.monotonic() - started < 5
    (tmp_path / "f").write_bytes(b"x" * 20)
    with pytest.raises(OSError, match="too large"):
        read_regular(tmp_path / "f", 10)
    assert read_regular(tmp_path / "f", 20) == b"x" * 20


@needs_fifo
def test_tell_with_a_fifo_as_weights_says_so_instead_of_hanging(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(DEFAULT, bundle)
    fifo(bundle / "model.safetensors")
    line = one_line_exit_2(helium("tell", "--model", str(bundle), "--max-tokens", "2"))
    assert "model.safetensors" in line and "not a regular file (it is a FIFO)" in line


@needs_fifo
@pytest.mark.parametrize("name", ["generation_config.json", "tokenizer_config.json", "config.json", "tokenizer.json"])
@pytest.mark.slow
def test_import_hf_with_a_fifo_says_so_instead_of_hanging(tmp_path, hf_dir, name):
    fifo(hf_dir / name)
    line = one_line_exit_2(helium("import", "hf", str(hf_dir), "--out", str(tmp_path / "z")))
    assert name in line and "FIFO" in line
    assert not (tmp_path / "z").exists()


@needs_fifo
def test_data_prepare_of_a_fifo_says_it_is_not_a_regular_file(tmp_path):
    pipe = fifo(tmp_path / "fifo.txt")
    line = one_line_exit_2(helium("data", "prepare", str(pipe), "--out", str(tmp_path / "out")))
    assert "fifo.txt: not a regular file (it is a FIFO)" in line


@needs_fifo
def test_fifos_in_a_run_dir_and_among_stories_are_skipped(tmp_path):
    from engine.runs.rundir import EVENTS_FILE, read_events
    from helium_tui.story_file import StoryFileError, read_file

    fifo(tmp_path / EVENTS_FILE)
    assert read_events(tmp_path) == []
    with pytest.raises(StoryFileError, match="not a regular file"):
        read_file(fifo(tmp_path / "story.json"), 100)


@needs_fifo
def test_heliumlm_and_llama2c_inputs_that_are_fifos_are_refused(tmp_path):
    from engine.errors import BundleError
    from engine.formats.heliumlm import load_tokenizer, read_author_config
    from engine.formats.llama2c import read_header, read_tokenizer_bin

    pipe = fifo(tmp_path / "x")
    for reader in (read_author_config, load_tokenizer, read_header, read_tokenizer_bin):
        with pytest.raises(BundleError, match="FIFO"):
            reader(pipe)


# ---------------------------------------------------------------------------------------------------------
# Malformed JSON in an HF directory (item 7)


def without(config: dict, key: str) -> dict:
    return {k: v for k, v in config.items() if k != key}


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: [], "must be a JSON object"),
        (lambda c: "str", "must be a JSON object"),
        (lambda c: without(c, "rope_parameters") | {"rope_scaling": "linear"}, "rope_scaling must be a JSON object"),
        (lambda c: c | {"rope_parameters": [1]}, "rope_parameters must be a JSON object"),
        (lambda c: c | {"rope_parameters": {"rope_type": "linear"}}, "RoPE scaling 'linear' is not supported"),
        (lambda c: without(c, "head_dim") | {"num_attention_heads": 0},
         "num_attention_heads must be from 1"),
        (lambda c: c | {"architectures": 5}, "architectures must be a list"),
        (lambda c: c | {"hidden_size": "64"}, "hidden_size must be a whole number"),
        (lambda c: c | {"eos_token_id": ["x"]}, "eos_token_id[0] must be a whole number"),
    ],
)  # fmt: skip
def test_import_hf_with_a_bad_config_is_one_line(tmp_path, hf_dir, change, words):
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps(change(config)))
    line = one_error(import_hf_cli(hf_dir, tmp_path))
    assert "config.json" in line and words in line, line
    assert not (tmp_path / "imported").exists()


def sharded(hf_dir: Path, weight_map) -> Path:
    """hf_dir with its weights behind model.safetensors.index.json mapping to weight_map."""
    (hf_dir / "model.safetensors").rename(hf_dir / "model-00001-of-00001.safetensors")
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return hf_dir


@pytest.mark.parametrize(
    "weight_map, words",
    [
        (["model-00001-of-00001.safetensors"], "weight_map must be a JSON object"),
        ({"model.norm.weight": 3}, "weight_map['model.norm.weight'] must be a string"),
        ({"model.norm.weight": "/etc/passwd"}, "outside this directory"),
        ({"model.norm.weight": "../hf/model-00001-of-00001.safetensors"}, "outside this directory"),
    ],
)
def test_import_hf_index_is_checked_and_confined(tmp_path, hf_dir, weight_map, words):
    line = one_error(import_hf_cli(sharded(hf_dir, weight_map), tmp_path))
    assert "model.safetensors.index.json" in line and words in line, line


def test_import_hf_reads_a_good_index(tmp_path, hf_dir):
    from safetensors import safe_open

    with safe_open(str(hf_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    sharded(hf_dir, dict.fromkeys(keys, "model-00001-of-00001.safetensors"))
    result = import_hf_cli(hf_dir, tmp_path)
    assert result.exit_code == 0, result.output


def test_import_heliumlm_with_a_deeply_nested_config_is_one_line(tmp_path):
    config = tmp_path / "config.json"
    config.write_text("[" * 100_000 + "]" * 100_000)
    result = runner.invoke(
        app, ["import", "heliumlm", str(tmp_path / "x.pt"), "--tokenizer", str(tmp_path / "t.json"),
              "--config", str(config), "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert "nested" in one_error(result)


# ---------------------------------------------------------------------------------------------------------
# Messages that mislead (item 12)


def test_an_hf_directory_as_model_or_tokenizer_names_import_hf(tmp_path, hf_dir):
    line = one_error(runner.invoke(app, ["tell", "--model", str(hf_dir), "--max-tokens", "2"]))
    assert "transformers" in line and "helium import hf" in line and "('model')" not in line
    story = tmp_path / "s.txt"
    story.write_text("Once upon a time.<|endoftext|>The end.<|endoftext|>")
    line = one_error(
        runner.invoke(app, ["data", "prepare", str(story), "--tokenizer", str(hf_dir), "--out", str(tmp_path / "d")])
    )
    assert "transformers" in line and "helium import hf" in line


@pytest.mark.parametrize("fmt", ["helium-bundle/99", "helium-bundle/2.0", "other-thing/1"])
def test_a_bundle_of_an_unknown_format_is_refused_naming_the_one_read(tmp_path, tiny_bundle, fmt):
    from engine.bundles.info import FORMAT

    config = json.loads((tiny_bundle / "config.json").read_text())
    (tiny_bundle / "config.json").write_text(json.dumps(config | {"format": fmt}))
    line = one_error(runner.invoke(app, ["tell", "--model", str(tiny_bundle), "--max-tokens", "2"]))
    assert fmt in line and FORMAT in line


def test_a_bundle_of_a_newer_minor_format_still_loads(tiny_bundle):
    from engine.bundles.info import read_config

    config = json.loads((tiny_bundle / "config.json").read_text())
    (tiny_bundle / "config.json").write_text(json.dumps(config | {"format": "helium-bundle/1.3"}))
    read_config(tiny_bundle)


@pytest.mark.parametrize("shard", ["/etc/passwd", "../outside.bin", "sub/../../x.bin"])
def test_a_manifest_shard_outside_the_data_dir_is_named_as_such(tmp_path, shard):
    from trainer.loader import TokenLoader, read_manifest

    data = tmp_path / "data"
    data.mkdir()
    np.zeros(100, np.uint16).tofile(tmp_path / "outside.bin")
    manifest = {"format": "helium-data/1", "vocab_size": 300, "eot_id": 0,
                "splits": {"train": {"shards": [shard], "tokens": 100}}}  # fmt: skip
    (data / "manifest.json").write_text(json.dumps(manifest))
    for reader in (lambda: read_manifest(data), lambda: TokenLoader(data, "train", 1, 8)):
        with pytest.raises(ValueError, match="outside the data dir") as caught:
            reader()
        assert "missing" not in str(caught.value)


def test_a_manifest_shard_that_is_a_fifo_is_not_called_missing(tmp_path):
    from trainer.loader import TokenLoader

    data = tmp_path / "data"
    data.mkdir()
    fifo(data / "train_000.bin")
    manifest = {"format": "helium-data/1", "vocab_size": 300, "splits": {"train": {"shards": ["train_000.bin"],
                "tokens": 100}}}  # fmt: skip
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not a regular file"):
        TokenLoader(data, "train", 1, 8)
