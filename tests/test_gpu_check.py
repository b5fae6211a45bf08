"""The prepared GPU check: its dry run (every step on the CPU, no TUI packages) so the script cannot rot, and
its parts: a failing step never stops the next, the training-run summary and its extrapolation, the batch rule."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.gpu_check import (
    STEPS,
    Check,
    Plan,
    StepFailed,
    fill_batch,
    summarize_run,
    verbose_counts,
    write_summary,
)

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILES = {"1-env.json", "2-gpu-tests.json", "3-train-bench.json", "4-decode.json", "5-train-run.json",
                "summary.json", "summary.md", "log.txt"}  # fmt: skip
# What the device machine lacks or the check must not need; platformdirs (engine.paths imports it) is carried
# there as a wheel by `scripts/gpu_check.sh --stage`.
TUI_PACKAGES = ("textual", "textual_plotext", "textual_slider", "huggingface_hub")


@pytest.mark.slow  # ~25 s: CI runs it (the full suite); the fast subset leaves it out
def test_dry_run_runs_every_step_without_the_tui_packages(tmp_path):
    """Every process of the check runs with the TUI packages blocked, as on the device machine."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in TUI_PACKAGES)
    )
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "PYTHONPATH": str(blocker)}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    names = {p.name for p in out.iterdir()}
    assert names == RESULT_FILES  # the device tool brings back at most 8 files, named in [A-Za-z0-9._-]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in names)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["ok"]
    assert [(s["step"], s["status"]) for s in summary["steps"]] == [(name, "ok") for name in STEPS]
    steps = {s["step"]: s["metrics"] for s in summary["steps"]}
    assert steps["gpu-tests"]["skipped"] >= 1  # collected and skipped on a CPU
    assert steps["train-bench"]["eager"]["compiled"] is False and steps["train-bench"]["compiled"]["compiled"]
    assert [r["label"] for r in steps["decode"]["runs"]] == ["eager b1", "compiled b8"]
    run = steps["train-run"]
    assert run["status"] == "stopped" and run["data"] == "synthetic (dry run)" and len(run["points"]) >= 2
    assert run["extrapolation"]["epoch_minutes"] > 0
    for n, name in enumerate(STEPS, start=1):  # each step's own file holds what the summary holds
        assert json.loads((out / f"{n}-{name}.json").read_text())["status"] == "ok"

    stdout = proc.stdout.rstrip().splitlines()
    assert "helium bench gpu" in "\n".join(stdout[-20:]) and stdout[-1].startswith("└")  # the table comes last
    markdown = (out / "summary.md").read_text()
    assert "| train-run | ok |" in markdown and "## Real training run" in markdown
    assert "$ " in (out / "log.txt").read_text()


def test_a_failing_step_is_recorded_and_the_next_one_runs(tmp_path):
    check = Check(Plan(out=tmp_path, dry_run=True), echo=lambda line: None)

    def broken(check, metrics):
        metrics["partial"] = 1
        raise StepFailed("decode b64: out of memory")

    check.step(1, "first", broken)
    check.step(2, "second", lambda check, metrics: "fine")
    write_summary(check)
    first = json.loads((tmp_path / "1-first.json").read_text())
    assert first["status"] == "failed" and first["error"] == "decode b64: out of memory"
    assert first["metrics"] == {"partial": 1}  # what it measured before failing is kept
    assert json.loads((tmp_path / "2-second.json").read_text())["headline"] == "fine"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["ok"] and [s["status"] for s in summary["steps"]] == ["failed", "ok"]
    assert "| first | failed |" in (tmp_path / "summary.md").read_text()
    shutil.rmtree(check.work)


@pytest.mark.slow
def test_a_timed_out_command_fails_its_step_with_the_command_named(tmp_path):
    check = Check(Plan(out=tmp_path, dry_run=True), echo=lambda line: None)
    result = check.step(1, "slow", lambda c, m: c.run([sys.executable, "-c", "import time; time.sleep(30)"], 5))
    assert result.status == "failed" and "timed out after 5 s" in result.error and result.seconds < 20
    shutil.rmtree(check.work)


def test_run_summary_gives_speed_val_loss_over_time_and_the_epoch_extrapolation():
    def step(n, elapsed, rate):
        return {"event": "step", "step": n, "tokens": n * 10_000, "elapsed_s": elapsed, "tokens_per_s": rate,
                "loss": 9 - n / 100}  # fmt: skip

    events = [
        {"event": "start", "params": 30_000_000, "tokens_per_step": 10_000, "compiled": True, "context": 512},
        {"event": "status", "status": "running", "step": 0},
        step(100, 31.0, 50_000),  # 1M tokens at 1M tok/s after 30 s of start-up and compilation
        {"event": "eval", "step": 200, "val_loss": 3.0},
        step(200, 52.0, 1e6),  # 1 s of training, then the first eval: 20 s (it compiles the eval graph)
        step(300, 53.5, 1e6),  # 1 s of training, 0.5 s of a checkpoint
        {"event": "eval", "step": 400, "val_loss": 2.8},
        step(400, 56.5, 1e6),  # 1 s of training, an eval of 2 s
        {"event": "status", "status": "stopped", "step": 400},
    ]
    s = summarize_run(events, train_tokens=2_000_000, eval_interval=200, full_tokens=400_000_000)
    assert s["status"] == "stopped" and s["tokens_per_s"] == 1e6  # the first window (compilation) is left out
    assert (s["startup_s"], s["eval_s"], s["first_eval_extra_s"]) == (30.0, 2.0, 18.0)
    assert s["epochs"] == 2.0 and s["effective_tokens_per_s"] == pytest.approx(3e6 / 25.5)
    assert (s["first_val_loss"], s["last_val_loss"], s["best_val_loss"]) == (3.0, 2.8, 2.8)
    assert [p["val_loss"] for p in s["points"]] == [None, 3.0, None, 2.8]
    # once: 30 + 18 s; training 400 s + checkpoint-like overhead 0.5 s per 3M tokens; 200 evals of 2 s
    epoch = 48 + 400 * (1 + 0.5 / 3) + 200 * 2
    assert s["extrapolation"]["epoch_minutes"] == pytest.approx(epoch / 60)


def test_the_training_batch_follows_gpu_memory():
    assert fill_batch(141 * 10**9) == 128 and fill_batch(80 * 2**30) == 64  # H200, H100
    assert fill_batch(24 * 2**30) == 32 and fill_batch(16 * 2**30) == 16


def test_bad_options_are_one_line_errors():
    from helium_tui.cli import app

    result = CliRunner().invoke(app, ["bench", "gpu", "--skip", "everything"])
    assert result.exit_code == 2 and "unknown step everything" in result.output
    result = CliRunner().invoke(app, ["bench", "gpu", "--train-minutes", "0"])
    assert result.exit_code == 2 and "--train-minutes must be a number in [0.1, 600]" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="here the real check would run for minutes")
def test_without_cuda_the_check_says_so_in_one_line_and_runs_nothing_else(tmp_path):
    """Not a dry run on a machine without CUDA (CI, this box): exit 2, every other step recorded as skipped."""
    from helium_tui.cli import app

    result = CliRunner().invoke(app, ["bench", "gpu", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "helium: error: no CUDA GPU on this machine (`--dry-run` rehearses" in result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["status"] for s in summary["steps"]] == ["failed"] + ["skipped"] * (len(STEPS) - 1)
    assert summary["env"]["cuda_available"] is False


def test_a_test_run_cut_off_is_counted_from_its_verbose_lines():
    text = (
        "tests/test_gpu.py::test_cuda_graph_decode_matches_eager PASSED  [ 10%]\n"
        "tests/test_gpu.py::test_compiled_bf16_training_steps_equal_eager_within_bf16_tolerance FAILED [ 20%]\n"
        "tests/test_compile.py::test_x SKIPPED (needs a CUDA GPU) [ 30%]\n"
    )
    counts = verbose_counts(text)
    assert (counts["passed"], counts["failed"], counts["skipped"]) == (1, 1, 1)
    assert counts["failures"] == ["test_compiled_bf16_training_steps_equal_eager_within_bf16_tolerance"]
