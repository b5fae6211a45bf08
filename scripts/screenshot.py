"""Regenerate docs/images/studio.svg: the studio, headless, telling a short greedy story with the shipped model.

Run from the repository root: `PYTHONPATH=$PWD python scripts/screenshot.py [OUT.svg]` (CPU, about a minute).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from helium_tui.app import HeliumApp

SIZE = (100, 30)  # columns, rows: wide enough for the sidebar, short enough for a README
PROMPT = "Once upon a time"  # greedy, the default model ends this story on its own in ~140 tokens
MAX_TOKENS = 208  # the max-tokens slider moves in steps of 16
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "studio.svg"


async def shoot(out: Path) -> None:
    """Open the studio with the default model, tell one greedy story, and save the screen as SVG."""
    with tempfile.TemporaryDirectory(prefix="helium-shot-") as stories:  # keep the user's library clean
        app = HeliumApp(stories_dir=stories)
        async with app.run_test(size=SIZE) as pilot:
            while app.session is None:  # the model loads on a background thread
                if app.screen is not app.studio:
                    raise SystemExit("the studio could not load the default model")
                await pilot.pause(0.05)
            studio = app.studio
            studio.prompt_text = ""
            await pilot.press(*[("space" if ch == " " else ch) for ch in PROMPT])  # typed, key by key
            studio.param("temperature").value = 0  # greedy: the same story on every run
            studio.param("max_tokens").value = MAX_TOKENS
            await pilot.press("ctrl+g")
            await pilot.pause(0.1)
            while studio.generating:
                await pilot.pause(0.05)
            await pilot.pause(0.3)  # the last redraw
            app.save_screenshot(filename=out.name, path=str(out.parent))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
