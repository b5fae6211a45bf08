"""`helium bench studio`: how fast the studio streams a story, against the same generator with no UI.

The studio samples in a worker thread while the UI thread redraws; both need Python's interpreter lock, so
the UI costs sampling speed. This runs the real app headless (Textual's pilot) at a given terminal size
and reports the finished stories' tokens/s next to the raw `Generator` on the same model and settings.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from engine.checks import whole

T = TypeVar("T")

SLIDER_STEP = 16  # the max-tokens slider moves in steps of 16


@dataclass
class StudioBench:
    """Greedy stories from one prompt: raw generator vs the studio (best of the runs)."""

    model: str
    prompt: str
    max_tokens: int
    width: int
    height: int
    raw_tokens_per_s: float  # Generator.stream with token details, no UI (in a worker thread too)
    studio_tokens_per_s: float  # the same story streamed into the studio
    studio_fraction: float  # studio / raw
    raw_runs: list[float] = field(default_factory=list)
    studio_runs: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_studio(
    model: str | None = None,
    prompt: str = "Once upon a time",
    max_tokens: int = 208,
    width: int = 80,
    height: int = 24,
    repeats: int = 3,
) -> StudioBench:
    """Measure raw and studio streaming speed (ValueError for bad arguments or a model that cannot load)."""
    whole("--repeats", repeats, high=1000)
    whole("--max-tokens", max_tokens, high=2048)
    whole("--width", width, high=1000)
    whole("--height", height, high=1000)
    if max_tokens < SLIDER_STEP or max_tokens % SLIDER_STEP:
        raise ValueError(f"--max-tokens must be a multiple of {SLIDER_STEP} (the studio slider's step)")
    if width < 60 or height < 20:
        raise ValueError("the studio needs a terminal of at least 60x20")
    if repeats < 1:
        raise ValueError("--repeats must be at least 1")
    from engine.bundles.registry import resolve_model

    resolve_model(model)  # an unknown model: its one-line error now, not a no-model screen later
    studio_runs = asyncio.run(_studio_runs(model, prompt, max_tokens, (width, height), repeats))
    name, raw_runs = _in_thread(lambda: _raw_runs(model, prompt, max_tokens, repeats))
    raw, studio = max(raw_runs), max(studio_runs)
    return StudioBench(
        model=name,
        prompt=prompt,
        max_tokens=max_tokens,
        width=width,
        height=height,
        raw_tokens_per_s=raw,
        studio_tokens_per_s=studio,
        studio_fraction=studio / raw if raw else 0.0,
        raw_runs=raw_runs,
        studio_runs=studio_runs,
    )


def _in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a short-lived worker thread, as the studio runs its workers, and return its result.

    Torch's OpenMP pool belongs to the thread that first runs a parallel op. A pool left in the main thread
    would exceed the 2 cores of a small machine once the studio's worker builds its own, and libgomp then
    stops spin-waiting: the studio measured at half its speed. The pool dies with the thread.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="helium-bench-raw") as pool:
        return pool.submit(fn).result()


def _raw_runs(model: str | None, prompt: str, max_tokens: int, repeats: int) -> tuple[str, list[float]]:
    """The model's name and tokens/s of `repeats` streamed greedy stories (after a warm-up), no UI."""
    from engine.generation.sampling import SamplingParams
    from engine.generation.session import open_session
    from helium_tui.screens.studio import INSPECT_TOP

    session = open_session(model)
    params = SamplingParams(max_new_tokens=max_tokens, temperature=0)
    runs = []
    for _ in range(repeats + 1):  # the first run warms up
        stream = session.generator.stream(prompt, params, inspect_top=INSPECT_TOP)
        for _delta in stream:
            pass
        assert stream.result is not None
        runs.append(stream.result.tokens_per_s)
    return session.name, runs[1:]


async def _studio_runs(
    model: str | None, prompt: str, max_tokens: int, size: tuple[int, int], repeats: int
) -> list[float]:
    """Tell the story `repeats` times in a headless studio; the finished stories' tokens/s."""
    from helium_tui.app import HeliumApp

    with tempfile.TemporaryDirectory(prefix="helium-bench-") as stories:  # keep the user's library clean
        app = HeliumApp(model=model, stories_dir=stories)
        runs: list[float] = []
        async with app.run_test(size=size) as pilot:
            while app.session is None:
                if app.screen is not app.studio:  # the no-model screen: loading failed
                    raise ValueError("the studio could not load the model")
                await pilot.pause(0.05)
            await app.workers.wait_for_complete()
            studio = app.studio
            studio.query_one("#prompt").text = prompt
            studio.param("temperature").value = 0
            studio.param("max_tokens").value = max_tokens
            for _ in range(repeats + 1):  # the first run warms up
                await pilot.press("ctrl+g")
                await pilot.pause(0.05)
                while studio.generating:
                    await pilot.pause(0.02)
                assert studio.last_result is not None
                runs.append(studio.last_result.tokens_per_s)
        return runs[1:]
