"""The GPU check's step runner: each step's result file, and every child process under a time limit (and the
check's budget) with its output appended to OUT/log.txt; a failing step is recorded, never fatal."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.gpu_check.plan import ROOT, STEPS, Plan
from engine.files import atomic_write_text


@dataclass
class StepResult:
    """One step's outcome: what `OUT/<n>-<step>.json` holds and the summary shows."""

    step: str  # name (STEPS)
    status: str = "running"  # running | ok | failed | skipped
    seconds: float = 0.0  # wall time
    headline: str = ""  # the step's result in one line
    metrics: dict = field(default_factory=dict)  # every figure, filled as the step goes
    error: str | None = None  # why it failed or was skipped (one line per failure)
    commands: list[str] = field(default_factory=list)  # the commands it ran


class StepFailed(Exception):
    """A step (or one command of it) failed; the message is one line for the summary."""


class Check:
    """Runs the steps of a plan, with a time limit for each child process and a log of everything they print."""

    def __init__(self, plan: Plan, echo: Callable[[str], None] = print) -> None:
        self.plan, self.sizes, self.echo = plan, plan.sizes, echo
        self.out = plan.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="helium-gpu-check-"))  # prepared data, the run dir
        self.log_path = self.out / "log.txt"  # every child's output, appended as it runs
        atomic_write_text(self.log_path, "")  # a new file, never written through a link
        self.started = time.time()
        self.deadline = time.monotonic() + plan.budget_minutes * 60
        self.results: list[StepResult] = []
        self.env: dict = {}  # what the env step found (device, versions)
        self.batch = plan.batch_size or (4 if plan.dry_run else 16)  # training batch (env sets it on a GPU)
        self.current: StepResult | None = None  # the step running now (commands are recorded there)
        self.log_mark = 0  # where the latest command's output starts in the log

    # ------------------------------------------------------------ child processes

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.deadline - time.monotonic()

    def child_env(self) -> dict[str, str]:
        """The environment of every child: unbuffered, this checkout first; the dry run never compiles."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        if self.plan.dry_run:  # a rehearsal in seconds: torch.compile runs eager, one thread suits tiny models
            env.update(TORCHDYNAMO_DISABLE="1", OMP_NUM_THREADS="1")
        return env

    def helium(self, *args: str) -> list[str]:
        """A `helium` command line run from this checkout (installed or not)."""
        return [self.plan.python, "-m", "helium_tui.cli", *args]

    def run(self, cmd: list[str], limit: float) -> str:
        """Run cmd within limit seconds (and the budget); return its stdout. StepFailed on failure or timeout."""
        limit = min(limit, self.left())
        if limit < 5:
            raise StepFailed(f"out of time before `{_short(cmd)}`")
        self._note(cmd)
        t0 = time.monotonic()
        with self.log_path.open("a") as log:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.child_env(), stdout=subprocess.PIPE, stderr=log, text=True,
                start_new_session=True,  # its own process group: a timeout ends the compile workers too
            )  # fmt: skip
            try:
                stdout, _ = proc.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                stdout, _ = proc.communicate()
                log.write(stdout or "")
                raise StepFailed(f"`{_short(cmd)}` timed out after {limit:.0f} s") from None
            log.write(stdout)
            log.write(f"(exit {proc.returncode} after {time.monotonic() - t0:.1f} s)\n")
        if proc.returncode != 0:
            raise StepFailed(f"`{_short(cmd)}` exited {proc.returncode}: {self.last_error()}")
        return stdout

    def run_until(self, cmd: list[str], seconds: float, ready: Callable[[], bool]) -> int | None:
        """Run cmd for `seconds` (and until ready() says it can take a stop), then SIGTERM it; its output goes to
        the log. Killed if it lingers past the stop timeout; returns its exit code (None when killed)."""
        self._note(cmd)
        stop_by = self.sizes.timeouts["stop"]
        with self.log_path.open("a") as log:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.child_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            soft = time.monotonic() + seconds
            hard = soft + stop_by  # a start-up slower than the run: stop it all the same
            while proc.poll() is None and time.monotonic() < hard:
                if time.monotonic() >= soft and ready():
                    break
                time.sleep(0.25)
            if proc.poll() is not None:
                return proc.returncode
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=stop_by)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
                return None

    def _note(self, cmd: list[str]) -> None:
        line = shlex.join(cmd)
        if self.current is not None:
            self.current.commands.append(line)
        with self.log_path.open("a") as log:
            log.write(f"\n$ {line}\n")
            self.log_mark = log.tell()

    def latest_output(self) -> str:
        """What the latest command has printed so far (as the log holds it)."""
        with self.log_path.open("rb") as log:
            log.seek(self.log_mark)
            return log.read().decode(errors="replace")

    def last_error(self) -> str:
        """The most telling line the latest command left in the log: a `helium: error:`, an error, or its last line."""
        text = self.latest_output()
        lines = [ln.strip() for ln in text.splitlines()[-200:] if ln.strip() and not ln.startswith("(exit ")]
        for line in reversed(lines):
            if line.startswith("helium: error:") or re.match(r"^\w*(Error|Exception)\b", line):
                return line[:300]
        return lines[-1][:300] if lines else "no output"

    # ------------------------------------------------------------ steps and results

    def step(self, n: int, name: str, fn: Callable[[Check, dict], str]) -> StepResult:
        """Run one step: its file says `running` at once and the outcome at the end; failures are recorded."""
        result = StepResult(name)
        self.results.append(result)
        self.current = result
        path = self.out / f"{n}-{name}.json"
        t0 = time.monotonic()
        self.echo(f"[{n}/{len(STEPS)}] {name} ...")
        if name in self.plan.skip:
            result.status, result.error = "skipped", "skipped with --skip"
        elif self.left() < 10:
            result.status, result.error = "skipped", "out of time"
        else:
            self.save(result, path)
            try:
                result.headline = fn(self, result.metrics)
                result.status = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure is recorded; the next step runs
                result.status = "failed"
                result.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                if not isinstance(exc, StepFailed):  # a bug in the check itself: its traceback goes to the log
                    with self.log_path.open("a") as log:
                        log.write(f"\n{name} failed:\n{traceback.format_exc()}")
        result.seconds = time.monotonic() - t0
        self.save(result, path)
        self.current = None
        mark = {"ok": "ok", "failed": "FAILED", "skipped": "skipped"}[result.status]
        self.echo(f"[{n}/{len(STEPS)}] {name}: {mark} in {result.seconds:.0f} s: {result.headline or result.error}")
        return result

    def save(self, result: StepResult, path: Path) -> None:
        """Write a step's result file (atomically, so a run cut off leaves whole files)."""
        atomic_write_text(path, json.dumps(asdict(result), indent=2) + "\n")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a child's whole process group (compile workers included), or the child alone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _short(cmd: list[str]) -> str:
    """A command without the interpreter, for messages: `helium_tui.cli bench train ...` -> `bench train ...`."""
    args = cmd[1:]
    if args[:2] == ["-m", "helium_tui.cli"]:
        args = ["helium", *args[2:]]
    elif args[:1] == ["-m"]:
        args = args[1:]
    return shlex.join(args)[:160]
