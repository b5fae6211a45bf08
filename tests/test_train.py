"""Tests for the training loop: loss falls, events and bundle, NaN guard, bad inputs, `helium train` CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle
from engine.bundles.reference import measure, stored_score
from helium_tui.cli import app
from tests.conftest import tiny_train_config
from tests.fakes import read_events
from trainer.config import TrainConfig
from trainer.metrics import flops_per_token, matmul_params, progress_line
from trainer.optim import lr_at, param_groups
from trainer.train import run_training

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (see conftest.one_thread)."""


def tiny_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    """A config small enough for a few hundred CPU steps in seconds."""
    return tiny_train_config(data, out, **kw)


def test_loss_falls_and_run_dir_is_complete(prepared_dir, tmp_path):
    out = tmp_path / "run"
    assert (
        run_training(
            tiny_cfg(prepared_dir, out, max_steps=150, eval_interval=50, ckpt_interval=50, keep_last=2)
        )
        == 0
    )
    events = read_events(out / "events.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and events[0]["max_steps"] == 150 and events[0]["tokens_per_step"] == 256
    vals = [e["val_loss"] for e in events if e["event"] == "eval"]
    steps = [e for e in events if e["event"] == "step"]
    assert steps[0]["loss"] > 5.0  # about ln(300) = 5.7 at the start
    assert len(vals) == 3 and vals[0] > vals[1] > vals[2] and vals[2] < 1.0
    assert steps[-1]["step"] == 150 and steps[-1]["tokens"] == 150 * 256
    assert {"loss", "lr", "tokens_per_s", "mfu", "grad_norm", "elapsed_s", "eta_s"} <= set(steps[-1])
    assert events[-1] == events[-1] | {"event": "status", "status": "finished", "step": 150}
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "best.pt",
        "step_000100.pt",
        "step_000150.pt",
    ]
    state = torch.load(out / "checkpoints" / "step_000150.pt", weights_only=True)
    assert state["step"] == 150
    bundle = load_bundle(events[-1]["bundle"])
    assert bundle.metadata["steps"] == 150 and bundle.metadata["val_loss"] == pytest.approx(vals[-1])
    assert bundle.config.dropout == 0.0 and bundle.config.context_length == 32
    assert stored_score(bundle.metadata) == measure(bundle.path)["bits_per_byte"]  # scored on the reference text
    assert json.loads((out / "train_config.json").read_text())["max_steps"] == 150
    result = runner.invoke(app, ["train", "--watch", str(out)])  # attach to the finished run (plain lines)
    assert result.exit_code == 0 and "finished" in result.output


def test_nan_loss_stops_with_error_and_keeps_last_good_checkpoint(prepared_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_training(tiny_cfg(prepared_dir, out, max_steps=10)) == 0
    capsys.readouterr()
    blown = tiny_cfg(prepared_dir, out, max_steps=20, lr=1e9, min_lr=1e9, grad_clip=0.0, log_interval=1)
    assert run_training(blown, resume=True) == 1  # a huge learning rate: the loss goes non-finite
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged at step" in err[0] and "nan" in err[0], err
    assert "last good checkpoint" in err[0] and "step_000010.pt" in err[0]
    events = read_events(out / "events.jsonl")
    assert events[-2]["event"] == "error" and events[-1]["status"] == "failed" and events[-1]["step"] > 10
    assert torch.load(out / "checkpoints" / "step_000010.pt", weights_only=True)["step"] == 10
    assert not (out / "bundle").exists() or (out / "bundle" / "metadata.json").is_file()


def test_after_a_nan_the_same_dir_takes_a_new_run_or_a_resume(prepared_dir, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tiny_cfg(prepared_dir, out, lr=1e9, min_lr=1e9, warmup_steps=0, grad_clip=0.0, log_interval=1)
    assert run_training(cfg) == 1  # dies before its first checkpoint
    result = runner.invoke(app, ["train", "--out", str(out), "--resume"])
    assert result.exit_code == 2 and "no checkpoint to resume from" in result.stderr and "--lr" in result.stderr
    assert run_training(tiny_cfg(prepared_dir, out, max_steps=10)) == 0  # the natural fix: lower lr, run again
    assert [e["event"] for e in read_events(out / "events.jsonl")][0] == "start"  # the old events are gone


def test_huge_lr_is_caught_by_the_nan_guard(prepared_dir, tmp_path, capsys):
    cfg = tiny_cfg(prepared_dir, tmp_path / "run", lr=1e12, min_lr=1e12, warmup_steps=0, grad_clip=0.0)
    assert run_training(cfg) == 1
    assert "helium: error: " in capsys.readouterr().err


def test_bad_inputs_are_one_line_errors_and_touch_nothing(prepared_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["train", "--preset", "tiny", "--data", str(prepared_dir), "--out", str(out)])
    assert result.exit_code == 2 and "not empty" in result.stderr and len(result.stderr.splitlines()) == 1
    result = runner.invoke(app, ["train", "--data", str(prepared_dir), "--out", str(out), "--restart"])
    assert result.exit_code == 2 and "holds no training run" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    fresh = tmp_path / "fresh"
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "missing"), "--out", str(fresh)])
    assert result.exit_code == 2 and "not a prepared data dir" in result.stderr and not fresh.exists()

    bad = tmp_path / "bad-data"
    shutil.copytree(prepared_dir, bad)
    (bad / "manifest.json").write_text("{not json")
    result = runner.invoke(app, ["train", "--data", str(bad), "--out", str(fresh)])
    assert result.exit_code == 2 and "manifest" in result.stderr and not fresh.exists()

    for args, needle in [
        (["--preset", "huge"], "unknown preset"),
        (["--batch-size", "0"], "batch_size"),
        (["--lr", "1e-3", "--min-lr", "1e-2"], "min_lr"),
    ]:
        result = runner.invoke(app, ["train", "--data", str(prepared_dir), "--out", str(fresh), *args])
        assert result.exit_code == 2 and needle in result.stderr and len(result.stderr.splitlines()) == 1
        assert not fresh.exists()

    result = runner.invoke(app, ["train", "--out", str(fresh), "--resume"])
    assert result.exit_code == 2 and "train_config.json" in result.stderr


def test_schedule_param_groups_and_flops():
    assert lr_at(0, 1.0, 0.1, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 0.1, 10, 100) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 0.1, 10, 100) == pytest.approx(0.55)  # halfway through the cosine
    assert lr_at(100, 1.0, 0.1, 10, 100) == lr_at(500, 1.0, 0.1, 10, 100) == pytest.approx(0.1)
    from engine.model.config import PRESETS
    from engine.model.tinyslm import TinySLM

    cfg = PRESETS["tiny"]
    model = TinySLM(cfg)
    decay, no_decay = param_groups(model, 0.1)
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_params()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert matmul_params(cfg) == linear  # every Linear, the (tied) output head included
    assert flops_per_token(cfg, 128) == 6 * linear + 12 * 2 * 64 * 128


def test_min_lr_defaults_to_a_tenth_of_the_peak():
    from trainer.config import TrainConfig

    assert TrainConfig().final_lr == pytest.approx(1e-4)  # the default schedule: 1e-3 decaying to 1e-4
    small = TrainConfig(lr=5e-5).validate()  # a peak below the old fixed 1e-4 floor is fine
    assert small.final_lr == pytest.approx(5e-6)
    assert TrainConfig(lr=5e-5, min_lr=0.0).validate().final_lr == 0.0
    with pytest.raises(ValueError, match="min_lr must be from 0 to lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3).validate()


def test_progress_line_format():
    line = progress_line(100, 1000, 3.2109, 3.4, 6e-4, 12345.0, 0.0123, 190)
    assert line == "step 100/1000 | loss 3.21 | val 3.40 | lr 6.0e-04 | 12.3k tok/s | mfu 1.2% | eta 3m10s"


def test_bench_train_json():
    import typer

    from helium_tui.commands.bench_train import bench_train

    bench = typer.Typer()
    bench.command("train")(bench_train)
    bench.command("other")(lambda: None)  # a group, like `helium bench`
    args = ["train", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--batch-size", "2", "--context", "32"]
    result = runner.invoke(bench, [*args, "--device", "cpu", "--dtype", "float32", "--no-compile", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["compiled"] is False and report["dtype"] == "float32" and report["context"] == 32
    assert report["tokens_per_s"] == pytest.approx(2 * 32 / report["step_time_s"])
    assert report["params"] > 0 and report["peak_mem_bytes"] > 0 and report["flops_per_token"] > 0
    result = runner.invoke(bench, ["train", "--preset", "nope"])
    assert result.exit_code == 2 and "unknown preset" in result.stderr


@pytest.mark.slow
def test_compiled_training_on_cpu(prepared_dir, tmp_path):
    out = tmp_path / "run"
    assert run_training(tiny_cfg(prepared_dir, out, max_steps=4, compile=True, eval_interval=0)) == 0
    events = read_events(out / "events.jsonl")
    assert events[0]["compiled"] is True and events[-1]["status"] == "finished"
    assert not any(e["event"] == "log" and "compile failed" in e["message"] for e in events)
    assert load_bundle(out / "bundle").metadata["steps"] == 4
