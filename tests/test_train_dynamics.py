"""Inside a run: gradient norms, clipping, per-group update ratios and weight norms in the step events; the loss
spike detector; old run dirs without these fields still open in both dashboards."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from engine.model.config import PRESETS
from engine.model.tinyslm import TinySLM
from engine.runs.rundir import EVENTS_FILE, RunEvent, read_events
from engine.runs.runstate import RunState, is_spike
from helium_tui.dashboard import render, sparkline
from helium_tui.screens.training.view import stats_text
from tests.conftest import tiny_train_config
from trainer.dynamics import DynamicsProbe, layer_group
from trainer.train import run_training


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (see conftest.one_thread)."""


def fold(run_dir: Path) -> RunState:
    """The RunState a watcher builds from a run dir's events."""
    state = RunState(run_dir=str(run_dir))
    for ev in read_events(run_dir):
        state.apply(ev)
    return state


def text_of(renderable, width: int = 100) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_a_real_run_records_clipping_update_ratios_and_weight_norms(prepared_dir, tmp_path):
    out = tmp_path / "run"
    assert run_training(tiny_train_config(prepared_dir, out, max_steps=12, log_interval=4, grad_clip=0.5)) == 0
    steps = [e for e in read_events(out) if e.event == "step"]
    assert [e.step for e in steps] == [4, 8, 10, 12]  # 10: an eval step
    groups = {"embed", "L0.attn", "L0.mlp", "L1.attn", "L1.mlp", "norms"}  # tiny: 2 layers, tied head
    for ev in steps:
        assert ev.get("clipped") is (ev.get("grad_norm") > 0.5)
        assert set(ev.get("update_ratio")) == groups and set(ev.get("weight_norm")) == groups
        assert all(0 < r < 1 for r in ev.get("update_ratio").values())  # AdamW at lr 3e-3: small steps
        assert all(n > 0 for n in ev.get("weight_norm").values())
    state = fold(out)
    assert state.grad_norms == [e.get("grad_norm") for e in steps] and len(state.max_ratios) == 4
    assert state.clipped_steps == sum(e.get("clipped") for e in steps)
    assert state.update_ratio == steps[-1].get("update_ratio")


def test_the_probe_measures_a_known_update():
    model = TinySLM(PRESETS["tiny"])
    probe = DynamicsProbe(model)
    before = probe.before()
    with torch.no_grad():
        model.layers[0].mlp.w2.weight.mul_(1.1)  # one weight of L0.mlp grows by 10%
    ratios, norms = probe.after(before)
    w13, w2 = model.layers[0].mlp.w13.weight, model.layers[0].mlp.w2.weight
    old = math.sqrt(w13.norm().item() ** 2 + (w2.norm().item() / 1.1) ** 2)
    assert ratios["L0.mlp"] == pytest.approx(0.1 * (w2.norm().item() / 1.1) / old, rel=1e-4)
    assert ratios["L0.attn"] == 0 and ratios["embed"] == 0
    assert norms["L0.mlp"] == pytest.approx(math.sqrt(w13.norm().item() ** 2 + w2.norm().item() ** 2), rel=1e-4)


def test_layer_groups():
    assert layer_group("tok_embeddings.weight") == "embed"
    assert layer_group("output.weight") == "head"
    assert layer_group("norm.weight") == layer_group("layers.3.attn_norm.weight") == "norms"
    assert layer_group("layers.3.attn.wqkv.weight") == "L3.attn"
    assert layer_group("layers.11.mlp.w2.weight") == "L11.mlp"


def test_spike_detector_on_synthetic_losses():
    smooth = [4.0 * 0.99**i + 1.0 for i in range(100)]
    assert not any(is_spike(smooth[:i], smooth[i]) for i in range(len(smooth)))  # falling: never a spike
    assert not is_spike(smooth[:5], 100.0)  # too few points to judge
    noisy = [2.0 + 0.2 * math.sin(i) for i in range(60)]
    assert not any(is_spike(noisy[:i], noisy[i]) for i in range(len(noisy)))  # ±10% noise is not a spike
    assert is_spike(noisy, 3.5) and not is_spike(noisy, 2.9)  # 1.5x the median 2.0 is the line
    state = RunState(run_dir="r")
    for i, loss in enumerate([*noisy, 4.0, *noisy[:10]]):
        state.apply(RunEvent("step", 0.0, {"step": 10 * (i + 1), "loss": loss, "grad_norm": 1.0}))
    assert state.spikes == [(610, 4.0)] and state.last_spike == (610, 4.0)
    assert "loss spike at step 610" in text_of(render(state, 100, 30))
    assert "loss spike at step 610" in stats_text(state, None).plain
    state.apply(RunEvent("start", 0.0, {"step": 600}))  # resumed before the spike: it is forgotten
    assert state.spikes == [] and len(state.grad_norms) == len(state.steps) == 60


OLD_EVENTS = [  # a run dir written before the trainer recorded clipping and update ratios
    {"event": "start", "time": 1.0, "step": 0, "max_steps": 20, "tokens_per_step": 256, "params": 111680,
     "preset": "tiny", "device": "cpu", "dtype": "float32", "world_size": 1, "pid": 1},
    *[{"event": "step", "time": 2.0 + i, "step": 5 * i, "loss": 5.0 - i, "lr": 1e-3, "tokens_per_s": 900.0,
       "mfu": None, "grad_norm": 1.5 / i, "tokens": 1280 * i, "elapsed_s": 1.0 * i, "eta_s": 1.0} for i in (1, 2, 3, 4)],
    {"event": "eval", "time": 7.0, "step": 20, "val_loss": 1.5},
    {"event": "status", "time": 8.0, "status": "finished", "step": 20, "bundle": None},
]  # fmt: skip


def test_old_event_files_still_open(tmp_path):
    (tmp_path / EVENTS_FILE).write_text("".join(json.dumps(e) + "\n" for e in OLD_EVENTS))
    state = fold(tmp_path)
    assert state.steps == [5, 10, 15, 20] and state.grad_norms == [1.5, 0.75, 0.5, 0.375]
    assert state.clipped is None and state.clipped_steps == 0 and state.update_ratio == {} and state.max_ratios == []
    out = text_of(render(state, 100, 30))
    assert "|g| " in out and "ΔW/W" not in out and "spike" not in out
    assert "|g| 0.375" in stats_text(state, None).plain


def test_bad_dynamics_fields_are_rejected():
    good = {"event": "step", "time": 1.0, **{k: v for k, v in OLD_EVENTS[1].items() if k not in ("event", "time")}}
    assert RunEvent.from_dict(good | {"clipped": True, "update_ratio": {"embed": 1e-3}}).get("clipped") is True
    for bad in ({"clipped": 1}, {"update_ratio": [1.0]}, {"update_ratio": {"embed": "x"}}, {"weight_norm": {"a": None}}):
        assert RunEvent.parse(json.dumps(good | bad)) is None


def test_sparkline():
    assert sparkline([1.0, 2.0, 3.0]) == "▁▅█" and sparkline([2.0, 2.0]) == "▁▁" and sparkline([]) == ""


def test_the_dashboard_shows_the_dynamics_line_at_80x24():
    state = RunState(run_dir="r", status="running")
    for n in range(1, 6):
        ratios = {"embed": 1e-3 * n, "L0.mlp": 2e-3 * n}
        state.apply(RunEvent("step", 0.0, {"step": n, "loss": 3.0, "grad_norm": 0.5 * n, "clipped": n > 3,
                                           "update_ratio": ratios, "weight_norm": {"embed": 1.0}}))  # fmt: skip
    out = text_of(render(state, 80, 24, footer="Ctrl-C: detach"), width=80)
    assert "|g| ▁▃▅▆█ 2.5 (clipped 2×)" in out and "ΔW/W ▁▃▅▆█ 1.00e-02 L0.mlp" in out
    assert len(out.splitlines()) <= 24
