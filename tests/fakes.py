"""A stand-in trainer module for runner and dashboard tests: real subprocess, events per docs/INTERFACES.md."""

from __future__ import annotations

import textwrap
from pathlib import Path

FAKE_TRAINER = textwrap.dedent(
    '''
    """A stand-in for trainer.train: writes events.jsonl per docs/INTERFACES.md, stops on SIGINT.

    Behaviour comes from the config (crash_at, hang_at, resume_from, bad_input) or, for callers whose config
    must stay a valid TrainConfig, from the environment: FAKE_CRASH_AT, FAKE_STEP_S (seconds per step),
    FAKE_BUNDLE (the finished run's bundle; empty for none).
    """
    import argparse, json, os, signal, sys, time

    stop = False

    def on_signal(signum, frame):
        global stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    args = argparse.ArgumentParser()
    args.add_argument("--config")
    args.add_argument("--resume", action="store_true")
    args = args.parse_args()
    cfg = json.load(open(args.config))
    if cfg.get("bad_input"):
        print("helium: error: " + cfg["bad_input"], file=sys.stderr)
        sys.exit(2)
    run_dir = os.path.dirname(args.config)
    out = open(os.path.join(run_dir, "events.jsonl"), "a")

    def emit(**fields):
        out.write(json.dumps({"time": time.time(), **fields}) + "\\n")
        out.flush()

    crash_at = cfg.get("crash_at", int(os.environ.get("FAKE_CRASH_AT", "-1")))
    step_s = float(os.environ.get("FAKE_STEP_S", "0"))
    first = cfg.get("resume_from", 0) if args.resume else 0
    emit(event="start", step=first, max_steps=cfg["max_steps"], tokens_per_step=64, params=1234,
         preset="fake", device="cpu", dtype="float32", world_size=1, pid=os.getpid())
    emit(event="status", status="running", step=first)
    print("fake trainer started", flush=True)
    step = first
    while step < cfg["max_steps"]:
        if stop:
            emit(event="checkpoint", step=step, path=f"checkpoints/step_{step:06d}.pt", best=False)
            emit(event="status", status="stopped", step=step)
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
        emit(event="step", step=step, loss=10.0 / step, lr=0.001, tokens_per_s=1000.0, mfu=None,
             grad_norm=1.0, tokens=64 * step, elapsed_s=0.1 * step, eta_s=0.1 * (cfg["max_steps"] - step),
             extra_field="kept")
        if step % 2 == 0:
            emit(event="eval", step=step, val_loss=11.0 / step)
    emit(event="log", message="exporting bundle")
    emit(event="checkpoint", step=step, path="checkpoints/best.pt", best=True)
    emit(event="status", status="finished", step=step, bundle=os.environ.get("FAKE_BUNDLE", os.path.join(run_dir, "bundle")))
    '''
)


def fake_trainer_kwargs(tmp_path: Path) -> dict:
    """start_run keyword arguments that run the fake trainer module instead of trainer.train."""
    mod_dir = tmp_path / "fakemods"
    mod_dir.mkdir()
    (mod_dir / "fake_trainer.py").write_text(FAKE_TRAINER)
    return {"module": "fake_trainer", "env": {"PYTHONPATH": str(mod_dir)}}
