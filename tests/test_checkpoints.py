"""Tests for checkpoints and resume: bit-exact resume, a save killed midway, SIGINT, corrupt checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helium_tui.cli import app
from tests.conftest import tiny_train_config
from tests.fakes import read_events
from trainer import checkpoints as ckpt
from trainer.config import TrainConfig
from trainer.train import run_training

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (see conftest.one_thread)."""


ROOT = Path(__file__).resolve().parents[1]


def small_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    """The shared tiny config with this file's smaller batch, shorter run and its own seed."""
    base = dict(batch_size=4, max_steps=10, warmup_steps=3, eval_interval=5, ckpt_interval=5, seed=3)
    return tiny_train_config(data, out, **(base | kw))


def spawn(config: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`python -m trainer.train --config config` in a subprocess (one thread: the CPU is shared)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "trainer.train", "--config", str(config), *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


SLOW_SAVE = """
# Test-only start-up hook: each checkpoint temp file, once written, is announced on stderr and held for a
# minute before its rename, so the test can kill the trainer in the window where only the temp file exists.
import sys, time
import torch

_save = torch.save


def _slow_save(obj, f, *args, **kwargs):
    _save(obj, f, *args, **kwargs)
    if str(f).endswith(".tmp") and "/checkpoints/.step_" in str(f):
        print("checkpoint-temp-written", f, file=sys.stderr, flush=True)
        time.sleep(60)


torch.save = _slow_save
"""


def slow_save_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a trainer subprocess whose checkpoint saves pause after writing the temp file."""
    hooks = tmp_path / "slow-save"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SLOW_SAVE)
    return {"PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])}


def write_config(cfg: TrainConfig) -> Path:
    path = Path(cfg.out) / "train_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg.to_dict()))
    return path


def test_resume_is_bit_exact(prepared_dir, tmp_path):
    # dropout exercises the RNG state; decay_steps pins the cosine schedule across the two halves
    common = dict(dropout=0.1, decay_steps=16, grad_accum=2)
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert run_training(small_cfg(prepared_dir, straight, max_steps=16, **common)) == 0
    assert run_training(small_cfg(prepared_dir, halves, max_steps=8, **common)) == 0
    result = runner.invoke(app, ["train", "--out", str(halves), "--resume", "--max-steps", "16"])
    assert result.exit_code == 0, result.output
    a = torch.load(straight / "checkpoints" / "step_000016.pt", weights_only=True)
    b = torch.load(halves / "checkpoints" / "step_000016.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a["tokens"] == b["tokens"] == 16 * 2 * 4 * 32
    loss = {e["step"]: e["loss"] for e in read_events(straight / "events.jsonl") if e["event"] == "step"}
    resumed = [
        e for e in read_events(halves / "events.jsonl") if e["event"] == "step" and e["step"] > 10
    ]  # same log windows
    assert resumed and all(e["loss"] == loss[e["step"]] for e in resumed)
    starts = [e for e in read_events(halves / "events.jsonl") if e["event"] == "start"]
    assert [s["step"] for s in starts] == [0, 8]
    assert json.loads((halves / "train_config.json").read_text())["max_steps"] == 16


def test_corrupt_checkpoint_on_resume_is_a_one_line_error(prepared_dir, tmp_path):
    out = tmp_path / "run"
    assert run_training(small_cfg(prepared_dir, out, max_steps=5)) == 0
    latest = out / "checkpoints" / "step_000005.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated
    before = latest.read_bytes()
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--max-steps", "10"])
    assert (
        result.exit_code == 2 and "step_000005.pt" in result.stderr and len(result.stderr.splitlines()) == 1
    )
    assert latest.read_bytes() == before
    events = read_events(out / "events.jsonl")
    assert events[-1]["status"] == "failed" and events[-2]["event"] == "error"


@pytest.mark.slow
def test_sigkill_during_save_leaves_previous_checkpoint_loadable(prepared_dir, tmp_path):
    out = tmp_path / "run"
    assert run_training(small_cfg(prepared_dir, out, max_steps=5, eval_interval=0)) == 0
    good = (out / "checkpoints" / "step_000005.pt").read_bytes()
    cfg = small_cfg(prepared_dir, out, max_steps=10, eval_interval=0, log_interval=1)
    proc = spawn(write_config(cfg), "--resume", env=slow_save_env(tmp_path))
    line = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not line.startswith("checkpoint-temp-written"):
        line = proc.stderr.readline()
        if not line:
            break
    assert line.startswith("checkpoint-temp-written"), proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)  # killed after the temp file was written, before the rename
    proc.wait(30)
    assert Path(line.split()[1]).is_file()
    assert not (out / "checkpoints" / "step_000010.pt").exists()
    assert (out / "checkpoints" / "step_000005.pt").read_bytes() == good
    assert ckpt.load_checkpoint(out / "checkpoints" / "step_000005.pt")["step"] == 5
    # resuming cleans the stale temp file and finishes from step 5
    assert run_training(cfg, resume=True) == 0
    assert not list((out / "checkpoints").glob(".*.tmp"))
    assert ckpt.load_checkpoint(out / "checkpoints" / "step_000010.pt")["step"] == 10


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_0(prepared_dir, tmp_path):
    out = tmp_path / "run"
    cfg = small_cfg(prepared_dir, out, max_steps=100_000, log_interval=1, eval_interval=0, ckpt_interval=0)
    proc = spawn(write_config(cfg))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(e["event"] == "step" for e in read_events(out / "events.jsonl")):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    events = read_events(out / "events.jsonl")
    assert events[-1]["event"] == "status" and events[-1]["status"] == "stopped"
    step = events[-1]["step"]
    assert 0 < step < 100_000 and "stopped at step" in stdout
    assert ckpt.load_checkpoint(out / "checkpoints" / f"step_{step:06d}.pt")["step"] == step


def test_checkpoint_helpers(tmp_path):
    for step in (5, 10, 15, 20):
        ckpt.save_checkpoint(ckpt.step_path(tmp_path, step), {"format": ckpt.FORMAT, "step": step})
    assert ckpt.latest_checkpoint(tmp_path).name == "step_000020.pt"
    ckpt.prune(tmp_path, 2)
    assert [s for s, _ in ckpt.step_checkpoints(tmp_path)] == [15, 20]
    state = ckpt.rng_state(torch.device("cpu"))
    torch.save(state, tmp_path / "rng.pt")
    expected = torch.rand(3)
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)
