"""The studio's drawing end to end: the story pane grows and follows, long stories lay out, escapes in model
output or saved stories never reach the terminal, absurd saved settings, the typed status line, ctrl+q at once.

Same fixtures and deadlines as test_studio.py (tests/tui/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from textual.app import App, ComposeResult

from engine.generation.generate import Delta
from engine.generation.sampling import SamplingParams
from helium_tui.library import Story
from helium_tui.safe_text import is_terminal_safe
from helium_tui.widgets.inspector import visible
from helium_tui.widgets.sliders import SeedRow
from helium_tui.widgets.story_view import Piece, StoryPane, StoryView
from tests.tui.conftest import greedy, loaded, make_app, tell, until

SIZE = (100, 32)
REPO = Path(__file__).resolve().parents[2]


class PaneApp(App[None]):
    """A story pane alone, with the studio's stylesheet."""

    CSS_PATH = REPO / "helium_tui" / "helium.tcss"

    def compose(self) -> ComposeResult:
        yield StoryPane(StoryView(id="story"), id="pane")


@pytest.mark.slow
async def test_the_story_pane_grows_line_by_line_and_follows_the_end():
    app = PaneApp()
    async with app.run_test(size=(40, 8)) as pilot:
        pane, story = app.query_one(StoryPane), app.query_one(StoryView)
        story.reset("Once upon a time")
        heights = []
        for i in range(60):
            pane.append([Piece(f" word{i}")])
            await pilot.pause()
            await until(pilot, lambda: pane.scroll_y == pane.max_scroll_y, "the view to follow the end", 10)
            heights.append(story.size.height)
        assert heights == sorted(heights) and heights[-1] > 8, "the pane grew past the screen"
        lines = story.get_content_height(story.size, app.size, story.content_size.width)
        assert story.size.height == lines, "every line is laid out"
        pane.scroll_home(animate=False)  # a reader who scrolled up stays put
        await until(pilot, lambda: pane.scroll_y == 0, "the view at the top", 10)
        pane.append([Piece(" more and more words to need another line")])
        await until(pilot, lambda: story.size.height > heights[-1], "another line", 10)
        await pilot.pause()
        assert pane.scroll_y == 0 and pane.max_scroll_y > 0
        pane.scroll_end(animate=False)  # back at the end: followed again
        await until(pilot, lambda: pane.following, "following again", 10)
        pane.append([Piece(" and yet more words for one more line of text")])
        await until(
            pilot,
            lambda: pane.scroll_y == pane.max_scroll_y and story.size.height > heights[-1] + 1,
            "the view to follow the end again",
            10,
        )


@pytest.mark.slow
async def test_a_long_story_fills_the_pane_and_the_view_ends_at_its_end(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 400)
        await tell(pilot)
        await pilot.pause()
        story = studio.story
        lines = story.get_content_height(story.size, app.size, story.content_size.width)
        assert lines > 20  # longer than the pane: it must scroll
        assert story.size.height == lines, "every line of the story is laid out"
        scroll = studio.query_one(StoryPane)
        assert scroll.max_scroll_y > 0 and scroll.scroll_y == scroll.max_scroll_y, "the view followed the end"


ATTACK = ["\x1b]0;PWNED\x07", "\x1b[2J", " ok ", "\x9b31m", "\x1b]52;c;aGk=\x1b\\"]


class EscapingGenerator:
    """Model output made of terminal control sequences (the default vocabulary has a token for each)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def stream(self, prompt, params=SamplingParams(), cancel=None, inspect_top=0):
        real = self.inner.stream(prompt, params, cancel=cancel, inspect_top=inspect_top)

        class Evil:
            result = None

            def __iter__(self):
                for delta, text in zip(real, ATTACK * 10, strict=False):
                    yield Delta(text, replace(delta.token, text=text, top=[(text, 1, 0.5)]))
                for _ in real:
                    pass
                self.result = real.result

        return Evil()


async def test_model_output_and_story_text_never_reach_the_terminal_as_escapes(tiny_bundle, tmp_path):
    app = make_app(tiny_bundle, stories_dir=tmp_path / "stories")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 8)
        app.session.generator = EscapingGenerator(app.session.generator)
        await tell(pilot)
        assert "\x1b" in studio.story.text  # kept as the model wrote it ...
        assert is_terminal_safe(studio.story.render().plain)  # ... but drawn safe
        await pilot.press("f2")  # the inspector: tokens drawn one by one, and the panel
        await pilot.pause()
        assert is_terminal_safe(studio.story.render().plain)
        for piece in studio.story.pieces:
            assert is_terminal_safe(visible(piece.token.text))
        # a saved story with escapes and markup in it, reopened
        story = Story("\x1b]0;TITLE\x1b\\[/b]Once", "\x1b[2J there [bold]was\x9d52;c;x\x07", {}, "m")
        app.open_story(story)
        await pilot.pause()
        assert is_terminal_safe(studio.story.render().plain) and is_terminal_safe(studio.prompt_text)
        assert "[bold]was" in studio.story.render().plain  # text, never markup
        studio.query_one("#prompt").insert("\x1b]0;PASTED\x07")  # as a paste would
        await pilot.pause()
        assert is_terminal_safe(studio.prompt_text) and "PASTED" in studio.prompt_text


@pytest.mark.slow
async def test_reopened_story_with_absurd_params_does_not_crash_the_sliders(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        params = {
            "temperature": float("nan"),
            "top_k": 10**400,
            "top_p": "high",
            "repetition_penalty": -5.0,
            "max_new_tokens": 1e300,
        }
        app.open_story(Story("Once", " upon", params, "m", seed=2**70))
        await pilot.pause()
        p = studio.sampling_params()
        assert p.temperature == 0.8 and p.top_p == 0.95  # not numbers: left as they were
        assert p.top_k == 200 and p.repetition_penalty == 1.0 and p.max_new_tokens == 2048  # clamped
        assert studio.query_one(SeedRow).fixed is None  # a seed torch cannot take is not fixed
        notes = [n.message for n in app._notifications if n.severity == "warning"]
        assert notes and "temperature ignored" in notes[-1] and "top_k huge → 200" in notes[-1]
        assert (await tell(pilot)).generated_tokens > 0  # and stories are still told


def test_status_bar_fields_are_typed():
    from helium_tui.widgets.status_bar import Stats, StatusBar

    bar = StatusBar()
    with pytest.raises(TypeError):
        bar.show(tokns=3)  # a typo is an error, not a silent no-op
    with pytest.raises(ValueError):
        bar.show(state="thinking")
    assert bar.show(tokens=1).numbers.startswith("│ 1 token │")
    assert Stats(tokens=2).numbers.startswith("│ 2 tokens │")


async def test_the_status_line_keeps_its_numbers_at_80_columns(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        studio.status.show(
            state="generating",
            model="a-model-with-a-rather-long-name-indeed",
            device="cpu · bfloat16",
            tokens=1234,
            tokens_per_s=312.5,
            ttft_s=0.0421,
        )
        await pilot.pause()
        line = studio.status.render().plain
        assert len(line) <= 80 and line.rstrip().endswith("│ 1234 tokens │ 312.5 tok/s │ TTFT 42 ms")
        assert "a-model-with" in line and "…" in line  # the model's name gives way


QUIT_HARNESS = textwrap.dedent("""
    import sys, time
    from helium_tui.app import HeliumApp
    from helium_tui.streaming import exit_now_if_busy
    from tests.tui.conftest import greedy, StuckGenerator

    app = HeliumApp(model=sys.argv[1], device="cpu", dtype="float32", stories_dir=sys.argv[2])

    async def drive(pilot):
        while app.session is None:
            await pilot.pause(0.05)
        stuck = app.session.generator = StuckGenerator(app.session.generator, stuck_s=120)
        await pilot.press("ctrl+g")
        while not stuck.started.is_set():
            await pilot.pause(0.01)
        print("QUIT", time.monotonic(), flush=True)
        await pilot.press("ctrl+q")

    app.run(headless=True, auto_pilot=drive)
    exit_now_if_busy(0)
""")


@pytest.mark.slow
def test_ctrl_q_quits_at_once_while_a_story_is_stuck_in_a_long_torch_call(tiny_bundle, tmp_path):
    """The story's thread is inside an uninterruptible call (like a long prefill or a compile) for 120 s."""
    proc = subprocess.Popen(
        [sys.executable, "-c", QUIT_HARNESS, str(tiny_bundle), str(tmp_path / "stories")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("QUIT"), proc.stderr.read()
        quit_at = float(line.split()[1])
        proc.wait(timeout=30)
        gone_after = time.monotonic() - quit_at
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert gone_after < 10.0, f"quitting took {gone_after:.1f} s"  # it used to wait for the story to end


class SeedApp(App[None]):
    """The seed row alone."""

    def compose(self) -> ComposeResult:
        yield SeedRow()


@pytest.mark.parametrize(("typed", "fixed"), [("12", 12), ("0", 0), ("-5", None), (str(2**63), None),
                                               (str(2**63 - 1), 2**63 - 1), ("9" * 5000, None), ("", None)])  # fmt: skip
async def test_the_seed_row_fixes_only_a_seed_torch_takes(typed, fixed):
    from textual.widgets import Input, Switch

    async with SeedApp().run_test() as pilot:
        row = pilot.app.query_one(SeedRow)
        row.query_one(Switch).value = True
        row.query_one(Input).value = typed
        await pilot.pause()
        assert row.fixed == fixed
