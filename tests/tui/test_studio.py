"""The studio end to end through Textual's pilot: streaming, stop, sliders, models, inspector, bad states.

A real tiny model generates every story (CPU, float32); where a test must see a story mid-way, the real
generator is held at a chosen token (tests/tui/conftest.py). Every wait has a deadline.
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

from engine.generate import Delta
from engine.sampling import SamplingParams
from engine.session import open_session
from helium_tui.library import Story, StoryStore
from helium_tui.safe_text import is_terminal_safe
from helium_tui.screens.help import HelpScreen
from helium_tui.screens.models import ModelPicker
from helium_tui.screens.no_model import NoModelScreen
from helium_tui.widgets.inspector import InspectorPanel, visible
from helium_tui.widgets.sliders import KeySlider, SeedRow
from helium_tui.widgets.story_view import Piece, StoryPane, StoryView
from tests.tui.conftest import HeldGenerator, loaded, make_app, tell, until

SIZE = (100, 32)
REPO = Path(__file__).resolve().parents[2]


def greedy(studio, max_tokens: int) -> None:
    """Sliders for a deterministic story: temperature 0, max_tokens."""
    studio.param("temperature").value = 0
    studio.param("max_tokens").value = max_tokens


async def type_prompt(pilot, studio, text: str) -> None:
    area = studio.query_one("#prompt")
    area.clear()
    area.focus()
    await pilot.press(*text)


async def test_generate_streams_tokens_incrementally(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        await type_prompt(pilot, studio, "Tom had a ball")
        greedy(studio, 256)
        held = app.session.generator = HeldGenerator(app.session.generator, hold_at=20)
        await pilot.press("ctrl+g")
        await until(pilot, lambda: held.holding.is_set() and studio.story.text, "the story to be part-told")
        partial = studio.story.text  # what the pane shows mid-story
        assert studio.generating and studio.status.stats.state == "generating"
        assert 0 < studio.status.stats.tokens <= 20
        held.release.set()
        await until(pilot, lambda: not studio.generating, "the story to end")
        final, result = studio.story.text, studio.last_result
        assert result is not None and result.finish_reason in ("length", "eos")
        assert final.startswith(partial) and len(final) > len(partial), "the story grew while it was told"
        assert studio.story.prompt == "Tom had a ball"
        # the studio's greedy story is exactly the engine's greedy story
        direct = open_session(str(tiny_bundle), "cpu", "float32").generator.generate(
            "Tom had a ball", SamplingParams(max_new_tokens=256, temperature=0)
        )
        assert final == direct.text
        assert studio.status.stats.tokens == result.generated_tokens
        assert studio.status.stats.state == "ready"


async def test_stop_mid_story(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 2048)  # greedy on this model never ends the story by itself early
        held = app.session.generator = HeldGenerator(app.session.generator, hold_at=5)
        await pilot.press("ctrl+g")
        await until(pilot, held.holding.is_set, "the story to reach its 6th token")
        assert app.screen.active_bindings["escape"].binding.action == "stop"  # the footer offers it
        await pilot.press("escape")
        await until(pilot, lambda: not studio.generating, "the story to stop")
        await pilot.pause()
        result = studio.last_result
        assert result.finish_reason == "cancelled"
        assert result.generated_tokens == 6  # the held token, then the stop before the next one
        assert len(studio.story.token_indices) == 6
        assert studio.status.stats.state == "stopped"


async def test_sliders_by_keyboard_and_mouse_reach_the_sampler(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        studio.param("temperature").query_one(KeySlider).focus()
        await pilot.press("home")
        assert studio.sampling_params().temperature == 0
        await pilot.press("right", "right", "right")
        assert studio.sampling_params().temperature == 0.15
        await pilot.press("tab", "end")  # focus moves on to top-k
        assert studio.sampling_params().top_k == 200
        await pilot.press("left")
        assert studio.sampling_params().top_k == 199
        assert studio.query_one("#param-top_k .param-value").content == "199"
        await pilot.click("#param-top_p KeySlider", offset=(0, 0))  # mouse: far left = the minimum
        assert studio.sampling_params().top_p == 0.05
        studio.query_one(SeedRow).set_seed(7)
        await pilot.pause()
        params = studio.sampling_params()
        assert params.seed == 7 and params.temperature == 0.15 and params.top_k == 199
        # what the studio builds is what the story is told with
        greedy(studio, 16)
        result = await tell(pilot)
        assert studio.run.params.temperature == 0 and studio.run.params.max_new_tokens == 16
        assert studio.run.params.seed == 7 and result.generated_tokens <= 16


async def test_switch_models(tiny_bundle, installed_second):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert app.session.name == "tiny-bundle"
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, ModelPicker), "the model picker")
        picker = app.screen
        assert [m.name for m in picker.models] == ["tiny-bundle", "tiny-two"]
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.session.name == "tiny-two", "tiny-two to load")
        await loaded(app, pilot)
        assert app.screen is app.studio
        assert app.session.bundle.config.d_model == 32
        assert app.studio.status.stats.model == "tiny-two"
        greedy(app.studio, 16)
        assert (await tell(pilot)).generated_tokens > 0


async def test_a_story_keeps_the_model_that_told_it(tiny_bundle, installed_second, tmp_path):
    app = make_app(tiny_bundle, stories_dir=tmp_path / "stories")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        greedy(app.studio, 64)
        held = app.session.generator = HeldGenerator(app.session.generator, hold_at=3)
        await pilot.press("ctrl+g")
        await until(pilot, held.holding.is_set, "the story to be part-told")
        run = app.studio.run
        app.load_model(str(installed_second))  # another model loads while the story is told
        await until(pilot, lambda: app.session.name == "tiny-two", "tiny-two to load")
        await loaded(app, pilot)
        assert run.cancel.is_set()  # loading a model stops the story
        stories = StoryStore(tmp_path / "stories").list()[0]
        assert [s.model for s in stories] == ["tiny-bundle"]


async def test_token_inspector_shows_alternatives(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 16)
        await tell(pilot)
        await pilot.press("f2")
        await pilot.pause()
        story, panel = studio.story, studio.query_one(InspectorPanel)
        assert story.inspect and panel.display
        first = story.token_indices[0]
        assert story.cursor == first
        story.focus()
        await pilot.press("right")
        await pilot.pause()
        second = story.token_indices[1]
        assert story.cursor == second
        token = story.pieces[second].token
        assert panel.token is token
        assert len(token.top) == 5 and token.top[0][2] >= token.top[-1][2]
        assert token.id == token.top[0][1]  # greedy picks the likeliest token
        shown = app.export_screenshot()
        assert f"{token.top[1][2]:.3f}" in shown
        # a click selects the token under the mouse (the story starts right after the prompt)
        await pilot.click(StoryView, offset=(len("Once upon a time") + 1, 0))
        await pilot.pause()
        assert story.cursor == first


async def test_continue_extends_the_story(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 16)
        await tell(pilot)
        first = studio.story.text
        await tell(pilot, "ctrl+n")
        assert studio.prompt_text == "Once upon a time" + first
        assert studio.story.prompt == "Once upon a time"
        assert studio.story.text.startswith(first) and len(studio.story.text) > len(first)
        await pilot.press("f8")
        assert studio.story.text == "" and studio.prompt_text == ""


async def test_no_model_screen(helium_home):
    app = make_app(None)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert isinstance(app.screen, NoModelScreen)
        assert "no default model installed" in app.screen.error
        shown = app.export_screenshot()
        assert "helium import llama2c" in shown.replace("&#160;", " ")
        assert app.session is None


async def test_a_load_failing_while_the_monitor_is_up_waits_for_the_studio(helium_home):
    from helium_tui.screens.training import TrainingScreen

    app = make_app(None)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        app.pop_screen()  # past the no-model guide, back in the studio
        await pilot.press("ctrl+t")  # a new user without a model goes to train one
        await until(pilot, lambda: isinstance(app.screen, TrainingScreen), "the monitor")
        app.load_model(None)  # ... and a load fails meanwhile
        await until(pilot, lambda: not app.busy, "the load to fail")
        assert isinstance(app.screen, TrainingScreen), "the monitor stays in front"
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, NoModelScreen), "the guide, back at the studio")


async def test_a_model_path_with_markup_and_escapes_is_shown_as_text(tmp_path):
    app = make_app(tmp_path / "[/b]\x1b]0;PWNED\x07[link=x]")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert isinstance(app.screen, NoModelScreen)
        shown = app.screen.query_one("#no-model-error").render()
        assert "[/b]" in str(shown) and is_terminal_safe(str(shown))


async def test_generation_error_becomes_a_notification(no_bos_bundle):
    app = make_app(no_bos_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        studio.query_one("#prompt").clear()
        await pilot.press("ctrl+g")
        await until(pilot, lambda: studio.status.stats.state == "error", "the error")
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "empty prompt" in errors[0].message
        assert not studio.generating
        await type_prompt(pilot, studio, "Tom")  # the app keeps working
        greedy(studio, 16)
        assert (await tell(pilot)).generated_tokens > 0


async def test_finished_story_goes_to_the_library(tiny_bundle, tmp_path):
    app = make_app(tiny_bundle, stories_dir=tmp_path / "stories")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        greedy(app.studio, 16)
        await tell(pilot)
        stories, _ = StoryStore(tmp_path / "stories").list()
        assert len(stories) == 1
        assert stories[0].prompt == "Once upon a time" and stories[0].text == app.studio.story.text
        assert stories[0].params["temperature"] == 0
        story = StoryStore(tmp_path / "stories").get(stories[0].id)
        assert StoryStore.as_markdown(story).count("| seed |") == 1


async def test_f1_and_the_palette_list_the_keys_of_the_screen_you_are_on(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        shown = app.export_screenshot().replace("&#160;", " ")
        for key, words in [
            ("ctrl+g", "Tell a story"),
            ("ctrl+t", "training monitor"),
            ("f3", "side by side"),
        ]:
            assert key in shown and words in shown
        await pilot.press("escape")
        assert app.screen is app.studio
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {
            "Tell",
            "Retell",
            "Continue",
            "Compare",
            "Clear",
            "Inspect",
            "Models",
            "Library",
            "Train",
            "Help",
        } <= titles
        assert "Stop" not in titles  # nothing to stop
        # the help of another screen lists that screen's keys, not the studio's
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, ModelPicker), "the picker")
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Tell" not in titles
        help_screen = HelpScreen(app.screen)
        assert help_screen.about is app.screen


async def test_palette_runs_the_screens_actions(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        greedy(app.studio, 16)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        await commands["Tell"].callback()
        await until(
            pilot, lambda: app.studio.last_result is not None and not app.studio.generating, "the story"
        )
        assert app.studio.last_result.generated_tokens > 0


async def test_footer_at_80_columns_shows_the_ways_to_other_screens(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot)
        footer = app.export_screenshot().replace("&#160;", " ")
        for key, words in (
            ("^g", "Tell"),
            ("^r", "Retell"),
            ("^n", "Continue"),
            ("f3", "Compare"),
            ("^o", "Models"),
            ("^t", "Train"),
            ("f1", "Help"),
            ("^p", "palette"),
        ):
            assert f">{key}<" in footer and words in footer


async def test_small_terminal_and_resize(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 32)
        await tell(pilot)
        for size in ((120, 40), (60, 20), (80, 24)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            assert app.size == size
            assert studio.story.region.width > 0 and studio.status.region.height == 1
        assert studio.last_result.generated_tokens > 0


def test_cli_root_has_studio_options():
    from typer.testing import CliRunner

    from helium_tui.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for option in ("--model", "--device", "--dtype", "--stories-dir"):
        assert option in result.output


@pytest.mark.slow
async def test_compiled_studio_compiles_while_loading_and_tells_the_same_story(tiny_bundle):
    app = make_app(tiny_bundle, compile=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert app.session.generator.compile_failed is None  # compiled during loading, no fallback
        studio = app.studio
        await type_prompt(pilot, studio, "Tom had a ball")
        greedy(studio, 48)
        result = await tell(pilot)
        assert app.session.generator.compile_failed is None and result.generated_tokens > 0
        eager = open_session(str(tiny_bundle), "cpu", "float32").generator.generate(
            "Tom had a ball", SamplingParams(max_new_tokens=48, temperature=0)
        )
        assert studio.story.text == eager.text


class PaneApp(App[None]):
    """A story pane alone, with the studio's stylesheet."""

    CSS_PATH = REPO / "helium_tui" / "helium.tcss"

    def compose(self) -> ComposeResult:
        yield StoryPane(StoryView(id="story"), id="pane")


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
        await until(pilot, lambda: pane.scroll_y == pane.max_scroll_y and story.size.height > heights[-1] + 1,
                    "the view to follow the end again", 10)


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
    from tests.tui.conftest import StuckGenerator

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
    assert gone_after < 3.0, f"quitting took {gone_after:.1f} s"  # it used to wait for the story to end
