"""Run training in the background and follow it: spawn `python -m trainer.train`, tail its events.jsonl.

The run directory (engine.runs.rundir, docs/INTERFACES.md) is the only link between the trainer and its watchers,
so a UI can start a run, crash or quit, and attach again later. The engine never imports the trainer: it
spawns it by name. Whether a run is alive is read from the run dir's lock, for runs started anywhere.
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
from pathlib import Path
from typing import Any

from engine.files import atomic_write_text
from engine.runs.rundir import (
    CONFIG_FILE,
    ERROR_PREFIX,
    EVENTS_FILE,
    LOCK_FD_ENV,
    LOG_FILE,
    EventReader,
    RunDirBusy,
    RunEvent,
    RunLock,
    check_new_run_dir,
    check_resumable,
    is_running,
    lock_holder,
)
from engine.runs.runstate import LOG_TAIL_LINES, RECENT_LOG_LINES, RunState

TRAIN_MODULE = "trainer.train"

__all__ = ["RunEvent", "RunHandle", "RunState", "attach", "start_run", "tail_lines"]


def tail_lines(path: Path, n: int = LOG_TAIL_LINES, max_bytes: int = 64_000) -> list[str]:
    """The last n non-empty lines of a text file ([] when it does not exist or is not a regular file)."""
    if not path.is_file():
        return []
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-n:]


class RunHandle:
    """A training run seen through its directory: read new events, ask for status, stop it.

    Made by `start_run` (owns the child process) or `attach` (a run started anywhere: its liveness and pid
    come from the run dir's lock). Read events (poll, events, status) from one thread at a time;
    snapshot() is safe from any thread.
    """

    def __init__(self, run_dir: str | Path, process: subprocess.Popen | None = None) -> None:
        self.run_dir = Path(run_dir)  # the run directory
        self.process = process  # the child process when this handle started it
        self._reader = EventReader(self.run_dir / EVENTS_FILE)
        self._state = RunState(run_dir=str(self.run_dir), pid=self.pid)
        self._callbacks: list[Callable[[RunEvent], None]] = []
        self._lock = threading.Lock()
        self._stop_requested_at: float | None = None
        self._killed = False
        self._alive_at_poll = True  # what the last poll() saw, so events() ends on the same observation
        self._log_size = -1  # size of train.log when log_tail was last read

    @property
    def owned(self) -> bool:
        """True when this handle started the process (so a UI may stop it on Ctrl-C)."""
        return self.process is not None

    @property
    def pid(self) -> int | None:
        """The trainer's pid: the child's, or the one recorded in the run dir's lock."""
        if self.process is not None:
            return self.process.pid
        return lock_holder(self.run_dir)

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
        return is_running(self.run_dir)

    def poll(self) -> list[RunEvent]:
        """New events since the last call (non-blocking); adds a synthetic end if the process died silently."""
        with self._lock:
            alive = self.is_alive()  # before reading, so nothing written before death is missed
            self._alive_at_poll = alive
            events = self._reader.read(final=not alive)
            for ev in events:
                self._state.apply(ev)
            self._read_log_tail()
            started = self.process is not None or self._state.status == "running"
            if not alive and started and not self._state.is_final:
                events += self._synthesize_end()
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
        """Iterate over new events; with follow, wait for more until the run ends or its process is gone.

        The end is judged on what the last poll() saw, so a process that dies between two checks still
        gets its final (synthesized) status before the iteration stops.
        """
        while True:
            yield from self.poll()
            if not follow or self._state.is_final or not self._alive_at_poll:
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
        pid = self.pid
        if not self.is_alive() or pid is None:
            return False
        if self._stop_requested_at is None:
            self._stop_requested_at = time.time()
        _signal(pid, signal.SIGINT)
        return True

    @property
    def stop_requested(self) -> bool:
        """True once request_stop() or stop() was called."""
        return self._stop_requested_at is not None

    def stop(self, timeout: float = 30.0, term_timeout: float = 5.0) -> str:
        """Stop gracefully; after timeout seconds send SIGTERM, then SIGKILL. Returns the final status."""
        pid = self.pid
        if self.request_stop() and not self.wait(timeout):
            assert pid is not None
            _signal(pid, signal.SIGTERM)
            if not self.wait(term_timeout):
                self._killed = True
                _kill_group(pid)
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

    def _synthesize_end(self) -> list[RunEvent]:
        """Events for a process gone without a final status: `stopped` if asked to stop, else error + failed."""
        now = time.time()
        if self.stop_requested:  # asked to stop, e.g. during start-up before the trainer's handler was set
            note = "killed: it did not stop in time" if self._killed else "it ended without a final status"
            events = [
                RunEvent("log", now, {"message": f"stopped on request ({note})"}, synthetic=True),
                RunEvent("status", now, {"status": "stopped", "step": self._state.step}, synthetic=True),
            ]
        else:
            events = [
                RunEvent("status", now, {"status": "failed", "step": self._state.step}, synthetic=True)
            ]
            if self._state.error is None:
                message, tail = self._failure_message()
                events.insert(0, RunEvent("error", now, {"message": message, "tail": tail}, synthetic=True))
        for ev in events:
            self._state.apply(ev)
        return events

    def _failure_message(self) -> tuple[str, list[str]]:
        """A one-line reason for a silent death (the trainer's own error line when it printed one) and the log tail."""
        tail = [line for line in tail_lines(self.log_path) if not line.startswith("$ ")]  # not our command line
        code = self.process.returncode if self.process is not None else None
        if tail and tail[-1].startswith(ERROR_PREFIX):  # the trainer's one-line error (bad input)
            return tail[-1][len(ERROR_PREFIX) :], tail
        if code is not None:
            return f"training process exited with code {code} without a final status", tail
        return "training process is gone without a final status", tail


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


def start_run(
    config: dict[str, Any],
    run_dir: str | Path,
    resume: bool = False,
    restart: bool = False,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    module: str = TRAIN_MODULE,
) -> RunHandle:
    """Write RUN_DIR/train_config.json and start `python -m trainer.train --config ... [--resume|--restart]`.

    The process gets its own session (a UI's Ctrl-C does not reach it, its crash does not reach the UI); its
    output goes to RUN_DIR/train.log. `env` adds to the current environment. Raises ValueError when a run is
    going in run_dir, when resume finds nothing to resume, or when a new run would overwrite an earlier
    one (resume it, restart it, or pick another directory).
    """
    run_dir = Path(run_dir).resolve()
    if is_running(run_dir):
        raise RunDirBusy(f"{run_dir}: a training run is already going there (pid {lock_holder(run_dir) or '?'})")
    if resume:
        check_resumable(run_dir)
    else:
        check_new_run_dir(run_dir, restart=restart)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")

    handle = RunHandle(run_dir)
    if resume:  # history of the earlier segments feeds the curves, not the status of this one
        handle.poll()
        handle._state.status = "unknown"
        handle._state.error, handle._state.error_tail = None, []
    else:  # a new run's events are its own (the trainer does the same); attach() finds the dir at once
        (run_dir / EVENTS_FILE).write_bytes(b"")

    flags = ["--resume"] if resume else ["--restart"] if restart else []
    cmd = [python, "-m", module, "--config", str(config_path), *flags]
    with RunLock(run_dir) as lock, open(run_dir / LOG_FILE, "ab") as log:  # locked from now on: the child
        assert lock.fd is not None  # inherits the lock and adopts it, so no second run can slip in meanwhile
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), LOCK_FD_ENV: str(lock.fd)}
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env,
            start_new_session=True, pass_fds=(lock.fd,),
        )  # fmt: skip
    handle.process = process
    handle._state.pid = process.pid
    return handle


def attach(run_dir: str | Path) -> RunHandle:
    """A handle on a run that is going or has ended; events() replays it from the first event.

    Raises ValueError when run_dir is not a run directory (no events.jsonl and no live trainer).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run directory")
    if not (run_dir / EVENTS_FILE).is_file() and not is_running(run_dir):
        raise ValueError(f"{run_dir} has no training events ({EVENTS_FILE}); is it a run directory?")
    return RunHandle(run_dir)
