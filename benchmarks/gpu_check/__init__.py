"""The prepared GPU check (`helium bench gpu`, `scripts/gpu_check.sh`): the gpu tests, training and decode speed,
and a timed real training run, each step in its own process under a time limit; `run_check` runs them in order.

Each step writes OUT/<n>-<step>.json as it starts and ends, and a failing step is recorded, never fatal;
OUT/summary.json and OUT/summary.md close the run. A dry run rehearses every step on the CPU with the tiny preset.
Torch-free itself: everything that touches torch runs in a child process. The parts: plan (steps, sizes,
options), runner (child processes, time limits, result files), steps (env, gpu-tests, train-bench, decode),
train_run (the real run), report (its extrapolation; the summary files).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from benchmarks.gpu_check.plan import DRY, GPU, STEPS, Plan, Sizes
from benchmarks.gpu_check.report import summarize_run, summary_rows, write_summary
from benchmarks.gpu_check.runner import Check, StepFailed, StepResult
from benchmarks.gpu_check.steps import (
    fill_batch,
    junit_counts,
    step_decode,
    step_env,
    step_gpu_tests,
    step_train_bench,
    verbose_counts,
)
from benchmarks.gpu_check.train_run import step_train_run

__all__ = [
    "DRY", "GPU", "STEPS", "STEP_FUNCTIONS", "Check", "Plan", "Sizes", "StepFailed", "StepResult", "fill_batch",
    "junit_counts", "run_check", "summarize_run", "summary_rows", "verbose_counts", "write_summary",
]  # fmt: skip

STEP_FUNCTIONS: dict[str, Callable[[Check, dict], str]] = {
    "env": step_env,
    "gpu-tests": step_gpu_tests,
    "train-bench": step_train_bench,
    "decode": step_decode,
    "train-run": step_train_run,
}


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
