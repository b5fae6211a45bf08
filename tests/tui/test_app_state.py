"""The state the studio app's screens share (helium_tui/app_state.py), and the rule that they share nothing else:
a screen uses only Textual's App API on `self.app`, never the studio or another screen."""

from __future__ import annotations

import ast
from pathlib import Path

from textual.app import App

from engine.generation.sampling import SamplingParams
from engine.generation.session import open_session
from helium_tui.app_state import AppState, ModelChanged
from helium_tui.library import StoryStore
from helium_tui.screens.no_model import NoModelScreen
from tests.tui.conftest import HeldGenerator, greedy, loaded, make_app, until

SCREENS = Path(__file__).parents[2] / "helium_tui" / "screens"
SIZE = (80, 24)


def test_save_story_keeps_the_settings_and_says_why_it_could_not(tmp_path):
    state = AppState(StoryStore(tmp_path / "stories"))
    params = SamplingParams(temperature=0.5, seed=11)
    assert state.save_story("Once", " upon", params, "tiny", 2, "length", {"variant": "1 of 2"}) is None
    (story,), _ = state.store.list()
    assert (story.prompt, story.text, story.model, story.seed, story.tokens) == ("Once", " upon", "tiny", 11, 2)
    assert story.params["temperature"] == 0.5 and story.params["variant"] == "1 of 2"
    (tmp_path / "taken").write_text("a file where the library's folder should be")
    error = AppState(StoryStore(tmp_path / "taken")).save_story("Once", " upon", params, "tiny", 2, "eos")
    assert error is not None and error.startswith("Could not save the story:") and "\n" not in error


def is_app(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "app"


def app_uses(tree: ast.AST) -> set[str]:
    """The attributes a module reads of `<something>.app`: self.app.push_screen and getattr(self.app, "store")."""
    uses = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and is_app(node.value)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr"):
            if node.args and is_app(node.args[0]) and isinstance(node.args[1], ast.Constant):
                uses.add(str(node.args[1].value))
    return uses


def test_screens_reach_each_other_only_through_messages_and_the_shared_state():
    for path in sorted(SCREENS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "helium_tui.app" not in imported, f"{path.name} imports the app"
        foreign = {name for name in app_uses(tree) if not hasattr(App, name)}
        assert not foreign, f"{path.name} reads {sorted(foreign)} of the app (use app_state() or a message)"
        studio = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "studio"]
        assert not studio, f"{path.name} reaches for the studio screen"


async def test_r_on_the_no_model_screen_loads_again(helium_home):
    app = make_app(None)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert isinstance(app.screen, NoModelScreen)
        seq = app.load_seq
        await pilot.press("r")
        await until(pilot, lambda: app.load_seq == seq + 1 and not app.busy, "the second load to fail")
        assert isinstance(app.screen, NoModelScreen)
        assert any(n.title == "Still no model" for n in app._notifications)


async def test_a_failed_switch_keeps_the_loaded_model_in_the_status_line(tiny_bundle, tmp_path):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        first = app.session
        app.load_model(str(tmp_path / "no-such-model"))
        await until(pilot, lambda: not app.busy, "the load to fail")
        await pilot.pause()
        stats = app.studio.status.stats
        assert app.session is first and (stats.state, stats.model) == ("ready", "tiny-bundle")
        assert any(n.title == "Could not load the model" for n in app._notifications)
        assert app.studio.check_action("generate", ()) is True  # stories are still told with it


async def test_a_story_told_with_a_new_model_before_the_studio_hears_of_it_goes_on(tiny_bundle):
    """The studio learns of a load by message: a story started in between, with the new model, is not the old
    model's story that the news stops; and a story can be started as soon as the model is in the state."""
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 64)
        new = open_session(str(tiny_bundle), "cpu", "float32")
        held = new.generator = HeldGenerator(new.generator, hold_at=3)
        app.state.session = new  # as the app's load handler does, before its ModelChanged reaches the studio
        await pilot.press("ctrl+g")
        await until(pilot, lambda: held.holding.is_set(), "the story with the new model")
        run = studio.run
        studio.post_message(ModelChanged())
        await pilot.pause()
        assert studio.run is run and not run.cancel.is_set() and studio.generating
        held.release.set()
        await until(pilot, lambda: not studio.generating, "the story to end")
        assert studio.last_result is not None and studio.last_result.finish_reason != "cancelled"
