"""The run directory protocol: file names, the events.jsonl schema with its one writer and reader, and the lock.

One module for everyone who touches a run dir (trainer, runner, dashboard, studio, the tests' fake trainer).
Torch-free. The trainer holds an OS lock on RUN_DIR/run.lock for as long as it lives (the kernel drops it when
the process dies, however it dies), so "is a run going here?" is one question with one answer.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.jsonfile import parse
from engine.safe_read import open_regular

CONFIG_FILE = "train_config.json"  # the serialized TrainConfig
EVENTS_FILE = "events.jsonl"  # one JSON event per line (SCHEMA below)
LOG_FILE = "train.log"  # stdout/stderr of a background run
LOCK_FILE = "run.lock"  # flock-ed by the live trainer; holds its pid
CHECKPOINTS_DIR = "checkpoints"  # step_NNNNNN.pt and best.pt
BUNDLE_DIR = "bundle"  # the model bundle exported at the end
ERROR_PREFIX = "helium: error: "  # how every Helium program prints a one-line error before exiting
FINAL_STATUSES = ("finished", "stopped", "failed")
STATUSES = ("running", *FINAL_STATUSES)
MAX_LINE_BYTES = 1 << 20  # longer event lines are skipped, never parsed

_INT, _NUM, _STR, _BOOL, _LIST, _DICT = (int,), (int, float), (str,), (bool,), (list,), (dict,)
_OPT_NUM = (int, float, type(None))
_OPT_STR = (str, type(None))

SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "start": {
        "step": _INT, "max_steps": _INT, "tokens_per_step": _INT, "params": _INT, "preset": _STR,
        "device": _STR, "dtype": _STR, "world_size": _INT, "pid": _INT,
    },
    "step": {
        "step": _INT, "loss": _NUM, "lr": _NUM, "tokens_per_s": _NUM, "mfu": _OPT_NUM, "grad_norm": _NUM,
        "tokens": _INT, "elapsed_s": _NUM, "eta_s": _NUM,
    },
    "eval": {"step": _INT, "val_loss": _NUM},
    "checkpoint": {"step": _INT, "path": _STR, "best": _BOOL},
    "log": {"message": _STR},
    "status": {"status": _STR, "step": _INT},
    "error": {"message": _STR, "tail": _LIST},
}  # fmt: skip
"""Required fields of each event type and their JSON types; other fields may follow and are kept."""

OPTIONAL: dict[str, dict[str, tuple[type, ...]]] = {
    "step": {"clipped": _BOOL, "update_ratio": _DICT, "weight_norm": _DICT},
}
"""Fields an event may lack (older run dirs do) but, when present, must have these types. A dict field maps a
layer group's name (embed, L0.attn, L0.mlp, ..., norms, head) to a finite number."""


def validate_event(obj: Any) -> None:
    """Raise ValueError (one line) unless obj is a well-formed event: a known type with its required fields.

    Every line also has `event` (str) and `time` (unix seconds). `status` is one of STATUSES; a `finished`
    status may carry `bundle` (str or null).
    """
    if not isinstance(obj, dict):
        raise ValueError("an event is a JSON object")
    name = obj.get("event")
    if name not in SCHEMA:
        raise ValueError(f"unknown event type {name!r}")
    if not _is(obj.get("time"), _NUM):
        raise ValueError(f"{name} event: 'time' must be a number")
    for key, kinds in SCHEMA[name].items():
        if key not in obj:
            raise ValueError(f"{name} event: missing {key!r}")
        if not _is(obj[key], kinds):
            raise ValueError(f"{name} event: {key!r} has the wrong type ({type(obj[key]).__name__})")
    for key, kinds in OPTIONAL.get(name, {}).items():
        if key in obj and not _is(obj[key], kinds):
            raise ValueError(f"{name} event: {key!r} has the wrong type ({type(obj[key]).__name__})")
        if kinds == _DICT and key in obj and not all(_is(v, _NUM) for v in obj[key].values()):
            raise ValueError(f"{name} event: {key!r} must map names to finite numbers")
    if name == "status":
        if obj["status"] not in STATUSES:
            raise ValueError(f"status event: unknown status {obj['status']!r}")
        if not _is(obj.get("bundle"), _OPT_STR):
            raise ValueError("status event: 'bundle' must be a string or null")
    if name == "error" and not all(isinstance(line, str) for line in obj["tail"]):
        raise ValueError("error event: 'tail' must be a list of strings")


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not a number and a float must be finite (JSON has no nan)."""
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, kinds)


@dataclass
class RunEvent:
    """One line of events.jsonl: its kind, its time, and every other field in `data`."""

    event: str  # one of SCHEMA's keys
    time: float  # unix seconds when it was written
    data: dict[str, Any] = field(default_factory=dict)  # all other fields, unknown ones included
    synthetic: bool = False  # True when made up by a reader (a run that died without a final status)

    @property
    def step(self) -> int | None:
        """The step the event refers to, when it has one."""
        step = self.data.get("step")
        return step if isinstance(step, int) and not isinstance(step, bool) else None

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the event (`data[key]`), or default."""
        return self.data.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """The event as the JSON object of its line."""
        return {"event": self.event, "time": self.time, **self.data}

    @classmethod
    def from_dict(cls, obj: Any) -> RunEvent:
        """Build from a decoded JSON object; ValueError unless it passes `validate_event`."""
        validate_event(obj)
        data = {k: v for k, v in obj.items() if k not in ("event", "time")}
        return cls(event=obj["event"], time=float(obj["time"]), data=data)

    @classmethod
    def parse(cls, line: str | bytes) -> RunEvent | None:
        """Parse one events.jsonl line; None for a blank, malformed, oversized or invalid line."""
        if len(line) > MAX_LINE_BYTES:
            return None
        try:
            return cls.from_dict(parse(line, EVENTS_FILE))
        except (ValueError, TypeError):  # parse caps the nesting: never a RecursionError
            return None


class EventWriter:
    """Append-only events.jsonl; each line is validated, written whole and flushed, so readers see it at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)  # RUN_DIR/events.jsonl

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event (ValueError if it breaks the schema) and return it as written."""
        record = {"event": event, "time": round(time.time(), 3), **fields}
        validate_event(record)
        line = json.dumps(record, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
        return record

    def truncate(self) -> None:
        """Start the file anew (a run started over in the same directory)."""
        self.path.write_text("", encoding="utf-8")


class EventReader:
    """Tail events.jsonl from where it was last read; a line is only parsed once its newline is written."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)  # the events.jsonl being appended by the trainer
        self.offset = 0  # bytes consumed so far (always at a line start)
        self.skipped = 0  # complete lines that were not valid events

    def read(self, final: bool = False) -> list[RunEvent]:
        """New complete events; with final=True also a last line that never got its newline."""
        try:
            with open_regular(self.path) as f:  # absent, or a FIFO or device named events.jsonl: nothing to read
                if os.fstat(f.fileno()).st_size < self.offset:
                    self.offset = 0  # the file was replaced or truncated: read it again from the top
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
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


def read_events(run_dir: str | Path) -> list[RunEvent]:
    """Every valid event of a run dir's events.jsonl (a torn last line included if it parses)."""
    return EventReader(Path(run_dir) / EVENTS_FILE).read(final=True)


# ---------------------------------------------------------------- the run lock


class RunDirBusy(ValueError):
    """Another live process holds the run dir's lock."""


LOCK_FD_ENV = "HELIUM_RUN_LOCK_FD"  # a runner that locked the run dir for its child passes the open fd here


class RunLock:
    """An exclusive OS lock (flock) on RUN_DIR/run.lock, holding the owner's pid; released on close or death.

    A runner takes the lock before it spawns the trainer and hands the open descriptor down (LOCK_FD_ENV), so
    the run dir is locked from the moment the run is started; the trainer adopts it in `acquire`.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE  # the lock file
        self._fd: int | None = None  # open while held

    @property
    def fd(self) -> int | None:
        """The open descriptor while the lock is held (to hand to a child process)."""
        return self._fd

    def acquire(self) -> RunLock:
        """Take the lock (or adopt the one a runner handed down) or raise RunDirBusy naming its pid."""
        fd = self._inherited()
        if fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = lock_holder(self.path.parent)
                who = f" (pid {pid})" if pid else ""
                raise RunDirBusy(f"{self.path.parent}: a training run is already going there{who}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def _inherited(self) -> int | None:
        """The descriptor a runner passed for this very lock file, if any (taken out of the environment)."""
        value = os.environ.get(LOCK_FD_ENV, "")
        if not value.isdigit():
            return None
        fd = int(value)
        try:
            mine, theirs = os.fstat(fd), os.stat(self.path)
        except OSError:
            return None
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return None
        del os.environ[LOCK_FD_ENV]
        return fd

    def release(self) -> None:
        """Drop the lock (the file stays; an unlocked file means no run)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_running(run_dir: str | Path) -> bool:
    """True while some process holds the run dir's lock (a live trainer)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def lock_holder(run_dir: str | Path) -> int | None:
    """The pid written in run.lock by the process that holds (or last held) it."""
    try:
        text = (Path(run_dir) / LOCK_FILE).read_text(encoding="ascii", errors="replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


# ---------------------------------------------------------------- what a run dir may hold


FRESH_OK = {CONFIG_FILE, LOG_FILE, LOCK_FILE, EVENTS_FILE, CHECKPOINTS_DIR}
"""What a directory may hold and still take a new run: the remains of a run that never saved a checkpoint."""


def has_checkpoints(run_dir: str | Path) -> bool:
    """True when the run dir holds a step checkpoint (step_NNNNNN.pt, what --resume continues from)."""
    ckpts = Path(run_dir) / CHECKPOINTS_DIR
    return ckpts.is_dir() and any(p.name.startswith("step_") and p.suffix == ".pt" for p in ckpts.iterdir())


def is_run_dir(path: str | Path) -> bool:
    """True when path holds a training run's files (its config or its events)."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() or (path / EVENTS_FILE).is_file()


def check_new_run_dir(out: str | Path, restart: bool = False, locked: bool = False) -> None:
    """ValueError unless `out` can take a new run: absent, empty, or left by a run that saved no checkpoint.

    With restart, any earlier run may be there (it is discarded), but never a folder of other files.
    locked: the caller holds the run dir's lock itself (so a held lock is not someone else's run).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if not out.is_dir():
        return
    if not locked and is_running(out):
        raise RunDirBusy(f"{out}: a training run is already going there (pid {lock_holder(out) or '?'})")
    names = {p.name for p in out.iterdir()}
    if names - {LOCK_FILE, LOG_FILE} and not is_run_dir(out):
        raise ValueError(f"{out}: exists and is not empty (and holds no training run); choose a new --out")
    if not restart and (names - FRESH_OK or has_checkpoints(out)):
        raise ValueError(
            f"{out}: holds an earlier run; continue it with --resume, discard it with --restart, "
            "or choose a new --out"
        )


def check_resumable(run_dir: str | Path) -> None:
    """ValueError unless run_dir holds a run to continue (its config and at least one checkpoint)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ValueError(f"{run_dir}: nothing to resume (no {CONFIG_FILE}; is it a run directory?)")
    if not has_checkpoints(run_dir):
        raise ValueError(
            f"{run_dir}: no checkpoint to resume from (the run ended before its first one); "
            "start it again without --resume (e.g. with a lower --lr)"
        )
