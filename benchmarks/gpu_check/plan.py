"""What one GPU check runs: the step names, how big each step runs on a GPU or in the dry run, and the plan
(the command line's options). Torch-free data that every other part of the check reads."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests/, trainer/, engine/ and helium_tui/
STEPS = ("env", "gpu-tests", "train-bench", "decode", "train-run")
RESULT_FILES = re.compile(r"^(log\.txt|summary\.(md|json)|\d+-[a-z-]+\.json|\..+\.tmp)$")  # what a check writes in OUT
DATA_PLACES = (".gpu/tinystories", "shared/data/tinystories", "../shared/data/tinystories")  # from ROOT


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
    batch_size: int | None = None  # sequences per training step (None: by GPU memory, see `steps.fill_batch`)
    train_minutes: float = 2.5  # the real run's wall time (shrunk to fit the budget)
    budget_minutes: float = 7.5  # the whole check's wall time
    data: Path | None = None  # TinyStories text (train.txt, valid.txt) or a prepared dir; None: searched
    skip: tuple[str, ...] = ()  # steps not to run
    python: str = sys.executable  # the interpreter every child runs

    @property
    def sizes(self) -> Sizes:
        """The dry run's sizes or the GPU's."""
        return DRY if self.dry_run else GPU


def check_out(out: Path) -> Path:
    """out unless the check may not write its result files there (ValueError, one line): a link, a path with
    control characters, or a folder holding anything but an earlier check's result files (which it replaces)."""
    from engine.targets import check_folder, contents

    check_folder(out, "--out")
    if out.is_dir():
        entries = list(out.iterdir())
        if any(not RESULT_FILES.match(p.name) or p.is_symlink() or not p.is_file() for p in entries):
            raise ValueError(
                f"{out}: holds {contents(out)}, not only an earlier check's results; give a new or empty folder"
            )
    return out
