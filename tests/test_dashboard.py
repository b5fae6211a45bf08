"""The training dashboard: rendering a RunState at 80x24, and watch() on finished, failed and live runs."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from engine.runs.rundir import EVENTS_FILE, LOG_FILE
from engine.runs.runner import RunEvent, RunState, attach, start_run
from helium_tui.dashboard import downsample, format_duration, render, watch
from tests.fakes import fake_trainer_kwargs, make_event


def sample_state(**overrides) -> RunState:
    state = RunState(
        run_dir="runs/nano", status="running", step=1200, max_steps=5000, lr=3e-4, tokens_per_s=12345.6,
        mfu=0.031, tokens=1_228_800, elapsed_s=300.0, eta_s=723.0, params=15_200_000, preset="nano",
        device="cpu", dtype="bfloat16", last_checkpoint="runs/nano/checkpoints/step_001000.pt",
        logs=["compiled in 12.3s", "saved checkpoint step_001000.pt"],
    )  # fmt: skip
    state.steps = list(range(10, 1201, 10))
    state.losses = [2 + 8 * math.exp(-x / 200) for x in state.steps]
    state.val_steps, state.val_losses = [600, 1200], [2.5, 2.1234]
    for key, value in overrides.items():
        setattr(state, key, value)
    return state


def text_of(renderable, width: int = 80) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_render_shows_the_key_numbers_in_80x24():
    out = text_of(render(sample_state(), 80, 24, footer="Ctrl-C: detach (the run keeps going)"))
    lines = out.splitlines()
    assert len(lines) <= 23 and max(len(line) for line in lines) <= 80
    for needle in [
        "step 1,200/5,000", "24.0%", "ETA 12m03s", f"loss {2 + 8 * math.exp(-6):.4f}", "val 2.1234",
        "lr 3.00e-04", "tok/s 12,346", "mfu 3.1%", "15.2M params", "1.2M tokens",
        "checkpoint runs/nano/checkpoints/step_001000.pt", "› saved checkpoint step_001000.pt",
        "running", "Ctrl-C: detach",
    ]:  # fmt: skip
        assert needle in out, needle
    assert "1200" in out and "⠀" not in lines[0]  # the chart's x axis reaches the last step


def test_render_failed_shows_error_tail_and_waiting_chart():
    state = RunState(
        run_dir="r",
        status="failed",
        error="exited with code 3",
        error_tail=["Traceback", "RuntimeError: boom"],
    )
    out = text_of(render(state, 80, 24))
    assert "✗ exited with code 3" in out and "RuntimeError: boom" in out and "failed" in out
    assert "waiting for the first step" in out


def test_render_finished_shows_bundle_and_fits_small_height():
    state = sample_state(status="finished", bundle="runs/nano/bundle", eta_s=0.0)
    out = text_of(render(state, 80, 16))
    assert "bundle runs/nano/bundle" in out and "took 5m00s" in out and "finished" in out


def write_run(run_dir: Path, events: list[dict], log: str = "") -> Path:
    run_dir.mkdir(parents=True)
    lines = [json.dumps({"time": 1000.0 + i, **ev}) for i, ev in enumerate(events)]
    (run_dir / EVENTS_FILE).write_text("\n".join(lines) + "\n")
    (run_dir / LOG_FILE).write_text(log)
    return run_dir


START = make_event("start", step=0, max_steps=4, params=1000, preset="tiny", device="cpu")
STEPS = [make_event("step", step=s, loss=5.0 - s, lr=1e-3, tokens_per_s=500.0, eta_s=4.0 - s) for s in (1, 2)]


def plain_console() -> Console:
    return Console(file=io.StringIO(), width=80, record=True)


def test_watch_finished_run_returns_0(tmp_path):
    run_dir = write_run(
        tmp_path / "run",
        [START, *STEPS, {"event": "eval", "step": 2, "val_loss": 3.25},
         {"event": "checkpoint", "step": 2, "path": "checkpoints/best.pt", "best": True},
         {"event": "status", "status": "finished", "step": 2, "bundle": "run/bundle"}],
    )  # fmt: skip
    console = plain_console()
    assert watch(run_dir, console=console) == 0
    out = console.export_text()
    assert "start: step 0/4 · tiny 1.0K params · cpu" in out
    assert "step 2/4 (50.0%) · loss 3.0000 · lr 1.00e-03 · 500 tok/s · eta 2s" in out
    assert "eval step 2: val loss 3.2500" in out and "checkpoint step 2: checkpoints/best.pt (best)" in out
    assert "Training finished at step 2." in out and "Model bundle: run/bundle" in out


def test_watch_failed_run_returns_1_and_prints_error_tail(tmp_path):
    run_dir = write_run(
        tmp_path / "run",
        [START, *STEPS,
         {"event": "error", "message": "RuntimeError: boom", "tail": ["Traceback (most recent call last):",
                                                                      "RuntimeError: boom"]},
         {"event": "status", "status": "failed", "step": 2}],
    )  # fmt: skip
    console = plain_console()
    assert watch(run_dir, console=console) == 1
    out = console.export_text()
    assert "error: RuntimeError: boom\n  | Traceback (most recent call last):\n  | RuntimeError: boom" in out
    assert "Training failed at step 2: RuntimeError: boom" in out and "train.log" in out


def test_watch_crashed_run_without_status_shows_log_tail(tmp_path):
    run_dir = write_run(tmp_path / "run", [START, *STEPS], log="loading\nSegmentation fault\n")
    console = Console(file=io.StringIO(), width=80, height=24, record=True, force_terminal=True)
    assert watch(run_dir, console=console) == 1  # live mode: the final frame and the exit lines
    out = console.export_text()
    assert "training process is gone without a final status" in out and "  | Segmentation fault" in out


def test_watch_live_mode_on_finished_run(tmp_path):
    run_dir = write_run(
        tmp_path / "run", [START, *STEPS, {"event": "status", "status": "finished", "step": 2}]
    )
    console = Console(file=io.StringIO(), width=80, height=24, record=True, force_terminal=True)
    assert watch(run_dir, console=console) == 0
    out = console.export_text()
    assert "step 2/4" in out and "finished" in out and "Training finished at step 2." in out


def test_watch_missing_run_dir_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such run directory"):
        watch(tmp_path / "nope", console=plain_console())


@pytest.fixture
def fake(tmp_path) -> dict:
    return fake_trainer_kwargs(tmp_path)


def ctrl_c_at_step(step: int):
    """An on_event callback that acts like the user pressing Ctrl-C once, when `step` arrives."""
    pressed = []

    def callback(ev: RunEvent) -> None:
        if ev.event == "step" and ev.step == step and not pressed:
            pressed.append(True)
            raise KeyboardInterrupt

    return callback


def test_ctrl_c_stops_a_run_the_dashboard_started(tmp_path, fake):
    handle = start_run({"max_steps": 100, "hang_at": 2}, tmp_path / "run", **fake)
    handle.on_event(ctrl_c_at_step(2))
    console = plain_console()
    assert watch(handle.run_dir, handle, console=console, poll_interval=0.02) == 0
    out = console.export_text()
    assert "stopping: the run saves a checkpoint first… (Ctrl-C again detaches; it still stops)" in out
    assert "status: stopped at step 2" in out and "Training stopped at step 2" in out
    assert handle.process is not None and handle.process.returncode == 0


def test_ctrl_c_detaches_from_an_attached_run(tmp_path, fake):
    owner = start_run({"max_steps": 100, "hang_at": 2}, tmp_path / "run", **fake)
    try:
        handle = attach(owner.run_dir)
        handle.on_event(ctrl_c_at_step(2))
        console = plain_console()
        assert watch(owner.run_dir, handle, console=console, poll_interval=0.02) == 0
        assert "Detached; the run goes on" in console.export_text()
        assert owner.is_alive()
    finally:
        assert owner.stop(timeout=20) == "stopped"


SLOW_STOPPER = """
import json, os, signal, sys, time
from pathlib import Path
from engine.runs.rundir import EVENTS_FILE, EventWriter, RunLock

asked = []
signal.signal(signal.SIGINT, lambda *a: asked.append(1))
run_dir = Path(sys.argv[sys.argv.index("--config") + 1]).parent
lock = RunLock(run_dir).acquire()
emit = EventWriter(run_dir / EVENTS_FILE).write
emit("start", step=0, max_steps=100, tokens_per_step=64, params=1, preset="p", device="cpu", dtype="float32",
     world_size=1, pid=os.getpid())
step, deadline = 0, time.monotonic() + 60
while not asked and time.monotonic() < deadline:
    step += 1
    emit("step", step=step, loss=1.0, lr=1e-3, tokens_per_s=1.0, mfu=None, grad_norm=1.0, tokens=step,
         elapsed_s=0.0, eta_s=0.0)
    time.sleep(0.05)
emit("log", message="SIGINT: finishing the current step, then saving a checkpoint")
while not (run_dir / "release").exists() and time.monotonic() < deadline:  # a slow last step
    time.sleep(0.02)
emit("status", status="stopped", step=step)
"""  # a trainer whose stop takes as long as the test wants: it ends once RUN_DIR/release exists


def test_a_second_ctrl_c_while_stopping_detaches_and_says_the_run_still_stops(tmp_path):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "slow_stopper.py").write_text(SLOW_STOPPER)
    handle = start_run({"max_steps": 100}, tmp_path / "run", module="slow_stopper", env={"PYTHONPATH": str(mods)})
    presses = []

    def ctrl_c(ev: RunEvent) -> None:  # once at step 2 (stop), once when the run says it is stopping (detach)
        if (ev.event == "step" and ev.step == 2 and not presses) or (ev.event == "log" and len(presses) == 1):
            presses.append(ev.event)
            raise KeyboardInterrupt

    handle.on_event(ctrl_c)
    console = plain_console()
    try:
        assert watch(handle.run_dir, handle, console=console, poll_interval=0.02) == 0
        out = console.export_text()
        assert presses == ["step", "log"] and handle.is_alive()
        assert "Detached; the run is still stopping" in out and "saves a checkpoint and exits" in out
        assert "the run goes on" not in out
    finally:
        (handle.run_dir / "release").touch()
        assert handle.wait(30)
    assert handle.status() == "stopped"  # what the message promised


def test_a_detach_after_the_run_ended_reports_its_end(tmp_path, fake):
    handle = start_run({"max_steps": 3}, tmp_path / "run", **fake)
    assert handle.wait(30)
    from helium_tui.dashboard import _report

    console = plain_console()
    assert _report(handle.snapshot(), handle, console, detached=True) == 0
    assert "Training finished at step 3." in console.export_text()


def test_run_output_never_reaches_the_terminal_as_control_sequences(tmp_path):
    escapes = "\x1b]0;HACK\x07\x1b[2J"
    state = RunState(run_dir=f"r{escapes}", status="failed", error=f"boom{escapes}", error_tail=[escapes],
                     logs=[escapes], last_checkpoint=escapes)  # fmt: skip
    console = Console(file=io.StringIO(), width=80, height=24, record=True, force_terminal=True)
    console.print(render(state, 80, 24))
    run_dir = write_run(tmp_path / f"run{escapes}", [START, make_event("log", message=f"hi{escapes}")])
    plain = plain_console()
    watch(run_dir, console=plain)
    assert "log: hi\ufffd" in plain.export_text()
    for out in (console.export_text(), plain.export_text()):
        assert "\x1b" not in out and "\x07" not in out


def test_helpers():
    assert [format_duration(s) for s in (None, 5, 65, 3725)] == ["?", "5s", "1m05s", "1h02m"]
    assert downsample([1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], 2) == ([1.5, 3.5], [1.5, 3.5])
    assert downsample([1, 2], [1.0, 2.0], 5) == ([1.0, 2.0], [1.0, 2.0])


def test_render_falls_back_to_the_train_log_tail():
    state = RunState(run_dir="r", status="running", log_tail=["one", "two", "three", "SIGINT: finishing"])
    out = text_of(render(state, 80, 24))
    assert "› two" in out and "› SIGINT: finishing" in out and "› one" not in out


def test_the_chart_labels_whole_steps():
    from engine.runs.runstate import RunState
    from helium_tui.dashboard import loss_chart, step_ticks

    assert step_ticks(10, 105) == [20, 40, 60, 80, 105] and step_ticks(0, 3) == [0, 1, 2, 3]
    assert step_ticks(5, 5) == [5] and step_ticks(1, 1_000_000) == [200_000, 400_000, 600_000, 800_000, 1_000_000]
    assert step_ticks(1, 1200) == [500, 1000, 1200]
    state = RunState("run")
    state.steps, state.losses = list(range(10, 106)), [3.0 - i / 100 for i in range(96)]
    state.val_steps, state.val_losses = [50, 100], [2.9, 2.5]
    chart = loss_chart(state, 60, 12).plain
    assert "57.5" not in chart and "105.0" not in chart and ".0" not in chart.splitlines()[-1]
    assert "105" in chart.splitlines()[-1]
