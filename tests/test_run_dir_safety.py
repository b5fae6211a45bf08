"""Run directories never mix: resume trains where it is told, one trainer per dir, a longer run keeps its schedule."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from engine.runs.rundir import RunLock
from helium_tui.cli import app
from tests.conftest import tiny_train_config
from tests.fakes import read_events
from trainer.optim import lr_at
from trainer.train import run_training

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread (see conftest.one_thread)."""


def test_a_copied_or_moved_run_resumes_in_its_new_place(prepared_dir, tmp_path):
    run_a = tmp_path / "runA"
    assert run_training(tiny_train_config(prepared_dir, run_a, max_steps=20, keep_last=1)) == 0
    before = {p.name: p.read_bytes() for p in (run_a / "checkpoints").iterdir()}
    bundle_a = (run_a / "bundle" / "model.safetensors").read_bytes()
    run_b = tmp_path / "runB"
    shutil.copytree(run_a, run_b)
    r = runner.invoke(app, ["train", "--out", str(run_b), "--resume", "--max-steps", "30", "--keep-last", "1"])
    assert r.exit_code == 0, r.stderr
    assert {p.name: p.read_bytes() for p in (run_a / "checkpoints").iterdir()} == before  # runA untouched
    assert (run_a / "bundle" / "model.safetensors").read_bytes() == bundle_a
    assert sorted(p.name for p in (run_b / "checkpoints").iterdir()) == ["best.pt", "step_000030.pt"]
    assert json.loads((run_b / "train_config.json").read_text())["out"] == str(run_b.resolve())
    run_c = tmp_path / "runC"
    run_b.rename(run_c)  # mv: the saved config still names runB
    r = runner.invoke(app, ["train", "--out", str(run_c), "--resume", "--max-steps", "35"])
    assert r.exit_code == 0, r.stderr
    assert not run_b.exists() and (run_c / "checkpoints" / "step_000035.pt").is_file()


def test_a_second_trainer_on_a_busy_run_dir_is_refused(prepared_dir, tmp_path):
    out = tmp_path / "run"
    assert run_training(tiny_train_config(prepared_dir, out, max_steps=10)) == 0
    with RunLock(out):  # another trainer holds the dir
        r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--max-steps", "20"])
        assert r.exit_code == 2 and "already going" in r.stderr
        cfg = tiny_train_config(prepared_dir, out, max_steps=20)
        assert run_training(cfg, resume=True) == 2  # the trainer itself checks the lock too
    assert not (out / "checkpoints" / "step_000020.pt").exists()


def test_extending_a_finished_run_continues_at_the_final_learning_rate(prepared_dir, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_train_config(prepared_dir, out, max_steps=20, log_interval=1)
    assert run_training(cfg) == 0
    assert json.loads((out / "train_config.json").read_text())["decay_steps"] == 20  # fixed at the first start
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--max-steps", "30"])
    assert r.exit_code == 0, r.stderr
    lrs = {e["step"]: e["lr"] for e in read_events(out / "events.jsonl") if e["event"] == "step"}
    assert lrs[30] == pytest.approx(cfg.final_lr) and lrs[21] == pytest.approx(cfg.final_lr)  # no jump back up
    assert lr_at(25, cfg.lr, cfg.final_lr, cfg.warmup_steps, 20) == cfg.final_lr


def test_resume_may_change_dropout_but_not_the_model(prepared_dir, tmp_path):
    out = tmp_path / "run"
    assert run_training(tiny_train_config(prepared_dir, out, max_steps=10)) == 0
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--max-steps", "12", "--dropout", "0.5"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["train", "--out", str(out), "--resume", "--max-steps", "14", "--preset", "micro"])
    assert r.exit_code == 2 and "differs in" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert torch.load(out / "checkpoints" / "step_000012.pt", weights_only=True)["step"] == 12


def test_restart_discards_the_old_run(prepared_dir, tmp_path):
    out = tmp_path / "run"
    assert run_training(tiny_train_config(prepared_dir, out, max_steps=10)) == 0
    r = runner.invoke(app, ["train", "--data", str(prepared_dir), "--out", str(out), "--preset", "tiny"])
    assert r.exit_code == 2 and "--restart" in r.stderr
    r = runner.invoke(app, ["train", "--out", str(out), "--restart", "--max-steps", "5", "--context", "32"])
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "step_000005.pt"]
    starts = [e for e in read_events(out / "events.jsonl") if e["event"] == "start"]
    assert len(starts) == 1 and starts[0]["step"] == 0 and starts[0]["max_steps"] == 5
