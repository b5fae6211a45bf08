"""A stand-in trainer module for runner and dashboard tests: a real subprocess speaking engine.runs.rundir's protocol."""

from __future__ import annotations

import textwrap
from pathlib import Path

FAKE_TRAINER = textwrap.dedent(
    '''
    """A stand-in for trainer.train: holds the run lock, writes events through engine.runs.rundir, stops on SIGINT.

    Behaviour comes from the config (crash_at, hang_at, resume_from, bad_input) or, for callers whose config
    must stay a valid TrainConfig, from the environment: FAKE_CRASH_AT, FAKE_STEP_S (seconds per step),
    FAKE_BUNDLE (the finished run's bundle; empty for none).
    """
    import argparse, json, os, signal, sys, time
    from pathlib import Path

    from engine.runs.rundir import CHECKPOINTS_DIR, ERROR_PREFIX, EventWriter, RunLock, EVENTS_FILE

    stop = False

    def on_signal(signum, frame):
        global stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    args = argparse.ArgumentParser()
    args.add_argument("--config")
    args.add_argument("--resume", action="store_true")
    args.add_argument("--restart", action="store_true")
    args = args.parse_args()
    cfg = json.load(open(args.config))
    if cfg.get("bad_input"):
        print(ERROR_PREFIX + cfg["bad_input"], file=sys.stderr)
        sys.exit(2)
    run_dir = Path(args.config).parent
    lock = RunLock(run_dir).acquire()
    events = EventWriter(run_dir / EVENTS_FILE)
    emit = events.write

    def checkpoint(step, best=False):
        path = run_dir / CHECKPOINTS_DIR / ("best.pt" if best else f"step_{step:06d}.pt")
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"fake")
        emit("checkpoint", step=step, path=str(path), best=best)

    crash_at = cfg.get("crash_at", int(os.environ.get("FAKE_CRASH_AT", "-1")))
    step_s = float(os.environ.get("FAKE_STEP_S", "0"))
    first = cfg.get("resume_from", 0) if args.resume else 0
    emit("start", step=first, max_steps=cfg["max_steps"], tokens_per_step=64, params=1234,
         preset="fake", device="cpu", dtype="float32", world_size=1, pid=os.getpid())
    emit("status", status="running", step=first)
    print("fake trainer started", flush=True)
    step = first
    while step < cfg["max_steps"]:
        if stop:
            checkpoint(step)
            emit("status", status="stopped", step=step)
            sys.exit(0)
        if step == crash_at:
            print("Traceback (most recent call last):", file=sys.stderr)
            print("RuntimeError: boom at step %d" % step, file=sys.stderr, flush=True)
            os._exit(3)
        if step == cfg.get("hang_at"):
            time.sleep(0.02)
            continue
        time.sleep(step_s)
        step += 1
        emit("step", step=step, loss=10.0 / step, lr=0.001, tokens_per_s=1000.0, mfu=None,
             grad_norm=1.0, tokens=64 * step, elapsed_s=0.1 * step, eta_s=0.1 * (cfg["max_steps"] - step),
             extra_field="kept")
        if step % 2 == 0:
            emit("eval", step=step, val_loss=11.0 / step)
    emit("log", message="exporting bundle")
    checkpoint(step, best=True)
    emit("status", status="finished", step=step,
         bundle=os.environ.get("FAKE_BUNDLE", str(run_dir / "bundle")) or None)
    '''
)


def fake_trainer_kwargs(tmp_path: Path) -> dict:
    """start_run keyword arguments that run the fake trainer module instead of trainer.train."""
    mod_dir = tmp_path / "fakemods"
    mod_dir.mkdir()
    (mod_dir / "fake_trainer.py").write_text(FAKE_TRAINER)
    return {"module": "fake_trainer", "env": {"PYTHONPATH": str(mod_dir)}}


def read_events(path: Path) -> list[dict]:
    """Every valid event of an events.jsonl as plain dicts (what the file's lines hold)."""
    from engine.runs.rundir import EventReader

    return [ev.to_dict() for ev in EventReader(path).read(final=True)]


EVENT_DEFAULTS: dict[str, dict] = {
    "start": dict(step=0, max_steps=10, tokens_per_step=64, params=1000, preset="tiny", device="cpu",
                  dtype="float32", world_size=1, pid=1),
    "step": dict(loss=1.0, lr=1e-3, tokens_per_s=100.0, mfu=None, grad_norm=1.0, tokens=0, elapsed_s=0.0,
                 eta_s=0.0),
    "eval": dict(),
    "checkpoint": dict(best=False),
    "log": dict(message=""),
    "status": dict(step=0),
    "error": dict(tail=[]),
}  # fmt: skip


def make_event(kind: str, **fields) -> dict:
    """A valid event dict of that kind (engine.runs.rundir.SCHEMA): the given fields over neutral defaults."""
    return {"event": kind, **EVENT_DEFAULTS[kind], **fields}
