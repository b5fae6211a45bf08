"""`python -m benchmarks.library`: how long the story library takes to list and open big libraries.

Builds a temporary library (many small stories, one 5 MB and one 50 MB story) and times `StoryStore.scan`,
the library screen opening headless (Textual's pilot) and reopening the 5 MB story; prints a table and JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from helium_tui.library import Story, StoryStore, capped

WORD = "the cat sat on the mat and "


def build(root: Path, small: int) -> StoryStore:
    """A library of `small` short stories, one 5 MB story and one 50 MB story (written with its text first,
    as stories were before the short fields moved ahead of it)."""
    store = StoryStore(root)
    for i in range(small):
        store.save(Story("Once upon a time ", f"story {i}: " + WORD * 40, {"temperature": 0.8}, "tiny",
                         seed=i, created=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}", tokens=200,
                         id=f"20260101-{i // 60 % 60:04d}{i % 60:02d}-{i % 65536:04x}"))  # fmt: skip
    store.save(Story("Big ", WORD * (5 * 2**20 // len(WORD)), model="tiny", id="20260102-000000-0005"))
    big = {"prompt": "Huge ", "text": WORD * (50 * 2**20 // len(WORD)), "model": "tiny", "created": "2026-01-03"}
    (root / "20260103-000000-0050.json").write_text(json.dumps(big), encoding="utf-8")
    return store


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def open_screen(store: StoryStore) -> float:
    """Seconds from pushing the library screen until its table lists every story."""
    from textual.app import App

    from helium_tui.screens.library import LibraryScreen

    app = App()
    async with app.run_test(size=(120, 40)) as pilot:
        start = time.perf_counter()
        screen = LibraryScreen(store)
        await app.push_screen(screen)
        await pilot.pause()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=500, help="short stories in the library")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = build(Path(tmp) / "stories", args.small)
        heads, warnings = store.scan()
        results = {
            "stories": len(heads),
            "warnings": len(warnings),
            "scan_s": min(seconds(store.scan) for _ in range(3)),
            "screen_open_s": asyncio.run(open_screen(store)),
            "open_5mb_s": min(seconds(lambda: capped(store.get("20260102-000000-0005"))) for _ in range(3)),
        }
    print(f"{'library':<44} {'seconds':>8}")
    print(f"{'scan: ' + str(results['stories']) + ' stories (one 5 MB, one 50 MB)':<44} {results['scan_s']:>8.3f}")
    print(f"{'library screen open (headless, 120x40)':<44} {results['screen_open_s']:>8.3f}")
    print(f"{'reopen the 5 MB story (read whole, cap)':<44} {results['open_5mb_s']:>8.3f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
