"""Run training in the background and follow it: spawn `python -m trainer.train`, tail its events.jsonl.

The run directory (docs/INTERFACES.md) is the only link between the trainer and its watchers, so a UI can
start a run, crash or quit, and attach again later. The engine never imports the trainer: it spawns it by name.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.files import atomic_write_text

CONFIG_FILE = "train_config.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "train.log"
PID_FILE = "run.pid"
TRAIN_MODULE = "trainer.train"
USER_ERROR_PREFIX = "helium: error: "  # how the trainer prints a one-line error before exiting
FINAL_STATUSES = ("finished", "stopped", "failed")
LOG_TAIL_LINES = 20
RECENT_LOG_LINES = 20


@dataclass
class RunEvent:
    """One line of events.jsonl: its kind, its time, and every other field in `data`."""

    event: str  # start | step | eval | checkpoint | log | status | error (or a kind this code does not know)
    time: float  # unix seconds when the trainer wrote it
    data: dict[str, Any] = field(default_factory=dict)  # all other fields, unknown ones included
    synthetic: bool = False  # True when made up by the runner (a run that died without a final status)

    @property
    def step(self) -> int | None:
        """The step the event refers to, when it has one."""
        step = self.data.get("step")
        return int(step) if isinstance(step, (int, float)) else None

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the event (`data[key]`), or default."""
        return self.data.get(key, default)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> RunEvent:
        """Build from a decoded JSON object; raises ValueError without an `event` name."""
        name = obj.get("event")
        if not isinstance(name, str):
            raise ValueError("event line has no 'event' name")
        when = obj.get("time")
        data = {k: v for k, v in obj.items() if k not in ("event", "time")}
        return cls(event=name, time=float(when) if isinstance(when, (int, float)) else 0.0, data=data)

    @classmethod
    def parse(cls, line: str | bytes) -> RunEvent | None:
        """Parse one events.jsonl line; None for a blank or malformed line."""
        try:
            obj = json.loads(line)
            return cls.from_dict(obj) if isinstance(obj, dict) else None
        except (ValueError, TypeError):
            return None

    def to_json(self) -> str:
        """The event as one events.jsonl line (without the newline)."""
        return json.dumps({"event": self.event, "time": self.time, **self.data})


class EventReader:
    """Tail events.jsonl from where it was last read; a line is only parsed once its newline is written."""

    def __init__(self, path: Path) -> None:
        self.path = path  # the events.jsonl being appended by the trainer
        self.offset = 0  # bytes consumed so far (always at a line start)
        self.skipped = 0  # complete lines that were not valid events

    def read(self, final: bool = False) -> list[RunEvent]:
        """New complete events; with final=True also a last line that never got its newline."""
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self.offset:
                    self.offset = 0  # the file was replaced: read it again from the top
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        complete, rest = chunk[:end], chunk[end:]
        self.offset += end
        lines = complete.splitlines()
        if final and rest.strip():
            lines.append(rest)
            self.offset += len(rest)
        events = []
        for line in lines:
            if not line.strip():
                continue
            event = RunEvent.parse(line)
            if event is None:
                self.skipped += 1
            else:
                events.append(event)
        return events


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
    grad_norm: float | None = None  # last gradient norm
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
            if isinstance(d.get("loss"), (int, float)) and ev.step is not None:
                self.steps.append(ev.step)
                self.losses.append(float(d["loss"]))
            self.lr = _float(d.get("lr"), self.lr)
            self.tokens_per_s = _float(d.get("tokens_per_s"), self.tokens_per_s)
            self.mfu = _float(d.get("mfu"), None)
            self.grad_norm = _float(d.get("grad_norm"), self.grad_norm)
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

    def _log(self, message: str) -> None:
        """Remember a log line, keeping only the recent ones."""
        self.logs.append(message)
        del self.logs[:-RECENT_LOG_LINES]

    def _truncate_after(self, step: int) -> None:
        """Drop curve points past a resume step (they were trained again after the checkpoint)."""
        keep = sum(1 for s in self.steps if s <= step)
        del self.steps[keep:], self.losses[keep:]
        keep = sum(1 for s in self.val_steps if s <= step)
        del self.val_steps[keep:], self.val_losses[keep:]


def _int(value: Any, default: int | None) -> int | None:
    """value as an int when it is a number, else default."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _float(value: Any, default: float | None) -> float | None:
    """value as a float when it is a number, else default."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def tail_lines(path: Path, n: int = LOG_TAIL_LINES, max_bytes: int = 64_000) -> list[str]:
    """The last n non-empty lines of a text file ([] when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-n:]


def pid_alive(pid: int) -> bool:
    """True when pid is a live training process (not a zombie, and on Linux one that was given a config)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no procfs (macOS): trust kill(0)
    try:
        stat = (proc / "stat").read_text()
        if stat[stat.rfind(")") + 2 :].startswith(("Z", "X")):
            return False  # a zombie: exited, not yet reaped
        return CONFIG_FILE.encode() in (proc / "cmdline").read_bytes()  # guards against a reused pid
    except OSError:
        return False


class RunHandle:
    """A training run seen through its directory: read new events, ask for status, stop it.

    Made by `start_run` (owns the child process) or `attach` (knows only the pid). Read events (poll, events,
    status) from one thread at a time; snapshot() is safe from any thread.
    """

    def __init__(self, run_dir: str | Path, process: subprocess.Popen | None = None, pid: int | None = None):
        self.run_dir = Path(run_dir)  # the run directory
        self.process = process  # the child process when this handle started it
        self.pid = process.pid if process is not None else pid  # trainer pid, when known
        self._reader = EventReader(self.run_dir / EVENTS_FILE)
        self._state = RunState(run_dir=str(self.run_dir), pid=self.pid)
        self._callbacks: list[Callable[[RunEvent], None]] = []
        self._lock = threading.Lock()
        self._stop_requested_at: float | None = None
        self._killed = False
        self._log_size = -1  # size of train.log when log_tail was last read

    @property
    def owned(self) -> bool:
        """True when this handle started the process (so a UI may stop it on Ctrl-C)."""
        return self.process is not None

    @property
    def log_path(self) -> Path:
        """RUN_DIR/train.log."""
        return self.run_dir / LOG_FILE

    def on_event(self, callback: Callable[[RunEvent], None]) -> None:
        """Call callback(event) for each new event, from whichever thread calls poll()/events()."""
        self._callbacks.append(callback)

    def is_alive(self) -> bool:
        """True while the training process runs."""
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def poll(self) -> list[RunEvent]:
        """New events since the last call (non-blocking); adds a synthetic failure if the process died silently."""
        with self._lock:
            alive = self.is_alive()  # before reading, so nothing written before death is missed
            events = self._reader.read(final=not alive)
            for ev in events:
                self._state.apply(ev)
            self._read_log_tail()
            known = self.pid is not None or self._state.status == "running"  # else: no process to judge by
            if not alive and known and not self._state.is_final:
                events += self._synthesize_failure()
        for ev in events:  # outside the lock: a callback may call snapshot()
            for callback in self._callbacks:
                callback(ev)
        return events

    def _read_log_tail(self) -> None:
        """Refresh state.log_tail when train.log changed size."""
        try:
            size = self.log_path.stat().st_size
        except OSError:
            return
        if size != self._log_size:
            self._log_size = size
            self._state.log_tail = tail_lines(self.log_path, RECENT_LOG_LINES)

    def events(self, follow: bool = True, poll_interval: float = 0.2) -> Iterator[RunEvent]:
        """Iterate over new events; with follow, wait for more until the run ends or its process is gone."""
        while True:
            yield from self.poll()
            if not follow or self._state.is_final or not self.is_alive():
                return
            time.sleep(poll_interval)

    def status(self) -> str:
        """running | finished | stopped | failed | unknown (reads new events first)."""
        self.poll()
        if self._state.status == "unknown" and self.is_alive():
            return "running"
        return self._state.status

    def snapshot(self) -> RunState:
        """A copy of everything seen so far (call poll() or events() to see more)."""
        with self._lock:
            state = copy.deepcopy(self._state)
        if state.status == "unknown" and self.is_alive():
            state.status = "running"  # started, no event written yet
        return state

    def request_stop(self) -> bool:
        """Ask the run to stop gracefully (SIGINT: it saves a checkpoint and writes `stopped`); False if gone."""
        if not self.is_alive() or self.pid is None:
            return False
        if self._stop_requested_at is None:
            self._stop_requested_at = time.time()
        _signal(self.pid, signal.SIGINT)
        return True

    @property
    def stop_requested(self) -> bool:
        """True once request_stop() or stop() was called."""
        return self._stop_requested_at is not None

    def stop(self, timeout: float = 30.0, term_timeout: float = 5.0) -> str:
        """Stop gracefully; after timeout seconds send SIGTERM, then SIGKILL. Returns the final status."""
        if self.request_stop() and not self.wait(timeout):
            assert self.pid is not None
            _signal(self.pid, signal.SIGTERM)
            if not self.wait(term_timeout):
                self._killed = True
                _kill_group(self.pid)
                self.wait(5.0)
        return self.status()

    def wait(self, timeout: float) -> bool:
        """Wait up to timeout seconds for the process to exit; True if it did."""
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.is_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _synthesize_failure(self) -> list[RunEvent]:
        """Events for a process gone without a final status: `stopped` if asked to stop, else an error + failed."""
        code = self.process.returncode if self.process is not None else None
        now = time.time()
        if self.stop_requested:  # asked to stop, e.g. during start-up before the trainer's handler was set
            note = "killed: it did not stop in time" if self._killed else "it ended without a final status"
            events = [
                RunEvent("log", now, {"message": f"stopped on request ({note})"}, synthetic=True),
                RunEvent("status", now, {"status": "stopped", "step": self._state.step}, synthetic=True),
            ]
            for ev in events:
                self._state.apply(ev)
            return events
        tail = [
            line for line in tail_lines(self.log_path) if not line.startswith("$ ")
        ]  # not our command line
        if tail and tail[-1].startswith(USER_ERROR_PREFIX):  # the trainer's own one-line error (bad input)
            message = tail[-1][len(USER_ERROR_PREFIX) :]
        elif code is not None:
            message = f"training process exited with code {code} without a final status"
        else:
            message = "training process is gone without a final status"
        events = []
        if self._state.error is None:
            events.append(RunEvent("error", now, {"message": message, "tail": tail}, synthetic=True))
        events.append(RunEvent("status", now, {"status": "failed", "step": self._state.step}, synthetic=True))
        for ev in events:
            self._state.apply(ev)
        return events


def _signal(pid: int, sig: signal.Signals) -> None:
    """Send sig to pid, ignoring a process that is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_group(pid: int) -> None:
    """SIGKILL the run's whole session (it leads its own process group), or just pid."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        _signal(pid, signal.SIGKILL)


def read_pid(run_dir: Path) -> int | None:
    """The pid recorded in RUN_DIR/run.pid, if any."""
    try:
        return int((run_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def start_run(
    config: dict[str, Any],
    run_dir: str | Path,
    resume: bool = False,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    module: str = TRAIN_MODULE,
) -> RunHandle:
    """Write RUN_DIR/train_config.json and start `python -m trainer.train --config ... [--resume]` in the background.

    The process gets its own session (a UI's Ctrl-C does not reach it, its crash does not reach the UI); its
    output goes to RUN_DIR/train.log and its pid to RUN_DIR/run.pid. `env` adds to the current environment.
    Raises ValueError when a run is already going in run_dir, or when run_dir holds an earlier run and
    resume is False (resume it, or pick another directory).
    """
    run_dir = Path(run_dir).resolve()
    old_pid = read_pid(run_dir)
    if old_pid is not None and pid_alive(old_pid):
        raise ValueError(f"a training run is already going in {run_dir} (pid {old_pid})")
    events_path = run_dir / EVENTS_FILE
    if not resume and events_path.exists() and events_path.stat().st_size > 0:
        raise ValueError(f"{run_dir} already holds a training run; resume it or choose another directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")

    handle = RunHandle(run_dir)
    if resume:  # history of the earlier segments feeds the curves, not the status of this one
        handle.poll()
        handle._state.status = "unknown"
        handle._state.error, handle._state.error_tail = None, []

    cmd = [python, "-m", module, "--config", str(config_path)] + (["--resume"] if resume else [])
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(run_dir / LOG_FILE, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env,
            start_new_session=True,
        )  # fmt: skip
    atomic_write_text(run_dir / PID_FILE, f"{process.pid}\n")
    handle.process, handle.pid = process, process.pid
    handle._state.pid = process.pid
    return handle


def attach(run_dir: str | Path) -> RunHandle:
    """A handle on a run that is going or has ended; events() replays it from the first event.

    Raises ValueError when run_dir is not a run directory (no events.jsonl and no live process).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run directory")
    pid = read_pid(run_dir)
    has_events = (run_dir / EVENTS_FILE).exists()
    if not has_events and not (pid is not None and pid_alive(pid)):
        raise ValueError(f"{run_dir} has no training events ({EVENTS_FILE}); is it a run directory?")
    if pid is None and has_events:
        first = EventReader(run_dir / EVENTS_FILE).read()
        starts = [ev for ev in first if ev.event == "start"]
        pid = _int(starts[-1].get("pid"), None) if starts else None
    return RunHandle(run_dir, pid=pid)
