"""What a watcher knows about a training run: `RunState`, folded event by event from events.jsonl.

Both dashboards (the `--watch` terminal view and the studio's monitor) render a RunState. Torch-free.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from engine.runs.rundir import FINAL_STATUSES, RunEvent

LOG_TAIL_LINES = 20  # error-tail lines kept
RECENT_LOG_LINES = 20  # `log` messages and train.log lines kept
SPIKE_FACTOR = 1.5  # a logged loss above this times the running median is a spike
SPIKE_WINDOW = 50  # the running median is over this many previous logged losses
SPIKE_MIN_POINTS = 10  # and needs at least this many (the first steps fall too fast to judge)


def is_spike(previous: list[float], loss: float) -> bool:
    """True when loss is a spike: above SPIKE_FACTOR times the median of the last SPIKE_WINDOW logged losses
    before it (at least SPIKE_MIN_POINTS of them)."""
    window = previous[-SPIKE_WINDOW:]
    return len(window) >= SPIKE_MIN_POINTS and loss > SPIKE_FACTOR * statistics.median(window)


@dataclass
class RunState:
    """Everything seen of a run so far, in the shape dashboards render (a plain copy, safe to hand around)."""

    run_dir: str  # the run directory
    status: str = "unknown"  # running | finished | stopped | failed | unknown
    step: int = 0  # last step reported
    max_steps: int | None = None  # steps the run will take (from the start event)
    steps: list[int] = field(default_factory=list)  # x values of the training-loss curve
    losses: list[float] = field(default_factory=list)  # training loss at each of `steps`
    val_steps: list[int] = field(default_factory=list)  # x values of the validation-loss curve
    val_losses: list[float] = field(default_factory=list)  # validation loss at each of `val_steps`
    lr: float | None = None  # last learning rate
    tokens_per_s: float | None = None  # last throughput
    mfu: float | None = None  # last model-FLOPs utilisation (fraction), when the trainer knows it
    grad_norm: float | None = None  # last gradient norm (before clipping)
    grad_norms: list[float] = field(default_factory=list)  # gradient norm at each of `steps`
    clipped: bool | None = None  # whether the last logged step's gradient was clipped (None: not recorded)
    clipped_steps: int = 0  # logged steps whose gradient was clipped
    update_ratio: dict[str, float] = field(default_factory=dict)  # last ||dW||/||W|| per layer group
    weight_norm: dict[str, float] = field(default_factory=dict)  # last ||W|| per layer group
    ratio_steps: list[int] = field(default_factory=list)  # steps that recorded update ratios
    max_ratios: list[float] = field(default_factory=list)  # the largest group's update ratio at each of those
    spikes: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of each spike (is_spike)
    tokens: int = 0  # tokens trained on so far
    elapsed_s: float | None = None  # training time so far, per the trainer
    eta_s: float | None = None  # trainer's estimate of the time left
    last_checkpoint: str | None = None  # path of the newest checkpoint
    best_checkpoint: str | None = None  # path of the newest checkpoint marked best
    bundle: str | None = None  # exported model bundle (on finished)
    error: str | None = None  # one-line error message (on failed)
    error_tail: list[str] = field(default_factory=list)  # last lines of the traceback/log (on failed)
    logs: list[str] = field(default_factory=list)  # recent `log` event messages, oldest first
    log_tail: list[str] = field(default_factory=list)  # last lines of train.log (what the trainer printed)
    params: int | None = None  # model parameter count
    preset: str | None = None  # model preset name
    device: str | None = None  # device the trainer runs on
    dtype: str | None = None  # training dtype
    world_size: int | None = None  # number of training processes
    pid: int | None = None  # trainer process id
    started_at: float | None = None  # unix time of the (latest) start event
    updated_at: float | None = None  # unix time of the newest event
    events_seen: int = 0  # events applied so far

    @property
    def progress(self) -> float | None:
        """Fraction of steps done in [0, 1], when max_steps is known."""
        if not self.max_steps:
            return None
        return min(1.0, max(0.0, self.step / self.max_steps))

    @property
    def last_loss(self) -> float | None:
        """Latest training loss."""
        return self.losses[-1] if self.losses else None

    @property
    def last_val_loss(self) -> float | None:
        """Latest validation loss."""
        return self.val_losses[-1] if self.val_losses else None

    @property
    def is_final(self) -> bool:
        """True once the run finished, stopped or failed."""
        return self.status in FINAL_STATUSES

    def apply(self, ev: RunEvent) -> None:
        """Fold one event into the state."""
        d = ev.data
        self.events_seen += 1
        self.updated_at = ev.time or self.updated_at
        if ev.step is not None and ev.event in ("start", "step", "status"):
            self.step = ev.step
        if ev.event == "start":
            self.status, self.error, self.error_tail = "running", None, []  # a (resumed) run begins
            self.started_at = ev.time
            self.max_steps = _int(d.get("max_steps"), self.max_steps)
            self.params = _int(d.get("params"), self.params)
            self.world_size = _int(d.get("world_size"), self.world_size)
            self.pid = _int(d.get("pid"), self.pid)
            self.preset = d.get("preset", self.preset)
            self.device = d.get("device", self.device)
            self.dtype = d.get("dtype", self.dtype)
            self._truncate_after(self.step)
        elif ev.event == "step":
            self._step_point(ev.step, d)
            self.lr = _float(d.get("lr"), self.lr)
            self.tokens_per_s = _float(d.get("tokens_per_s"), self.tokens_per_s)
            self.mfu = _float(d.get("mfu"), None)
            self.grad_norm = _float(d.get("grad_norm"), self.grad_norm)
            self._dynamics(ev.step, d)
            self.tokens = _int(d.get("tokens"), self.tokens) or 0
            self.elapsed_s = _float(d.get("elapsed_s"), self.elapsed_s)
            self.eta_s = _float(d.get("eta_s"), None)
        elif ev.event == "eval":
            if isinstance(d.get("val_loss"), (int, float)) and ev.step is not None:
                self.val_steps.append(ev.step)
                self.val_losses.append(float(d["val_loss"]))
        elif ev.event == "checkpoint":
            self.last_checkpoint = d.get("path", self.last_checkpoint)
            if d.get("best"):
                self.best_checkpoint = self.last_checkpoint
        elif ev.event == "log":
            self._log(str(d.get("message", "")))
        elif ev.event == "status":
            self.status = str(d.get("status", self.status))
            self.bundle = d.get("bundle", self.bundle)
            if self.status == "finished":
                self.eta_s = 0.0
        elif ev.event == "error":
            self.error = str(d.get("message", "")) or "training failed"
            tail = d.get("tail", [])
            self.error_tail = (tail.splitlines() if isinstance(tail, str) else [str(x) for x in tail])[
                -LOG_TAIL_LINES:
            ]

    @property
    def last_spike(self) -> tuple[int, float] | None:
        """(step, loss) of the latest loss spike."""
        return self.spikes[-1] if self.spikes else None

    def _step_point(self, step: int | None, d: dict[str, Any]) -> None:
        """A logged loss and gradient norm on the curves; a spike noted."""
        loss = _float(d.get("loss"), None)
        if loss is None or step is None:
            return
        if is_spike(self.losses, loss):
            self.spikes.append((step, loss))
        self.steps.append(step)
        self.losses.append(loss)
        self.grad_norms.append(_float(d.get("grad_norm"), None) or 0.0)

    def _dynamics(self, step: int | None, d: dict[str, Any]) -> None:
        """What the trainer recorded inside the step (absent from older run dirs): clipping, update ratios."""
        if isinstance(d.get("clipped"), bool):
            self.clipped = d["clipped"]
            self.clipped_steps += d["clipped"]
        ratios, norms = _numbers(d.get("update_ratio")), _numbers(d.get("weight_norm"))
        if norms:
            self.weight_norm = norms
        if ratios and step is not None:
            self.update_ratio = ratios
            self.ratio_steps.append(step)
            self.max_ratios.append(max(ratios.values()))

    def _log(self, message: str) -> None:
        """Remember a log line, keeping only the recent ones."""
        self.logs.append(message)
        del self.logs[:-RECENT_LOG_LINES]

    def _truncate_after(self, step: int) -> None:
        """Drop curve points past a resume step (they were trained again after the checkpoint)."""
        keep = sum(1 for s in self.steps if s <= step)
        del self.steps[keep:], self.losses[keep:], self.grad_norms[keep:]
        keep = sum(1 for s in self.ratio_steps if s <= step)
        del self.ratio_steps[keep:], self.max_ratios[keep:]
        self.spikes = [spike for spike in self.spikes if spike[0] <= step]
        keep = sum(1 for s in self.val_steps if s <= step)
        del self.val_steps[keep:], self.val_losses[keep:]


def _numbers(value: Any) -> dict[str, float]:
    """A {name: number} field as floats (nothing else kept); {} when absent or of another shape."""
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if _float(v, None) is not None}


def _int(value: Any, default: int | None) -> int | None:
    """value as an int when it is a number, else default."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _float(value: Any, default: float | None) -> float | None:
    """value as a float when it is a number, else default."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
