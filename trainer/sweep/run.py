"""Training a sweep's points: each one a real `helium train` subprocess in its own run dir under SWEEP_DIR.

One at a time on a CPU; on a machine with several GPUs, one point per GPU at a time (CUDA_VISIBLE_DEVICES).
A finished point is skipped, a point with a checkpoint resumes (`--resume`), a point that never saved one starts
over (`--restart`). The trainer's own checkpoints make a killed sweep continue where it stopped.
"""

from __future__ import annotations

import math
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.runs.rundir import has_checkpoints, is_run_dir, is_running
from engine.runs.summary import summarize
from trainer.config import TrainConfig
from trainer.sweep.plan import Point, SweepPlan

WARMUP_SHARE = 0.1  # default warmup: a tenth of each point's steps (a fixed 100 would swallow short points)
CHECKPOINTS_PER_POINT = 5  # a killed point loses at most a fifth of its steps


@dataclass
class Outcome:
    """How a point's training ended."""

    point: Point
    code: int  # the `helium train` exit code (0 also when it was stopped)
    status: str  # its run dir's status afterwards: finished | stopped | failed | ...


def state(out: Path, point: Point) -> str:
    """What training a point needs: done (finished on its whole budget), resume (from its newest checkpoint),
    restart (a dir without a checkpoint), new, or running (another process trains it)."""
    run_dir = out / point.name
    if not run_dir.exists():
        return "new"
    if is_running(run_dir):
        return "running"
    if is_run_dir(run_dir):
        summary = summarize(run_dir)
        if summary.status == "finished" and summary.tokens >= point.tokens:  # not one cut short by hand
            return "done"
    return "resume" if has_checkpoints(run_dir) else "restart"


def steps_of(plan: SweepPlan, point: Point) -> int:
    """The optimizer steps a point trains (its budget rounded up to whole steps, as the trainer does)."""
    context = plan.train.get("context") or plan.shape(point.size).context_length
    return math.ceil(point.tokens / (plan.train.get("batch_size") or TrainConfig().batch_size) / context)


def train_args(plan: SweepPlan, out: Path, point: Point, how: str, runtime: list[str]) -> list[str]:
    """The `helium train` command line of a point (`how`: new, resume or restart; runtime: --device, --dtype)."""
    steps = steps_of(plan, point)
    options = dict(plan.train)
    if options.get("warmup") is None:
        options["warmup"] = max(1, round(WARMUP_SHARE * steps))
    options.setdefault("ckpt_interval", max(1, steps // CHECKPOINTS_PER_POINT))
    args = [sys.executable, "-m", "helium_tui.cli", "train", "--data", plan.data, "--out", str(out / point.name),
            "--preset", point.size, "--max-tokens", str(point.tokens), *runtime]  # fmt: skip
    for key, value in options.items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args + {"new": [], "resume": ["--resume"], "restart": ["--restart"]}[how]


def gpu_slots(runtime: list[str]) -> list[str | None]:
    """One slot per visible GPU when the points train on CUDA, else one CPU slot (None: the environment as is)."""
    device = runtime[runtime.index("--device") + 1] if "--device" in runtime else "auto"
    if device not in ("auto", "cuda"):
        return [None]
    import torch

    if not torch.cuda.is_available():
        return [None]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids or [str(i) for i in range(torch.cuda.device_count())] or [None]


def run_points(
    plan: SweepPlan, out: Path, points: list[Point], runtime: list[str], say: Callable[[str], None],
    slots: list[str | None] | None = None,
) -> list[Outcome]:  # fmt: skip
    """Train the points that are not done, one per slot at a time; an outcome for each point trained.

    A failed point is reported and the others go on; a stopped one (Ctrl-C) ends the sweep after the running ones.
    """
    free: queue.Queue[str | None] = queue.Queue()
    for slot in slots or gpu_slots(runtime):
        free.put(slot)
    todo = [(p, state(out, p)) for p in points]
    for p, how in todo:
        if how in ("done", "running"):
            say(f"{p.name}: {'already finished' if how == 'done' else 'training in another process'}; skipped")
    todo = [(p, how) for p, how in todo if how not in ("done", "running")]
    outcomes: list[Outcome] = []
    stop = threading.Event()
    threads = []
    for p, how in todo:
        slot = free.get()  # waits for a slot to come back
        if stop.is_set():
            break
        thread = threading.Thread(target=_train_one, args=(plan, out, p, how, runtime, slot, say, free, outcomes, stop))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return sorted(outcomes, key=lambda o: o.point.index)


def _train_one(
    plan: SweepPlan, out: Path, point: Point, how: str, runtime: list[str], slot: str | None, say: Callable[[str], None],
    free: queue.Queue, outcomes: list[Outcome], stop: threading.Event,
) -> None:  # fmt: skip
    """Train one point in a subprocess, its output lines prefixed with the point's name; then free its slot."""
    total = len(plan.points())
    where = f" on GPU {slot}" if slot is not None else ""
    verb = {"new": "training", "resume": "resuming", "restart": "starting over"}[how]
    say(f"[{point.index + 1}/{total}] {point.name}: {verb} {point.size} on {point.tokens:,} tokens{where}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    try:
        proc = subprocess.Popen(
            train_args(plan, out, point, how, runtime), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env, errors="replace",
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            say(f"  {point.name} | {line.rstrip()}")
        code = proc.wait()
        status = summarize(out / point.name).status if is_run_dir(out / point.name) else "failed"
        if code == 0 and status != "finished":
            stop.set()  # stopped (Ctrl-C reached it too): the sweep stops here
        elif code != 0:
            say(f"{point.name}: failed (exit {code}); the other points go on")
        outcomes.append(Outcome(point, code, status))
    finally:
        free.put(slot)
