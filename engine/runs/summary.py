"""Training runs seen from outside, for `helium runs`: a one-line summary of each run dir, and a metric's curve.

Torch-free: read through the run-dir protocol (rundir, runstate), never by loading a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.jsonfile import read_json
from engine.runs.rundir import CONFIG_FILE, RunEvent, is_run_dir, is_running, read_events
from engine.runs.runstate import RunState

METRICS = ("loss", "val_loss", "lr", "grad_norm")  # what `helium runs compare --metric` plots
X_AXES = ("step", "tokens", "time")  # what it plots them against (time: training seconds)


@dataclass
class RunSummary:
    """One run dir in a line: what was trained on what, how far it got and how well."""

    path: Path  # the run dir
    preset: str | None  # model preset (or "<base> fine-tune")
    params: int | None  # parameter count
    data: str | None  # the prepared data dir it trained on (from train_config.json)
    status: str  # finished | stopped | failed | running | interrupted (ended with no final status) | unknown
    step: int  # steps done
    max_steps: int | None  # steps planned
    tokens: int  # tokens trained on
    best_val_loss: float | None  # lowest val loss measured
    elapsed_s: float | None  # training wall time, over all sessions

    @property
    def name(self) -> str:
        """The run dir's name."""
        return self.path.name


def fold(events: list[RunEvent], run_dir: Path) -> RunState:
    """A run's state from its events."""
    state = RunState(run_dir=str(run_dir))
    for ev in events:
        state.apply(ev)
    return state


def summarize(run_dir: str | Path) -> RunSummary:
    """The summary of one run dir; ValueError (one line) when it is not a run dir."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: {'not a directory (give the run dir)' if run_dir.exists() else 'no such directory'}")
    if not is_run_dir(run_dir):
        raise ValueError(f"{run_dir}: not a training run (no {CONFIG_FILE} or events.jsonl)")
    state = fold(read_events(run_dir), run_dir)
    status = state.status
    if not state.is_final:
        status = "running" if is_running(run_dir) else "interrupted" if state.events_seen else "unknown"
    return RunSummary(
        path=run_dir, preset=state.preset or _config(run_dir).get("preset"), params=state.params,
        data=_str(_config(run_dir).get("data")), status=status, step=state.step, max_steps=state.max_steps,
        tokens=state.tokens, best_val_loss=min(state.val_losses, default=None), elapsed_s=state.elapsed_s,
    )  # fmt: skip


def list_runs(root: str | Path) -> list[RunSummary]:
    """Every run dir directly inside root (or root itself when it is one), oldest first; [] when none."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: {'not a directory (give the run dir)' if root.exists() else 'no such directory'}")
    dirs = [root] if is_run_dir(root) else sorted(p for p in root.iterdir() if p.is_dir() and is_run_dir(p))
    return sorted((summarize(d) for d in dirs), key=lambda r: (_mtime(r.path), r.name))


def series(run_dir: str | Path, metric: str, x: str = "step") -> tuple[list[float], list[float]]:
    """A metric's curve in a run dir against x (see METRICS, X_AXES); empty when the run never logged it.

    Points past a resume's step are dropped (they were trained again), as RunState does.
    """
    if metric not in METRICS or x not in X_AXES:
        raise ValueError(f"unknown metric {metric!r} or x axis {x!r}")
    events = read_events(run_dir)
    at_step: dict[int, tuple[int, float]] = {}  # step -> (tokens, elapsed_s), from the step events
    per_step = 0  # tokens per step (start event): a val point's tokens when no step event has them
    points: list[tuple[int, float]] = []  # (step, value)
    kind = "eval" if metric == "val_loss" else "step"
    for ev in events:
        if ev.event == "start" and ev.step is not None:
            points = [p for p in points if p[0] <= ev.step]
            per_step = _int(ev.get("tokens_per_step")) or per_step
        if ev.event == "step" and ev.step is not None:
            at_step[ev.step] = (_int(ev.get("tokens")) or ev.step * per_step, _num(ev.get("elapsed_s")))
        value = _num(ev.get(metric))
        if ev.event == kind and ev.step is not None and value is not None:
            points.append((ev.step, value))
    xs, ys = [], []
    for step, value in points:
        tokens, elapsed = at_step.get(step, (step * per_step, None))
        where = {"step": float(step), "tokens": float(tokens), "time": elapsed}[x]
        if where is not None:
            xs.append(where)
            ys.append(value)
    return xs, ys


def _config(run_dir: Path) -> dict[str, Any]:
    """The run's train_config.json as a dict ({} when absent or unreadable)."""
    try:
        value = read_json(run_dir / CONFIG_FILE)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _mtime(path: Path) -> float:
    """When a run dir's events last changed (its own mtime when it has none)."""
    for candidate in (path / "events.jsonl", path):
        try:
            return candidate.stat().st_mtime
        except OSError:
            continue
    return 0.0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
