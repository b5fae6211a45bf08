"""The GPU check's measuring steps: env (versions, the GPU, the training batch), gpu-tests (`pytest -m gpu`),
train-bench and decode (`helium bench train|decode`); each fills its metrics and returns its one-line headline."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.gpu_check.plan import ROOT
from benchmarks.gpu_check.report import percent
from benchmarks.gpu_check.runner import Check, StepFailed

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


# ---------------------------------------------------------------- env


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


# ---------------------------------------------------------------- gpu-tests


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


# ---------------------------------------------------------------- train-bench and decode


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
        f"{s.preset} {check.batch}x{c['context']}: compiled {_rate(c)} tok/s, MFU {percent(c['mfu'])}, "
        f"peak {c['peak_mem_bytes'] / 2**30:.1f} GiB; eager {_rate(e)} tok/s; {m['speedup']:.2f}x"
    )


def _rate(r: dict) -> str:
    return f"{r['tokens_per_s']:,.0f}"


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
