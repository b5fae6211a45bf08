"""The prepared GPU check (`helium bench gpu`, `scripts/gpu_check.sh`): the gpu tests, training and decode speed,
and a timed real training run, each step in its own process under a time limit.

Each step writes OUT/<n>-<step>.json as it starts and ends, and a failing step is recorded, never fatal;
OUT/summary.json and OUT/summary.md close the run. A dry run rehearses every step on the CPU with the tiny preset.
Torch-free itself: everything that touches torch runs in a child process.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

from engine.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]  # the checkout: tests/, trainer/, engine/ and helium_tui/
STEPS = ("env", "gpu-tests", "train-bench", "decode", "train-run")
DATA_PLACES = (".gpu/tinystories", "shared/data/tinystories", "../shared/data/tinystories")  # from ROOT
FULL_TOKENS = 470_000_000  # assumed tokens in one epoch of TinyStories v2 with a 4,096-token BPE
V2_TRAIN_BYTES = 2.2e9  # TinyStoriesV2-GPT4-train.txt, ~2.2 GB (`helium data download --help`)
CARD_HOURS = 1.0  # the model card: Helium-Nano trained in under an hour on one GPU


@dataclass(frozen=True)
class Sizes:
    """How big each step runs: on a GPU (nano) or in the dry run (tiny, CPU, seconds)."""

    device: str  # where every step runs
    preset: str  # model shape for the benchmarks and the real run
    bench_steps: int  # timed steps of `helium bench train`
    bench_warmup: int  # untimed steps first (compilation happens there)
    decode_runs: tuple[tuple[bool, int], ...]  # (compiled, batch) of each `helium bench decode`
    prompt_tokens: int  # decode prompt length
    new_tokens: int  # tokens decoded per run
    decode_repeats: int  # timed decode runs (best reported)
    vocab_size: int  # BPE vocabulary of the real run's data
    eval_interval: int  # the real run's steps between val losses
    eval_batches: int  # val batches per eval
    log_interval: int  # steps between `step` events
    timeouts: dict[str, float]  # seconds per child process, by kind


GPU = Sizes(
    device="cuda", preset="nano", bench_steps=10, bench_warmup=3,
    decode_runs=((False, 1), (True, 1), (True, 8), (True, 64)), prompt_tokens=128, new_tokens=200,
    decode_repeats=3, vocab_size=4096, eval_interval=200, eval_batches=10, log_interval=50,
    timeouts={"env": 60, "tests": 150, "bench": 150, "decode": 100, "prepare": 90, "stop": 60},
)  # fmt: skip
DRY = Sizes(
    device="cpu", preset="tiny", bench_steps=2, bench_warmup=1,
    decode_runs=((False, 1), (True, 8)), prompt_tokens=16, new_tokens=32,
    decode_repeats=1, vocab_size=300, eval_interval=3, eval_batches=1, log_interval=1,
    timeouts={"env": 60, "tests": 120, "bench": 60, "decode": 60, "prepare": 60, "stop": 30},
)  # fmt: skip


@dataclass
class Plan:
    """What one check runs; the command line's options."""

    out: Path  # where the result files go
    dry_run: bool = False  # CPU, tiny preset, compilation off: a rehearsal in seconds
    batch_size: int | None = None  # sequences per training step (None: by GPU memory, see `fill_batch`)
    train_minutes: float = 2.5  # the real run's wall time (shrunk to fit the budget)
    budget_minutes: float = 7.5  # the whole check's wall time
    data: Path | None = None  # TinyStories text (train.txt, valid.txt) or a prepared dir; None: searched
    skip: tuple[str, ...] = ()  # steps not to run
    python: str = sys.executable  # the interpreter every child runs

    @property
    def sizes(self) -> Sizes:
        """The dry run's sizes or the GPU's."""
        return DRY if self.dry_run else GPU


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
        self.log_path.write_text("")
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
            raise StepFailed(f"`{_short(cmd)}` exited {proc.returncode}: {self._last_error()}")
        return stdout

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

    def _last_error(self) -> str:
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


# ---------------------------------------------------------------- the steps


ENV_PROBE = r"""
import json, os, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_count=torch.cuda.device_count(), gpu_memory_bytes=p.total_memory,
                capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                bf16=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
for name in ("triton", "numpy", "tokenizers", "safetensors", "typer", "rich", "pytest"):
    try:
        info[name] = __import__(name).__version__
    except Exception:
        info[name] = None
print(json.dumps(info))
"""


def fill_batch(gpu_memory_bytes: int) -> int:
    """Sequences of 512 tokens per step that keep a GPU of this memory busy with room to spare for nano.

    Nano's step holds ~0.6 MB per token (activations plus the 32,000-wide logits in bf16 and float32):
    128 x 512 tokens take ~40-60 GB, so 128 on 100 GB and more (H100 NVL, H200), halving below.
    """
    gib = gpu_memory_bytes / 2**30
    return 128 if gib >= 100 else 64 if gib >= 40 else 32 if gib >= 20 else 16


def step_env(check: Check, m: dict) -> str:
    """Python, torch, CUDA, the GPU and the driver; picks the training batch from the GPU's memory."""
    m.update(json.loads(check.run([check.plan.python, "-c", ENV_PROBE], check.sizes.timeouts["env"]).splitlines()[-1]))
    m["dry_run"] = check.plan.dry_run
    m["commit"] = _git_commit()
    m["nvidia_smi"] = _nvidia_smi()
    check.env = m
    if not check.plan.dry_run and not m.get("cuda_available"):
        raise StepFailed("no CUDA GPU on this machine (`--dry-run` rehearses the check on the CPU)")
    if not check.plan.dry_run and check.plan.batch_size is None:
        check.batch = fill_batch(int(m["gpu_memory_bytes"]))
    m["train_batch"] = check.batch
    where = m.get("gpu") or f"CPU ({m['cpus']} cores)"
    return f"{where}, torch {m['torch']}, CUDA {m['cuda'] or '-'}, Python {m['python']}; train batch {check.batch}"


def gpu_test_files() -> list[str]:
    """The test modules holding gpu-marked tests (the TUI's tests stay out: they need Textual)."""
    tests = ROOT / "tests"
    return sorted(
        str(p.relative_to(ROOT)) for p in tests.glob("test_*.py") if "pytest.mark.gpu" in p.read_text("utf-8")
    )


def step_gpu_tests(check: Check, m: dict) -> str:
    """`pytest -m gpu` over the modules that hold gpu tests; counts and the failing tests' names."""
    files = gpu_test_files()
    if not files:
        raise StepFailed(f"no gpu-marked tests under {ROOT / 'tests'} (run from a checkout)")
    junit = check.work / "gpu-tests.xml"
    cmd = [check.plan.python, "-m", "pytest", "-m", "gpu", "-v", "--durations=5", "-p", "no:cacheprovider"]
    error = None
    try:
        check.run([*cmd, f"--junitxml={junit}", *files], check.sizes.timeouts["tests"])
    except StepFailed as exc:
        error = str(exc)
    if junit.is_file():
        m.update(junit_counts(junit))
    else:  # cut off (a timeout): count the tests it reported one by one
        m.update(verbose_counts(check.latest_output()))
    counts = ", ".join(f"{m[k]} {k}" for k in ("passed", "failed", "errors", "skipped") if m.get(k))
    if error or m.get("failed") or m.get("errors"):
        failing = "; ".join(m.get("failures", [])[:3])
        raise StepFailed(f"{counts or 'no report'}: {failing or error}")
    return f"{counts} ({len(files)} files)"


def junit_counts(path: Path) -> dict:
    """passed/failed/errors/skipped and the failing tests' names with their first message line."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}.{case.get('name', '')}".rsplit(".", 2)[-2:]
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "errors", "skipped": "skipped"}[child.tag]
                if outcome != "skipped":
                    message = (child.get("message") or "").splitlines()[:1]
                    counts["failures"].append("::".join(name) + (f": {message[0][:160]}" if message else ""))
        counts[outcome] += 1
    return counts


def verbose_counts(text: str) -> dict:
    """Counts from `pytest -v` lines (`tests/x.py::name PASSED ...`), for a run cut off before its report."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    kinds = {"PASSED": "passed", "FAILED": "failed", "ERROR": "errors", "SKIPPED": "skipped"}
    for name, outcome in re.findall(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", text, re.MULTILINE):
        counts[kinds[outcome]] += 1
        if outcome in ("FAILED", "ERROR"):
            counts["failures"].append(name.rsplit("::", 1)[-1])
    return counts


def step_train_bench(check: Check, m: dict) -> str:
    """`helium bench train` eager and compiled at the check's batch: tokens/s, MFU, peak memory, the ratio."""
    s = check.sizes
    errors = []
    for mode in ("eager", "compiled"):
        cmd = check.helium(
            "bench", "train", "--preset", s.preset, "--device", s.device, "--batch-size", str(check.batch),
            "--steps", str(s.bench_steps), "--warmup", str(s.bench_warmup),
            "--compile" if mode == "compiled" else "--no-compile", "--json",
        )  # fmt: skip
        try:
            m[mode] = json.loads(check.run(cmd, s.timeouts["bench"]).splitlines()[-1])
        except (StepFailed, ValueError, IndexError) as exc:
            errors.append(f"{mode}: {exc}")
    if "eager" in m and "compiled" in m:
        m["speedup"] = m["compiled"]["tokens_per_s"] / m["eager"]["tokens_per_s"]
    if errors:
        raise StepFailed("; ".join(errors))
    c, e = m["compiled"], m["eager"]
    return (
        f"{s.preset} {check.batch}x{c['context']}: compiled {_rate(c)} tok/s, MFU {_pct(c['mfu'])}, "
        f"peak {c['peak_mem_bytes'] / 2**30:.1f} GiB; eager {_rate(e)} tok/s; {m['speedup']:.2f}x"
    )


def step_decode(check: Check, m: dict) -> str:
    """`helium bench decode` eager at batch 1, then compiled (CUDA graphs on a GPU) at each batch."""
    s = check.sizes
    m["runs"] = []
    errors = []
    for compiled, batch in s.decode_runs:
        label = f"{'compiled' if compiled else 'eager'} b{batch}"
        cmd = check.helium(
            "bench", "decode", "--preset", s.preset, "--device", s.device, "--batch-size", str(batch),
            "--compile" if compiled else "--no-compile", "--prompt-tokens", str(s.prompt_tokens),
            "--new-tokens", str(s.new_tokens), "--repeats", str(s.decode_repeats), "--json",
        )  # fmt: skip
        try:
            r = json.loads(check.run(cmd, s.timeouts["decode"]).splitlines()[-1])
            m["runs"].append({"label": label, **r})
        except (StepFailed, ValueError, IndexError) as exc:
            errors.append(f"{label}: {exc}")
    if errors:
        raise StepFailed("; ".join(errors))
    parts = []
    for r in m["runs"]:
        rate = r["decode_tokens_per_s"]
        total = f" ({rate * r['batch_size']:,.0f} total)" if r["batch_size"] > 1 else ""
        parts.append(f"{r['label']} {rate:,.0f} tok/s{total}")
    return "; ".join(parts)


def find_data(plan: Plan) -> Path | None:
    """The TinyStories excerpt: --data, else the first of DATA_PLACES holding train.txt (or a manifest).

    The dry run uses --data or else made-up stories: it must not depend on data that CI lacks.
    """
    if plan.data is not None or plan.dry_run:
        return plan.data
    for place in DATA_PLACES:
        path = (ROOT / place).resolve()
        if (path / "train.txt").is_file() or (path / "manifest.json").is_file():
            return path
    return None


def synthetic_stories(n: int = 300, seed: int = 0) -> str:
    """Tiny made-up stories in TinyStories' format (for the dry run: no data needed, seconds to prepare)."""
    rng = random.Random(seed)
    names, things = ["Lily", "Tom", "Max", "Sue", "Ben", "Mia"], ["ball", "cat", "kite", "cake", "boat"]
    stories = []
    for _ in range(n):
        name, thing = rng.choice(names), rng.choice(things)
        stories.append(
            f"Once upon a time, {name} had a {thing}. One day the {thing} was lost. {name} was sad. "
            f'"Where is my {thing}?" said {name}. Then {name} found it and was happy again.'
        )
    return "".join(f"{story}\n<|endoftext|>\n" for story in stories)


def prepare_data(check: Check, m: dict) -> Path:
    """A prepared data dir for the real run: the excerpt (prepared here) or, in the dry run, made-up stories."""
    s = check.sizes
    source = find_data(check.plan)
    if source is not None and (source / "manifest.json").is_file():
        m["data"] = str(source)
        return source
    out = check.work / "data"
    if source is None and not check.plan.dry_run:
        places = ", ".join(DATA_PLACES)
        raise StepFailed(f"no TinyStories excerpt (train.txt) in {places}; pass --data or carry .gpu/tinystories")
    if source is None:
        text = check.work / "stories.txt"
        text.write_text(synthetic_stories())
        files, m["data"] = [str(text), "--val-fraction", "0.1"], "synthetic (dry run)"
    else:
        files, m["data"] = [str(source / "train.txt")], str(source)
        if (source / "valid.txt").is_file():
            files += ["--val", str(source / "valid.txt")]
    cmd = check.helium("data", "prepare", *files, "--out", str(out), "--vocab-size", str(s.vocab_size))
    check.run(cmd, s.timeouts["prepare"])
    return out


def step_train_run(check: Check, m: dict) -> str:
    """Train the preset on the excerpt for a fixed wall time, stop it, and read tokens/s and val loss over time."""
    from trainer.config import TrainConfig  # torch-free

    s = check.sizes
    data = prepare_data(check, m)
    manifest = json.loads((data / "manifest.json").read_text())
    run_dir = check.work / "run"
    budget_s = 7.0 if check.plan.dry_run else check.plan.train_minutes * 60
    seconds = min(budget_s, check.left() - s.timeouts["stop"] / 2)
    if seconds < (4 if check.plan.dry_run else 30):
        raise StepFailed(f"out of time for the training run ({check.left():.0f} s left)")
    cfg = TrainConfig(
        data=str(data), out=str(run_dir), preset=s.preset, max_steps=10**6, batch_size=check.batch,
        eval_interval=s.eval_interval, eval_batches=s.eval_batches, log_interval=s.log_interval,
        ckpt_interval=0, keep_last=1, device=s.device,
    ).validate()  # fmt: skip
    config = check.work / "train_config.json"
    config.write_text(json.dumps(cfg.to_dict(), indent=2))
    m.update(seconds=seconds, batch_size=check.batch, preset=s.preset, eval_interval=s.eval_interval)
    m["train_tokens"] = manifest["splits"]["train"]["tokens"]
    bytes_per_token = manifest["splits"]["train"].get("text_bytes", 0) / max(1, m["train_tokens"])
    m["bytes_per_token"] = bytes_per_token or None
    cmd = [check.plan.python, "-m", "trainer.train", "--config", str(config)]
    rc = _timed_run(check, cmd, seconds, run_dir / "events.jsonl", 3 if check.plan.dry_run else 1)
    m["exit_code"] = rc
    m.update(summarize_run(_read_events(run_dir / "events.jsonl"), m["train_tokens"], s.eval_interval, bytes_per_token))
    if rc != 0 or m.get("status") not in ("stopped", "finished"):
        raise StepFailed(f"the training run ended with exit code {rc}, status {m.get('status')}: {check._last_error()}")
    if not m.get("points"):
        raise StepFailed("the training run logged no step")
    return run_headline(m)


def _timed_run(check: Check, cmd: list[str], seconds: float, events: Path, min_steps: int) -> int | None:
    """Run the trainer for `seconds` (and until it has logged min_steps steps), then SIGTERM it: it finishes
    the step, saves a checkpoint and exits 0. Killed if it lingers past the stop timeout."""
    check._note(cmd)
    stop_by = check.sizes.timeouts["stop"]
    with check.log_path.open("a") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=check.child_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        soft = time.monotonic() + seconds
        hard = soft + stop_by  # a start-up slower than the run: stop it all the same
        while proc.poll() is None and time.monotonic() < hard:
            if time.monotonic() >= soft and sum(e.get("event") == "step" for e in _read_events(events)) >= min_steps:
                break  # its SIGTERM handler is in place once it has logged a step
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


def _read_events(path: Path) -> list[dict]:
    """The run's events (a torn last line is skipped)."""
    events = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def summarize_run(
    events: list[dict], train_tokens: int, eval_interval: int, bytes_per_token: float = 0.0,
    full_tokens: int = FULL_TOKENS,
) -> dict:
    """Tokens/s and val loss over wall time, and the time one epoch of the full data would take.

    Steady tokens/s is the median of the logged windows after the first (which holds compilation); each
    window's rate leaves out the eval logged at its end, so its wall time beyond its tokens at its rate is
    overhead: at eval steps the eval (the first one also compiles the eval graph), elsewhere checkpoints and
    logging. An epoch = start-up (elapsed at the first log less its tokens at the steady rate) + the first
    eval's compilation + full_tokens at the steady rate plus the other overhead per token + one eval per
    eval_interval steps at the cost of the later evals.
    """
    start = next((e for e in events if e.get("event") == "start"), {})
    status = [e["status"] for e in events if e.get("event") == "status"]
    steps = [e for e in events if e.get("event") == "step"]
    vals = {e["step"]: e["val_loss"] for e in events if e.get("event") == "eval"}
    out: dict = {
        "status": status[-1] if status else None, "params": start.get("params"), "device": start.get("device"),
        "dtype": start.get("dtype"), "compiled": start.get("compiled"), "context": start.get("context"),
        "tokens_per_step": start.get("tokens_per_step"), "points": [],
    }  # fmt: skip
    for e in steps:
        out["points"].append({
            "elapsed_s": round(e["elapsed_s"], 2), "step": e["step"], "tokens": e["tokens"],
            "epochs": round(e["tokens"] / max(1, train_tokens), 2), "loss": round(e["loss"], 4),
            "val_loss": vals.get(e["step"]), "tokens_per_s": round(e["tokens_per_s"]), "mfu": e.get("mfu"),
        })  # fmt: skip
    if not steps:
        return out
    rate = statistics.median(e["tokens_per_s"] for e in steps[1:] or steps)
    mfus = [e["mfu"] for e in steps[1:] or steps if e.get("mfu") is not None]
    first, last = steps[0], steps[-1]
    startup = max(0.0, first["elapsed_s"] - first["tokens"] / rate)
    evals, other = [], 0.0  # overhead seconds of eval windows; of the others, summed
    for prev, e in pairwise(steps):
        extra = max(0.0, e["elapsed_s"] - prev["elapsed_s"] - (e["tokens"] - prev["tokens"]) / e["tokens_per_s"])
        if e["step"] in vals:
            evals.append(extra)
        else:
            other += extra
    per_eval = statistics.median(evals[1:] or evals) if evals else 0.0
    first_eval_extra = max(0.0, evals[0] - per_eval) if evals else 0.0
    trained = max(1, last["tokens"] - first["tokens"])
    effective = trained / (last["elapsed_s"] - first["elapsed_s"]) if last["elapsed_s"] > first["elapsed_s"] else rate
    val_points = [p["val_loss"] for p in out["points"] if p["val_loss"] is not None]
    out.update(
        tokens_per_s=rate, mfu=statistics.median(mfus) if mfus else None, effective_tokens_per_s=effective,
        startup_s=startup, first_eval_extra_s=first_eval_extra, eval_s=per_eval, elapsed_s=last["elapsed_s"],
        tokens=last["tokens"], steps=last["step"], epochs=last["tokens"] / max(1, train_tokens),
        first_val_loss=val_points[0] if val_points else None, last_val_loss=val_points[-1] if val_points else None,
        best_val_loss=min(val_points) if val_points else None,
    )  # fmt: skip
    tokens_per_eval = (start.get("tokens_per_step") or first["tokens"] / max(1, first["step"])) * eval_interval

    def epoch_s(tokens: float) -> float:
        once = startup + first_eval_extra
        return once + tokens * (1 / rate + other / trained) + tokens / tokens_per_eval * per_eval

    out["extrapolation"] = {
        "full_tokens": full_tokens,
        "full_tokens_assumption": "TinyStories v2 with a 4,096-token BPE: the issue's figure",
        "epoch_minutes": epoch_s(full_tokens) / 60,
        "tokens_in_one_hour": full_tokens * 3600 / epoch_s(full_tokens),
    }
    if bytes_per_token:
        from_bytes = V2_TRAIN_BYTES / bytes_per_token
        out["extrapolation"]["v2_tokens_from_bytes"] = from_bytes
        out["extrapolation"]["v2_epoch_minutes_from_bytes"] = epoch_s(from_bytes) / 60
    return out


def run_headline(m: dict) -> str:
    """The real run in one line: speed, val loss, and the one-epoch extrapolation."""
    x = m["extrapolation"]
    val = ""
    if m.get("first_val_loss") is not None:
        val = f", val {m['first_val_loss']:.2f} -> {m['last_val_loss']:.2f} (best {m['best_val_loss']:.2f})"
    verdict = "under" if x["epoch_minutes"] < CARD_HOURS * 60 else "over"
    return (
        f"{m['tokens_per_s']:,.0f} tok/s steady, {m['effective_tokens_per_s']:,.0f} with evals, "
        f"{m['elapsed_s']:.0f} s{val}, {m['epochs']:.1f} passes over the excerpt; "
        f"~{x['full_tokens'] / 1e6:.0f}M tokens in ~{x['epoch_minutes']:.0f} min ({verdict} 1 h)"
    )


STEP_FUNCTIONS: dict[str, Callable[[Check, dict], str]] = {
    "env": step_env,
    "gpu-tests": step_gpu_tests,
    "train-bench": step_train_bench,
    "decode": step_decode,
    "train-run": step_train_run,
}


# ---------------------------------------------------------------- the whole check


def run_check(plan: Plan, echo: Callable[[str], None] = print) -> Check:
    """Run every step in order (a failed step never stops the next), then write summary.json and summary.md."""
    check = Check(plan, echo)
    try:
        env = check.step(1, "env", step_env)
        for n, name in enumerate(STEPS[1:], start=2):
            if env.status == "failed" and not plan.dry_run:
                skipped = StepResult(name, status="skipped", error=f"env failed: {env.error}")
                check.results.append(skipped)
                check.save(skipped, plan.out / f"{n}-{name}.json")
                continue
            check.step(n, name, STEP_FUNCTIONS[name])
    finally:
        write_summary(check)
        shutil.rmtree(check.work, ignore_errors=True)  # prepared data and the run dir (its checkpoint)
    return check


def summary_rows(results: list[StepResult]) -> list[tuple[str, str, str, str]]:
    """(step, status, time, result) per step."""
    return [(r.step, r.status, f"{r.seconds:.0f} s", r.headline or r.error or "") for r in results]


def write_summary(check: Check) -> None:
    """OUT/summary.json (everything) and OUT/summary.md (the table and the details a reader wants)."""
    wall = time.time() - check.started
    data = {
        "dry_run": check.plan.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(check.started)),
        "wall_s": wall, "ok": all(r.status == "ok" for r in check.results), "env": check.env,
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(check.plan).items()},
        "steps": [asdict(r) for r in check.results],
    }  # fmt: skip
    atomic_write_text(check.out / "summary.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(check.out / "summary.md", summary_markdown(check, wall))


def summary_markdown(check: Check, wall: float) -> str:
    """The summary as Markdown: environment, the step table, then each step's figures."""
    env, by = check.env, {r.step: r for r in check.results}
    title = "GPU check (dry run on the CPU)" if check.plan.dry_run else "GPU check"
    lines = [f"# {title}", ""]
    if env:
        lines.append(
            f"{env.get('gpu') or 'CPU'} · torch {env.get('torch')} · CUDA {env.get('cuda') or '-'} · "
            f"Python {env.get('python')} · commit {env.get('commit') or '?'} · "
            f"{time.strftime('%Y-%m-%d', time.gmtime(check.started))} · {wall:.0f} s in all"
        )
        if env.get("nvidia_smi"):
            lines.append(f"`nvidia-smi`: {env['nvidia_smi']}")
        lines.append("")
    lines += ["| step | status | time | result |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d.replace('|', '/')} |" for a, b, c, d in summary_rows(check.results)]
    lines += _bench_md(by.get("train-bench")) + _decode_md(by.get("decode")) + _run_md(by.get("train-run"))
    return "\n".join(lines) + "\n"


def _bench_md(r: StepResult | None) -> list[str]:
    if r is None or not r.metrics.get("eager") and not r.metrics.get("compiled"):
        return []
    lines = ["", "## Training speed (`helium bench train`, random tokens)", ""]
    lines += ["| mode | batch x context | tokens/s | step | MFU | peak memory |", "| --- | --- | --- | --- | --- | --- |"]
    for mode in ("eager", "compiled"):
        x = r.metrics.get(mode)
        if x:
            lines.append(
                f"| {mode} | {x['batch_size']} x {x['context']} | {x['tokens_per_s']:,.0f} | "
                f"{x['step_time_s'] * 1000:.1f} ms | {_pct(x['mfu'])} | {x['peak_mem_bytes'] / 2**30:.1f} GiB |"
            )
    if "speedup" in r.metrics:
        lines += ["", f"Compiled / eager: **{r.metrics['speedup']:.2f}x**."]
    return lines


def _decode_md(r: StepResult | None) -> list[str]:
    if r is None or not r.metrics.get("runs"):
        return []
    lines = ["", "## Decoding (`helium bench decode`, random weights, greedy)", ""]
    lines += ["| run | tok/s per sequence | total tok/s | prefill tok/s | TTFT | of roofline |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for x in r.metrics["runs"]:
        lines.append(
            f"| {x['label']} | {x['decode_tokens_per_s']:,.0f} | {x['decode_tokens_per_s'] * x['batch_size']:,.0f} "
            f"| {x['prefill_tokens_per_s']:,.0f} | {x['ttft_s'] * 1000:.1f} ms | {x['roofline_fraction']:.0%} |"
        )
    return lines


def _run_md(r: StepResult | None) -> list[str]:
    if r is None or not r.metrics.get("points"):
        return []
    m = r.metrics
    lines = ["", f"## Real training run ({m['preset']}, data: {m['data']})", ""]
    lines.append(
        f"{m.get('params') or 0:,} parameters, batch {m['batch_size']} x {m.get('context')}, "
        f"{m.get('dtype')}, compiled {m.get('compiled')}, stopped after {m['seconds']:.0f} s of wall time; "
        f"the excerpt holds {m['train_tokens']:,} training tokens, so the later val losses measure memorization "
        "of a small excerpt, not what the full data set would give."
    )
    lines += ["", "| wall s | step | tokens | passes | loss | val loss | tok/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in m["points"]:
        val = f"{p['val_loss']:.3f}" if p["val_loss"] is not None else ""
        lines.append(
            f"| {p['elapsed_s']:.1f} | {p['step']} | {p['tokens']:,} | {p['epochs']:.2f} | {p['loss']:.3f} "
            f"| {val} | {p['tokens_per_s']:,} |"
        )
    x = m.get("extrapolation")
    if x:
        lines += [
            "",
            f"Steady {m['tokens_per_s']:,.0f} tok/s (MFU {_pct(m.get('mfu'))}), {m['effective_tokens_per_s']:,.0f} "
            f"tok/s over the run with its evals every {m['eval_interval']} steps; start-up and compilation "
            f"{m['startup_s']:.0f} s, the first eval's compilation {m['first_eval_extra_s']:.0f} s, each eval "
            f"{m['eval_s']:.1f} s.",
            f"Assumption: one epoch = {x['full_tokens'] / 1e6:.0f}M tokens ({x['full_tokens_assumption']}). "
            f"Then one epoch (with evals every {m['eval_interval']} steps) takes ~{x['epoch_minutes']:.0f} min "
            f"and one hour trains ~{x['tokens_in_one_hour'] / 1e6:,.0f}M tokens.",
        ]
        if "v2_tokens_from_bytes" in x:
            lines.append(
                f"Cross-check: 2.2 GB of v2 text at this excerpt's {m['bytes_per_token']:.2f} bytes/token is "
                f"~{x['v2_tokens_from_bytes'] / 1e6:.0f}M tokens, ~{x['v2_epoch_minutes_from_bytes']:.0f} min."
            )
    return lines


# ---------------------------------------------------------------- helpers


def _kill_group(proc: subprocess.Popen) -> None:
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


def _rate(r: dict) -> str:
    return f"{r['tokens_per_s']:,.0f}"


def _pct(value: float | None) -> str:
    return f"{value * 100:.1f}%" if value is not None else "n/a"


def _git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None


def _nvidia_smi() -> str | None:
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
    try:
        proc = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else None
