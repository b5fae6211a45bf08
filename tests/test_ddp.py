"""DDP on CPU: 2 gloo processes under torchrun train like 1 process at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fakes import read_events
from trainer.config import TrainConfig
from trainer.train import run_training

ROOT = Path(__file__).resolve().parents[1]


def cfg_for(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(
        data=str(data), out=str(out), preset="tiny", context=32, batch_size=8, max_steps=40, lr=3e-3,
        min_lr=3e-4, warmup_steps=5, eval_interval=20, eval_batches=4, ckpt_interval=20, log_interval=10,
        dtype="float32", device="cpu", seed=0,
    )  # fmt: skip


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(prepared_dir, tmp_path):
    two = tmp_path / "two"
    two.mkdir()
    config = two / "train_config.json"
    config.write_text(json.dumps(cfg_for(prepared_dir, two).to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"]
    cmd += ["-m", "trainer.train", "--config", str(config)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_training(cfg_for(prepared_dir, tmp_path / "one")) == 0
    finally:
        torch.set_num_threads(n)

    ev2, ev1 = read_events(two / "events.jsonl"), read_events(tmp_path / "one" / "events.jsonl")
    assert [e["event"] for e in ev2].count("start") == 1  # rank 0 alone writes events
    assert ev2[0]["world_size"] == 2 and ev1[0]["world_size"] == 1
    assert ev2[0]["tokens_per_step"] == ev1[0]["tokens_per_step"] == 8 * 32
    assert any(e["event"] == "log" and "2 ranks hold identical weights" in e["message"] for e in ev2)
    assert ev2[-1]["status"] == "finished" and (two / "bundle" / "model.safetensors").is_file()
    # ranks read different windows than the single process, so curves agree only within noise
    val2 = [e["val_loss"] for e in ev2 if e["event"] == "eval"]
    val1 = [e["val_loss"] for e in ev1 if e["event"] == "eval"]
    assert len(val2) == len(val1) == 2
    assert val2[-1] == pytest.approx(val1[-1], abs=0.25)
    assert val2[-1] < val2[0] < 5.0


def test_batch_must_divide_over_ranks(prepared_dir, tmp_path, monkeypatch, capsys):
    from trainer.distributed import Dist
    from trainer.train import Trainer

    trainer = Trainer(cfg_for(prepared_dir, tmp_path / "run").with_(batch_size=7), "new", Dist(0, 2, 0))
    with pytest.raises(ValueError, match="not divisible by the world size 2"):
        trainer.setup()
    assert not (tmp_path / "run").exists()
