"""`helium bench startup --compile`: a fresh `helium tell --compile` process with Inductor's cache empty (cold)
and filled by the cold run (warm), next to the same `helium tell` uncompiled, all in one temporary Helium cache.

The user's cache is never touched: the runs get HELIUM_CACHE set to a temporary folder; an untimed uncompiled run
first builds Helium's CPU kernels there, so cold and warm differ only in what Inductor had compiled before.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.decode import StartupBench, bench_startup


@dataclass
class CompileStartup:
    """Time to first token of `helium tell` uncompiled, and with --compile cold and warm."""

    uncompiled: StartupBench
    cold: StartupBench  # each run with Inductor's cache emptied first
    warm: StartupBench  # each run with the cache the cold runs left

    @property
    def warm_over_uncompiled(self) -> float:
        """How much longer a warm compiled start takes than an uncompiled one (1.0: no longer)."""
        return self.warm.first_token_s / self.uncompiled.first_token_s

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self) | {"warm_over_uncompiled": self.warm_over_uncompiled}


@contextmanager
def temporary_cache() -> Iterator[Path]:
    """HELIUM_CACHE pointing at a new private folder for the block (restored and removed after)."""
    before = os.environ.get("HELIUM_CACHE")
    folder = Path(tempfile.mkdtemp(prefix="helium-bench-cache-"))
    os.environ["HELIUM_CACHE"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("HELIUM_CACHE", None)
        else:
            os.environ["HELIUM_CACHE"] = before
        shutil.rmtree(folder, ignore_errors=True)


def bench_compile_startup(
    command: list[str], prompt: str, repeats: int = 3, cold_runs: int = 1
) -> CompileStartup:
    """Time command (a `helium tell` line without --compile): uncompiled, then with --compile cold_runs times with
    Inductor's cache emptied before each, then repeats times warm."""
    with temporary_cache() as cache:
        bench_startup(command, prompt, 1)  # untimed: builds Helium's kernels into the empty cache
        uncompiled = bench_startup(command, prompt, repeats)
        inductor = cache / "kernels" / "inductor"  # engine.generation.runtime.compile_cache_dir()
        colds = []
        for _ in range(cold_runs):
            shutil.rmtree(inductor, ignore_errors=True)
            colds.append(bench_startup([*command, "--compile"], prompt, 1))
        cold = StartupBench(colds[0].command, min(c.first_token_s for c in colds),
                            [c.first_token_s for c in colds], min(c.total_s for c in colds))  # fmt: skip
        warm = bench_startup([*command, "--compile"], prompt, repeats)
    return CompileStartup(uncompiled, cold, warm)
