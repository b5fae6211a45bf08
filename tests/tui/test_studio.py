"""The studio end to end through Textual's pilot: streaming, stop, sliders, models, inspector, bad states.

A real tiny model generates every story (CPU, float32); nothing is mocked.
"""

from __future__ import annotations

from engine.sampling import SamplingParams
from engine.session import open_session
from helium_tui.library import StoryStore
from helium_tui.screens.models import ModelPicker
from helium_tui.screens.no_model import NoModelScreen
from helium_tui.widgets.inspector import InspectorPanel
from helium_tui.widgets.sliders import KeySlider, SeedRow
from helium_tui.widgets.story_view import StoryView
from tests.tui.conftest import loaded, make_app

SIZE = (100, 32)


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
        states: list[str] = []  # the pane's text after each UI update while streaming
        extend = studio.story.extend
        studio.story.extend = lambda pieces: (extend(pieces), states.append(studio.story.text))
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
        final = studio.story.text
        result = studio.last_result
        assert result is not None and result.finish_reason in ("length", "eos")
        intermediate = {s for s in states if s and s != final}
        assert len(intermediate) >= 2, "the story should grow visibly while it is told"
        assert all(final.startswith(s) for s in intermediate)
        assert studio.story.prompt == "Tom had a ball"
        # the studio's greedy story is exactly the engine's greedy story
        direct = open_session(str(tiny_bundle), "cpu", "float32").generator.generate(
            "Tom had a ball", SamplingParams(max_new_tokens=256, temperature=0)
        )
        assert final == direct.text
        assert studio.status.stats.tokens == result.generated_tokens
        assert studio.status.stats.state in ("ready",)


async def test_stop_mid_story(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 2048)  # greedy on this model never ends the story by itself early
        await pilot.press("ctrl+g")
        while len(studio.story.token_indices) < 3:
            await pilot.pause(0.01)
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        result = studio.last_result
        assert not studio.generating
        assert result.finish_reason == "cancelled"
        assert 3 <= result.generated_tokens < 2048
        assert len(studio.story.token_indices) == result.generated_tokens
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
        # what the studio builds is what the worker streams with
        greedy(studio, 16)
        await pilot.press("ctrl+g")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert studio.run.params.temperature == 0 and studio.run.params.max_new_tokens == 16
        assert studio.run.params.seed == 7 and studio.last_result.generated_tokens <= 16


async def test_switch_models(tiny_bundle, installed_second):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert app.session.name == "tiny-bundle"
        await pilot.press("ctrl+o")
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, ModelPicker)
        assert [m.name for m in picker.models] == ["tiny-bundle", "tiny-two"]
        await pilot.press("down", "enter")
        await loaded(app, pilot)
        assert app.screen is app.studio
        assert app.session.name == "tiny-two"
        assert app.session.bundle.config.d_model == 32
        assert app.studio.status.stats.model == "tiny-two"
        greedy(app.studio, 16)
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
        assert app.studio.last_result.generated_tokens > 0


async def test_token_inspector_shows_alternatives(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 16)
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
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
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
        first = studio.story.text
        await pilot.press("ctrl+n")
        await loaded(app, pilot)
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


async def test_generation_error_becomes_a_notification(no_bos_bundle):
    app = make_app(no_bos_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        studio.query_one("#prompt").clear()
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
        errors = [n for n in app._notifications if n.severity == "error"]
        assert errors and "empty prompt" in errors[0].message
        assert studio.status.stats.state == "error" and not studio.generating
        await type_prompt(pilot, studio, "Tom")  # the app keeps working
        greedy(studio, 16)
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
        assert studio.last_result.generated_tokens > 0


async def test_finished_story_goes_to_the_library(tiny_bundle, tmp_path):
    app = make_app(tiny_bundle, stories_dir=tmp_path / "stories")
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        greedy(app.studio, 16)
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
        stories, _ = StoryStore(tmp_path / "stories").list()
        assert len(stories) == 1
        assert stories[0].prompt == "Once upon a time" and stories[0].text == app.studio.story.text
        assert stories[0].params["temperature"] == 0


async def test_help_and_palette_commands(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot)
        await pilot.press("f1")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert app.screen is app.studio
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Generate", "Stop", "Retell", "Continue story", "Clear", "Token inspector", "Models",
                "Library", "Training", "Help"} <= titles


async def test_small_terminal_and_resize(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 32)
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
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


async def test_compiled_studio_compiles_while_loading_and_tells_the_same_story(tiny_bundle):
    app = make_app(tiny_bundle, compile=True)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        decode = app.session.generator._decode
        assert decode.compiled is not None and decode.failed is None  # compiled during loading, no fallback
        studio = app.studio
        await type_prompt(pilot, studio, "Tom had a ball")
        greedy(studio, 48)
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
        assert decode.failed is None and studio.last_result.generated_tokens > 0
        eager = open_session(str(tiny_bundle), "cpu", "float32").generator.generate(
            "Tom had a ball", SamplingParams(max_new_tokens=48, temperature=0)
        )
        assert studio.story.text == eager.text


async def test_a_long_story_grows_the_pane_and_follows_the_end(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 400)
        heights: list[int] = []  # the story widget's laid-out height at each redraw
        show = studio._show
        studio._show = lambda run: (show(run), heights.append(studio.story.size.height))
        await pilot.press("ctrl+g")
        await loaded(app, pilot)
        await pilot.pause()
        story = studio.story
        width = story.content_size.width
        lines = story.get_content_height(story.size, app.size, width)
        assert lines > 20  # longer than the pane: it must scroll
        assert story.size.height == lines, "every line of the story is laid out"
        grown = heights[1:]  # (the first redraw can come before the layout of the reset pane)
        assert grown == sorted(grown) and grown[-1] > grown[0], "the pane grew while streaming"
        scroll = studio.query_one("#story-scroll")
        assert scroll.max_scroll_y > 0 and scroll.scroll_y == scroll.max_scroll_y, "the view followed the end"
