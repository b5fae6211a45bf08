"""How long the studio's "Look inside" view (f4) takes to open: from the key to the view drawn with its numbers.

Runs the real app headless (Textual's pilot) on CPU, puts a story of --tokens tokens in the studio (the shipped
default model unless --model), then opens the view --repeats times; prints each time, the forward pass's share,
and the median. Usage: `python benchmarks/look_inside.py --tokens 400 --repeats 5` from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play in the park with her dog Max. "
)


async def open_times(
    model: str | None,
    tokens: int,
    repeats: int,
    size: tuple[int, int],
    threads: int | None = None,
    dtype: str = "auto",
) -> list[Opening]:
    """Open the view `repeats` times on a story of `tokens` tokens; the time of each opening."""
    from helium_tui.app import HeliumApp
    from helium_tui.app_state import ShowStory
    from helium_tui.screens.look_inside import LookInsideScreen

    app = HeliumApp(model=model, device="cpu", dtype=dtype, threads=threads)
    openings = []
    async with app.run_test(size=size) as pilot:
        while app.session is None:
            await pilot.pause(0.05)
        tok = app.session.bundle.tokenizer
        ids = tok.encode(STORY * (tokens // 20 + 1), add_bos=False)[:tokens]
        app.studio.post_message(ShowStory("", tok.decode(ids), {}, None))
        await pilot.pause()
        await pilot.pause(0.2)
        for _ in range(repeats):
            drawn: list[float] = []
            started, cpu = time.perf_counter(), time.process_time()
            key = asyncio.create_task(pilot.press("f4"))  # the pilot's own waiting is not timed
            while not (isinstance(app.screen, LookInsideScreen) and app.screen.look is not None):
                await asyncio.sleep(0.005)
            screen = app.screen
            screen.call_after_refresh(lambda done=drawn: done.append(time.perf_counter()))
            while not drawn:
                await asyncio.sleep(0.005)
            openings.append(Opening(drawn[0] - started, time.process_time() - cpu, screen.look.seconds))
            await key
            while screen.telling:  # the continuation ends before the next opening
                await pilot.pause(0.05)
            await pilot.press("escape")
            await pilot.pause(0.2)
    return openings


@dataclass
class Opening:
    """One opening of the view."""

    wall_s: float  # from the key to the view drawn
    cpu_s: (
        float  # CPU time the process used meanwhile (all threads): the wall time on an idle machine, or less
    )
    compute_s: float  # the look's forward pass and copies (wall, on its thread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="model name or path (default: the shipped default model)"
    )
    parser.add_argument("--tokens", type=int, default=400, help="story length in tokens")
    parser.add_argument("--repeats", type=int, default=5, help="openings")
    parser.add_argument("--size", default="80x24", help="terminal size, WxH")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the studio's choice)"
    )
    parser.add_argument(
        "--dtype", default="auto", help="the model's weights: auto (as the studio), float32, ..."
    )
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    size = (width, height)
    times = asyncio.run(open_times(args.model, args.tokens, args.repeats, size, args.threads, args.dtype))
    for i, o in enumerate(times, 1):
        print(
            f"opening {i}: {o.wall_s * 1000:.0f} ms ({o.cpu_s * 1000:.0f} ms of CPU; the look's thread {o.compute_s * 1000:.0f} ms)"
        )
    wall, cpu = statistics.median(o.wall_s for o in times), statistics.median(o.cpu_s for o in times)
    print(f"median over {len(times)} openings: {wall * 1000:.0f} ms, {cpu * 1000:.0f} ms of CPU")


if __name__ == "__main__":
    main()
