"""The studio end to end through Textual's pilot: streaming, stop, sliders, models, inspector, bad states.

A real tiny model generates every story (CPU, float32); where a test must see a story mid-way, the real
generator is held at a chosen token (tests/tui/conftest.py). Every wait has a deadline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.generation.sampling import SamplingParams
from engine.generation.session import open_session
from helium_tui.library import StoryStore
from helium_tui.safe_text import is_terminal_safe
from helium_tui.screens.help import HelpScreen
from helium_tui.screens.models import ModelPicker
from helium_tui.screens.no_model import NoModelScreen
from helium_tui.widgets.inspector import InspectorPanel
from helium_tui.widgets.sliders import KeySlider, SeedRow
from helium_tui.widgets.story_view import StoryView
from tests.stories import told
from tests.tui.conftest import HeldGenerator, greedy, loaded, make_app, tell, until

SIZE = (100, 32)
REPO = Path(__file__).resolve().parents[2]


async def type_prompt(pilot, studio, text: str) -> None:
    area = studio.query_one("#prompt")
    area.clear()
    area.focus()
    await pilot.press(*text)


@pytest.mark.slow
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
        direct = told(
            open_session(str(tiny_bundle), "cpu", "float32").generator,
            "Tom had a ball",
            SamplingParams(max_new_tokens=256, temperature=0),
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
async def test_a_load_failing_while_the_monitor_is_up_waits_for_the_studio(helium_home):
    from helium_tui.screens.training.screen import TrainingScreen

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


@pytest.mark.slow
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
            ("f4", "Look"),
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
        eager = told(
            open_session(str(tiny_bundle), "cpu", "float32").generator,
            "Tom had a ball",
            SamplingParams(max_new_tokens=48, temperature=0),
        )
        assert studio.story.text == eager.text
