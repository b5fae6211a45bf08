"""The background runner against real subprocesses: the fake trainer (tests/fakes.py) and the real one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from engine.runs.rundir import EVENTS_FILE, LOCK_FILE, LOG_FILE, EventReader, is_running, lock_holder
from engine.runs.runner import RunEvent, RunState, attach, start_run
from tests.fakes import fake_trainer_kwargs


@pytest.fixture
def fake(tmp_path) -> dict:
    return fake_trainer_kwargs(tmp_path)


def kinds(events: list[RunEvent]) -> list[tuple[str, int | None]]:
    return [(ev.event, ev.step) for ev in events]


def test_run_to_finish_streams_events_in_order(tmp_path, fake):
    run_dir = tmp_path / "run"
    seen: list[RunEvent] = []
    handle = start_run({"max_steps": 4}, run_dir, **fake)
    handle.on_event(seen.append)
    events = list(handle.events(follow=True, poll_interval=0.02))
    assert handle.process is not None and handle.process.wait(10) == 0
    assert json.loads((run_dir / "train_config.json").read_text()) == {"max_steps": 4}
    assert lock_holder(run_dir) == handle.pid and not is_running(run_dir)  # released: no stale pid file
    assert "fake trainer started" in (run_dir / LOG_FILE).read_text()
    assert kinds(events) == [
        ("start", 0), ("status", 0),
        ("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("step", 4), ("eval", 4),
        ("log", None), ("checkpoint", 4), ("status", 4),
    ]  # fmt: skip
    assert seen == events
    assert events[2].get("extra_field") == "kept"  # unknown fields survive in .data
    assert handle.status() == "finished"
    state = handle.snapshot()
    assert state.steps == [1, 2, 3, 4] and state.losses == [10.0, 5.0, 10 / 3, 2.5]
    assert state.val_steps == [2, 4] and state.val_losses == [5.5, 2.75]
    assert state.progress == 1.0 and state.step == 4 and state.max_steps == 4
    assert state.lr == 0.001 and state.tokens_per_s == 1000.0 and state.tokens == 256
    assert state.last_checkpoint == state.best_checkpoint == str(run_dir.resolve() / "checkpoints/best.pt")
    assert state.bundle == str(run_dir.resolve() / "bundle")
    assert state.logs == ["exporting bundle"] and state.params == 1234 and state.preset == "fake"


def test_graceful_stop_writes_stopped(tmp_path, fake):
    handle = start_run({"max_steps": 100, "hang_at": 3}, tmp_path / "run", **fake)
    assert handle.owned
    for ev in handle.events(poll_interval=0.02):
        if ev.event == "step" and ev.step == 3:
            break
    assert handle.is_alive() and handle.status() == "running"
    assert handle.stop(timeout=20) == "stopped"
    assert handle.process is not None and handle.process.returncode == 0
    assert not handle.is_alive()
    state = handle.snapshot()
    assert state.status == "stopped" and state.step == 3
    assert state.last_checkpoint and state.last_checkpoint.endswith("checkpoints/step_000003.pt")
    assert list(handle.events()) == []  # nothing new, and follow ends at once


def test_crash_without_status_is_failed_with_log_tail(tmp_path, fake):
    handle = start_run({"max_steps": 10, "crash_at": 2}, tmp_path / "run", **fake)
    events = list(handle.events(poll_interval=0.02))
    assert [ev.event for ev in events[-2:]] == ["error", "status"]
    assert all(ev.synthetic for ev in events[-2:])
    assert handle.status() == "failed"
    state = handle.snapshot()
    assert state.error == "training process exited with code 3 without a final status"
    assert state.error_tail[-1] == "RuntimeError: boom at step 2"
    assert state.steps == [1, 2]


def test_bad_input_exit_uses_the_trainers_one_line_error(tmp_path, fake):
    handle = start_run({"max_steps": 1, "bad_input": "no such data dir: /nope"}, tmp_path / "run", **fake)
    assert [ev.event for ev in handle.events(poll_interval=0.02)] == ["error", "status"]
    state = handle.snapshot()
    assert state.status == "failed" and state.error == "no such data dir: /nope"
    assert state.error_tail == ["helium: error: no such data dir: /nope"]  # without the runner's `$ cmd` line


def test_attach_to_finished_run_replays_everything(tmp_path, fake):
    run_dir = tmp_path / "run"
    owner = start_run({"max_steps": 3}, run_dir, **fake)
    first = list(owner.events(poll_interval=0.02))
    assert owner.wait(10)  # the final status comes just before the process exits
    handle = attach(run_dir)
    assert not handle.owned and not handle.is_alive()
    replay = list(handle.events(follow=True))
    assert [ev.to_dict() for ev in replay] == [ev.to_dict() for ev in first]
    assert handle.status() == "finished" and handle.snapshot().steps == [1, 2, 3]


def test_attach_to_running_run_and_stop_it(tmp_path, fake):
    run_dir = tmp_path / "run"
    owner = start_run({"max_steps": 100, "hang_at": 2}, run_dir, **fake)
    for ev in owner.events(poll_interval=0.02):
        if ev.step == 2 and ev.event == "step":
            break
    handle = attach(run_dir)
    assert handle.pid == owner.pid and handle.is_alive() and handle.status() == "running"
    handle.request_stop()
    assert owner.process is not None and owner.process.wait(20) == 0  # reap it (it is owner's child)
    assert [ev.event for ev in handle.events(poll_interval=0.02)][-1] == "status"
    assert handle.status() == "stopped"


def test_resume_keeps_history_and_follows_the_new_segment(tmp_path, fake):
    run_dir = tmp_path / "run"
    first = start_run({"max_steps": 100, "hang_at": 3}, run_dir, **fake)
    for ev in first.events(poll_interval=0.02):
        if ev.step == 3 and ev.event == "step":
            break
    assert first.stop(timeout=20) == "stopped"
    with pytest.raises(ValueError, match="holds an earlier run"):
        start_run({"max_steps": 5}, run_dir, **fake)
    handle = start_run({"max_steps": 5, "resume_from": 3}, run_dir, resume=True, **fake)
    assert handle.snapshot().status == "running" or not handle.is_alive()  # not the old 'stopped'
    list(handle.events(poll_interval=0.02))
    state = handle.snapshot()
    assert state.status == "finished" and state.steps == [1, 2, 3, 4, 5]
    assert "--resume" in (run_dir / LOG_FILE).read_text()


def test_start_refuses_a_dir_with_a_live_run(tmp_path, fake):
    run_dir = tmp_path / "run"
    handle = start_run({"max_steps": 100, "hang_at": 1}, run_dir, **fake)
    next(handle.events(poll_interval=0.02))  # the trainer is up: it holds the run dir's lock
    try:
        for resume in (True, False):
            with pytest.raises(ValueError, match="already going"):
                start_run({"max_steps": 5}, run_dir, resume=resume, **fake)
    finally:
        assert handle.stop(timeout=20) == "stopped"


def test_attach_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no such run directory"):
        attach(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no training events"):
        attach(tmp_path / "empty")


def test_reader_waits_for_half_written_line_and_skips_bad_ones(tmp_path):
    path = tmp_path / EVENTS_FILE
    reader = EventReader(path)
    assert reader.read() == []  # no file yet
    step = dict(step=1, loss=2.0, lr=1e-3, tokens_per_s=9.0, mfu=None, grad_norm=1.0, tokens=8, elapsed_s=1.0, eta_s=2.0)
    line = json.dumps({"event": "step", "time": 1.0, **step, "new": [1]})
    path.write_text("not json\n" + line[:10])
    assert reader.read() == [] and reader.skipped == 1
    with open(path, "a") as f:
        f.write(line[10:] + "\n" + '{"time": 2}\n')  # completes the line; then one without an event name
    (ev,) = reader.read()
    assert (ev.event, ev.time, ev.step, ev.data) == ("step", 1.0, 1, {**step, "new": [1]})
    assert reader.skipped == 2
    with open(path, "a") as f:
        f.write('{"event": "log", "time": 3, "message": "last words"}')  # never gets its newline
    assert reader.read() == []
    (ev,) = reader.read(final=True)
    assert ev.get("message") == "last words"


def test_dead_run_with_half_line_and_no_status_is_failed(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    start = {"event": "start", "time": 1, "step": 0, "max_steps": 10, "tokens_per_step": 8, "params": 1,
             "preset": "tiny", "device": "cpu", "dtype": "float32", "world_size": 1, "pid": dead_pid()}
    (run_dir / EVENTS_FILE).write_text(json.dumps(start) + '\n{"event": "step", "ti')
    (run_dir / LOG_FILE).write_text("line one\nKilled\n")
    (run_dir / LOCK_FILE).write_text(f"{start['pid']}\n")  # left by the dead trainer, no longer locked
    handle = attach(run_dir)
    assert [ev.event for ev in handle.events()] == ["start", "error", "status"]
    state = handle.snapshot()
    assert state.status == "failed" and state.error_tail == ["line one", "Killed"]


def test_state_resume_start_drops_points_past_the_checkpoint():
    state = RunState(run_dir="r")
    for step in (1, 2, 3, 4):
        state.apply(RunEvent("step", 0, {"step": step, "loss": float(step)}))
    state.apply(RunEvent("eval", 0, {"step": 4, "val_loss": 1.0}))
    state.apply(RunEvent("status", 0, {"status": "failed", "step": 4}))
    state.apply(RunEvent("start", 0, {"step": 2, "max_steps": 8}))
    assert state.steps == [1, 2] and state.val_steps == [] and state.status == "running"
    assert state.progress == 0.25


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def real_prepared_dir(request) -> Path:
    """The training engineer's prepared data fixture, when the real trainer is there."""
    if not (Path(__file__).resolve().parents[1] / "trainer" / "train.py").is_file():
        pytest.skip("trainer/train.py is not there yet")
    try:
        return request.getfixturevalue("prepared_dir")
    except pytest.FixtureLookupError:
        pytest.skip("no prepared_dir fixture in tests/conftest.py yet")


@pytest.mark.slow  # two real trainer processes: ~25 s on a loaded 2-core box
def test_real_trainer_start_stop_resume_finish(real_prepared_dir, tmp_path):
    from trainer.config import TrainConfig

    run_dir = tmp_path / "run"
    cfg = TrainConfig(
        data=str(real_prepared_dir), out=str(run_dir), preset="tiny", context=32, batch_size=8, max_steps=400,
        lr=3e-3, min_lr=3e-4, warmup_steps=5, eval_interval=200, eval_batches=2, ckpt_interval=200,
        log_interval=2, dtype="float32", device="cpu", seed=0,
    )  # fmt: skip
    handle = start_run(cfg.to_dict(), run_dir)
    for ev in handle.events(poll_interval=0.1):
        if ev.event == "step":
            break  # training is under way: stop it gracefully
    assert handle.stop(timeout=60) == "stopped"
    assert handle.process is not None and handle.process.returncode == 0
    stopped = handle.snapshot()
    assert stopped.last_checkpoint is not None and Path(stopped.last_checkpoint).is_file()
    assert 0 < stopped.step < 400 and stopped.device == "cpu" and stopped.params

    resumed = start_run(cfg.with_(max_steps=stopped.step + 4).to_dict(), run_dir, resume=True)
    events = list(resumed.events(poll_interval=0.1))
    assert resumed.wait(30)
    state = resumed.snapshot()
    assert state.status == "finished", state.error_tail or state.log_tail
    assert [ev.step for ev in events if ev.event == "start"] == [stopped.step]
    assert state.steps[-1] == state.step == stopped.step + 4
    assert state.bundle and (Path(state.bundle) / "model.safetensors").is_file()
    assert state.log_tail and "finished" in state.log_tail[-1]


def test_attach_sees_a_run_started_elsewhere_as_running_through_its_lock(tmp_path):
    """A trainer started in another terminal (not by a runner, no child process) holds the lock: attached
    watchers see it running, can stop it, and see it gone once the lock is released."""
    from engine.runs.rundir import EventWriter, RunLock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    code = (
        "import signal, sys, time\n"
        "from engine.runs.rundir import RunLock\n"
        "lock = RunLock(sys.argv[1]).acquire()\n"
        "signal.signal(signal.SIGINT, lambda *a: sys.exit(0))\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        EventWriter(run_dir / EVENTS_FILE).write("status", status="running", step=0)
        handle = attach(run_dir)
        assert handle.is_alive() and handle.pid == proc.pid and handle.status() == "running"
        with pytest.raises(ValueError, match="already going"):
            RunLock(run_dir).acquire()
        assert handle.request_stop()
        assert proc.wait(20) == 0
        assert not handle.is_alive()
        events = list(handle.events())
        assert events[-1].event == "status" and events[-1].get("status") == "stopped" and events[-1].synthetic
    finally:
        proc.kill()


def test_events_ends_with_the_final_status_when_the_process_dies_between_checks(tmp_path, monkeypatch):
    """The race: a run alive at poll() but dead by the time events() looks again must still end 'failed'."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / EVENTS_FILE).write_text(json.dumps({"event": "status", "time": 1, "status": "running", "step": 0}) + "\n")
    handle = attach(run_dir)
    alive = iter([True, False, False, False, False])  # alive for the first poll, dead right after
    monkeypatch.setattr(handle, "is_alive", lambda: next(alive, False))
    events = list(handle.events(poll_interval=0))
    assert [e.event for e in events][-1] == "status" and handle.snapshot().status == "failed"


def test_the_fake_and_the_real_trainer_write_only_valid_events(tmp_path, fake, prepared_dir, one_thread):
    """Both writers go through engine.runs.rundir; every line they write passes validate_event."""
    from engine.runs.rundir import validate_event
    from tests.conftest import tiny_train_config
    from trainer.train import run_training

    handle = start_run({"max_steps": 3}, tmp_path / "fake-run", **fake)
    list(handle.events(poll_interval=0.02))
    assert run_training(tiny_train_config(prepared_dir, tmp_path / "real-run", max_steps=10)) == 0
    for run in ("fake-run", "real-run"):
        lines = (tmp_path / run / EVENTS_FILE).read_text().splitlines()
        assert len(lines) > 5
        for line in lines:
            validate_event(json.loads(line))


def test_validate_event_names_what_is_wrong():
    from engine.runs.rundir import validate_event

    for bad, needle in [
        ({"event": "step", "time": 1}, "missing 'step'"),
        ({"event": "nope", "time": 1}, "unknown event type"),
        ({"event": "status", "time": 1, "status": "weird", "step": 0}, "unknown status"),
        ({"event": "eval", "time": 1, "step": True, "val_loss": 1.0}, "wrong type"),
        ({"event": "log", "message": "x"}, "'time'"),
    ]:
        with pytest.raises(ValueError, match=needle):
            validate_event(bad)
    deep = "[" * 100_000 + "]" * 100_000
    assert RunEvent.parse(deep) is None  # absurd nesting is skipped, not a RecursionError
