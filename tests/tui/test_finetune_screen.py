"""The training monitor's fine-tune mode: the studio's model tuned on the library's stories (and a folder), end to
end in the real app with a real tiny model and trainer; too little text, bad input, and the 80x24 layout."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from textual.widgets import Button, Checkbox, Input, ProgressBar, Static

from engine.bundles.registry import list_models
from engine.paths import user_data_dir
from helium_tui.library import Story, StoryStore
from helium_tui.screens.models import ModelPicker
from helium_tui.screens.training.form_values import FINETUNE_DATA_DIR, FinetuneForm, suggested_model_name
from helium_tui.screens.training.screen import TrainingScreen
from helium_tui.screens.training.view import Progress
from tests.conftest import make_stories
from tests.fakes import fake_trainer_kwargs
from tests.tui.conftest import loaded, make_app, until
from tests.tui.monitor_host import MonitorHost, answer, asking, stats
from trainer.finetune import FINETUNE_DEFAULTS, MIN_FINETUNE_STEPS, MIN_STORIES

SIZE = (80, 24)


def unique_stories(n: int, seed: int) -> list[str]:
    """n different synthetic stories (the fine-tune drops exact duplicates)."""
    stories = list(dict.fromkeys(make_stories(4 * n, seed)))
    assert len(stories) >= n
    return stories[:n]


def save_stories(store: StoryStore, texts: list[str]) -> None:
    """Save texts as library stories (a prompt and its continuation, as the studio saves them)."""
    for i, text in enumerate(texts):
        prompt, rest = text[:30], text[30:]
        store.save(Story(prompt, rest, {"temperature": 0.8}, "tiny-bundle", seed=i, tokens=40))


@pytest.mark.slow
async def test_finetune_from_the_library_to_a_model_in_the_picker(helium_home, tiny_bundle, one_thread):
    """The studio's model, 24 saved stories, ctrl+t, ctrl+f, Fine-tune: a real run from the base's weights whose
    model is installed under the default name and listed by the model picker, naming its base."""
    save_stories(StoryStore(), unique_stories(24, seed=3))
    app = make_app(tiny_bundle)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(app, pilot)
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, TrainingScreen), "the monitor")
        screen = app.screen
        await pilot.press("ctrl+f")
        await until(
            pilot, lambda: screen.query_one("#ft-start", Button).region.width > 0, "the fine-tune form"
        )
        assert str(screen.query_one("#ft-base", Static).render()) == "tiny-bundle"
        library = screen.query_one("#ft-library", Checkbox)
        assert str(library.label) == "library: 24 stories"
        assert not library.value and "own outputs" in str(library.tooltip)  # a choice, with why it may not help
        folder = screen.query_one("#ft-folder", Input)
        assert app.focused is folder  # typing right after ctrl+f lands in the first field
        await pilot.press("x")
        assert folder.value == "x"
        folder.value = ""
        assert screen.query_one("#ft-steps", Input).value == ""  # the default budget
        start = screen.query_one("#ft-start", Button)
        unfocused = start.rich_style
        start.focus()
        await pilot.pause()
        assert start.rich_style.reverse and start.rich_style != unfocused  # focus shows on a button
        await pilot.click("#ft-library")
        assert library.value
        await pilot.click("#ft-start")
        await until(pilot, lambda: screen.handle is not None, "the prepared run to start")
        await until(pilot, lambda: screen.state is not None and screen.state.is_final, "the fine-tune to end")
        assert screen.state.status == "finished", screen.state.error_tail
        assert screen.state.steps[-1] == MIN_FINETUNE_STEPS and screen.state.tokens_per_s
        assert "tiny-bundle fine-tune" in stats(screen)  # the model line names the base
        await until(pilot, lambda: asking(app), "the name question")
        name = app.screen.query_one(Input).value
        assert name == f"tiny-bundle-tuned-{datetime.date.today().isoformat()}"
        await answer(pilot, app, name)  # enter: the default name
        assert f"installed as {name}" in stats(screen)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.studio, "the studio")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, ModelPicker), "the model picker")
        assert name in [m.name for m in app.screen.models]
        await pilot.press("escape")

    tuned = {m.name: m for m in list_models()}[name]
    assert tuned.metadata["base_model"]["name"] == "tiny-bundle"
    assert tuned.metadata["base_model"]["path"] == str(tiny_bundle.absolute())
    config = json.loads((screen.handle.run_dir / "train_config.json").read_text())
    manifest = json.loads((Path(config["data"]) / "manifest.json").read_text())
    held_out = manifest["splits"]["val"]["stories"]
    assert (
        held_out >= 2 and tuned.metadata["tuned_on"]["stories"] + held_out == 24
    )  # a tenth, at least a window
    assert config["init_from"] == str(tiny_bundle.absolute()) and config["preset"] == ""
    assert config["lr"] == FINETUNE_DEFAULTS["lr"] and config["max_steps"] == MIN_FINETUNE_STEPS
    assert Path(config["data"]).parent == user_data_dir() / FINETUNE_DATA_DIR


async def test_too_little_text_gives_a_notice_and_starts_nothing(tmp_path, helium_home, tiny_bundle):
    store = StoryStore()
    save_stories(store, unique_stories(MIN_STORIES - 1, seed=4))
    screen = TrainingScreen(runner_options=fake_trainer_kwargs(tmp_path))
    app = MonitorHost(screen, base=tiny_bundle, store=store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen is screen, "the monitor")
        screen.query_one("#ft-library", Checkbox).value = True  # the library is the user's choice, never a default
        assert screen.start_finetune() is not None
        assert screen.query_one("#ft-start", Button).disabled  # while preparing, and the stats say so
        assert "status preparing" in stats(screen) and "base tiny-bundle" in stats(screen)
        assert screen.start_from_form() is None  # one thing at a time
        assert app.notices[-1] == "A fine-tune is being prepared: wait for it to start."
        await until(pilot, lambda: not screen.preparing, "the preparation to give up")
        notice = next(m for m in app.notices if "Not enough text" in m)
        assert f"only {MIN_STORIES - 1} stories" in notice and f"at least {MIN_STORIES}" in notice
        assert screen.handle is None and "No run yet" in stats(screen)
        assert not screen.query_one("#ft-start", Button).disabled
    assert not (helium_home / "runs").exists() and not (helium_home / FINETUNE_DATA_DIR).exists()


@pytest.mark.parametrize(
    "base, library, folder, steps, message",
    [
        (False, True, "", "", "no model loaded: load the model to fine-tune in the studio first (ctrl+o)"),
        (True, False, "", "", "choose the stories to fine-tune on: the library, a folder, or both"),
        (True, True, "missing", "", "missing: no such folder"),
        (True, True, "", "0", "steps must be a whole number ≥ 1"),
    ],
)
@pytest.mark.slow
async def test_bad_finetune_input_is_reported_and_starts_nothing(
    tmp_path, helium_home, tiny_bundle, base, library, folder, steps, message
):
    screen = TrainingScreen(runner_options=fake_trainer_kwargs(tmp_path))
    app = MonitorHost(screen, base=tiny_bundle if base else None, store=StoryStore())
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen is screen, "the monitor")
        await pilot.press("ctrl+f")
        screen.query_one("#ft-library", Checkbox).value = library
        screen.query_one("#ft-folder", Input).value = str(tmp_path / folder) if folder else ""
        screen.query_one("#ft-steps", Input).value = steps
        assert screen.start_finetune() is None and not screen.preparing
        await pilot.pause()
        assert any(message in m for m in app.notices), app.notices
        if not base:
            assert "no model loaded" in str(screen.query_one("#ft-base", Static).render())
    assert not (helium_home / "runs").exists()


async def test_a_folder_and_the_library_with_typed_steps(tmp_path, helium_home, tiny_bundle):
    """Stories from the library and a folder of .txt/.md/.jsonl files (a stand-in trainer runs the config)."""
    store = StoryStore()
    texts = unique_stories(30, seed=5)
    save_stories(store, texts[:10])
    folder = tmp_path / "class"
    (folder / "week2").mkdir(parents=True)
    for i, text in enumerate(texts[10:20]):
        (folder / f"story{i}.txt").write_text(text + "\n")
    (folder / "more.md").write_text("".join(f"{t}\n<|endoftext|>\n" for t in texts[20:25]))
    (folder / "week2" / "rest.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in texts[25:30])
    )
    runner = fake_trainer_kwargs(tmp_path)
    runner["env"].update(FAKE_BUNDLE="")
    screen = TrainingScreen(runner_options=runner)
    app = MonitorHost(screen, base=tiny_bundle, store=store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen is screen, "the monitor")
        await pilot.press("ctrl+f")
        screen.query_one("#ft-folder", Input).value = str(folder)
        screen.query_one("#ft-library", Checkbox).value = True
        screen.query_one("#ft-steps", Input).value = "7"
        await pilot.click("#ft-start")
        await until(pilot, lambda: screen.state is not None and screen.state.is_final, "the run to end")
        assert screen.state.status == "finished" and screen.state.step == 7
        notice = next(m for m in app.notices if m.startswith("Fine-tuning tiny-bundle on "))
        assert "on 27 stories" in notice and "3 held out): 7 steps in" in notice
        assert screen.query_one("#run-dir", Input).value == str(screen.handle.run_dir)
    config = json.loads((screen.handle.run_dir / "train_config.json").read_text())
    assert config["max_steps"] == 7 and config["init_from"] == str(tiny_bundle.absolute())
    manifest = json.loads((Path(config["data"]) / "manifest.json").read_text())
    assert manifest["splits"]["train"]["stories"] + manifest["splits"]["val"]["stories"] == 30


async def test_ctrl_f_switches_forms_and_the_palette_and_help_list_fine_tune(
    tmp_path, helium_home, tiny_bundle
):
    screen = TrainingScreen()
    app = MonitorHost(screen, base=tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen is screen, "the monitor")
        keys = {b.binding.description for b in screen.active_bindings.values() if b.enabled}
        assert "Fine-tune" in keys and "New model" not in keys
        assert screen.query_one("#start").region.width and not screen.query_one("#ft-start").region.width
        await pilot.press("ctrl+f")
        await pilot.pause()
        assert screen.finetuning and screen.sub_title == "fine-tune"
        keys = {b.binding.description for b in screen.active_bindings.values() if b.enabled}
        assert "New model" in keys and "Fine-tune" not in keys
        assert screen.query_one("#ft-start").region.width and not screen.query_one("#start").region.width
        library = screen.query_one("#ft-library", Checkbox)
        assert not library.disabled and str(library.label) == "library: 0 stories"  # this host's is empty
        assert "Start fine-tune" in {c.title for c in screen.palette_commands()}
        assert "fine-tune" in screen.HELP.lower() and "ctrl+f" in screen.HELP
        await pilot.press("ctrl+f")
        await pilot.pause()
        assert not screen.finetuning and screen.query_one("#start").region.width


def test_a_finetuned_bundle_is_offered_as_base_tuned_date(tmp_path, helium_home):
    bundle = tmp_path / "run" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "metadata.json").write_text(json.dumps({"base_model": {"name": "helium-default"}}))
    today = datetime.date.today().isoformat()
    assert (
        suggested_model_name(tmp_path / "run", "helium-default fine-tune", bundle)
        == f"helium-default-tuned-{today}"
    )
    taken = helium_home / "models" / f"helium-default-tuned-{today}"
    taken.mkdir(parents=True)
    assert suggested_model_name(tmp_path / "run", None, bundle) == f"helium-default-tuned-{today}-2"
    (bundle / "metadata.json").write_text(json.dumps({"data": "ts"}))  # trained from scratch: preset and data
    assert suggested_model_name(tmp_path / "run", "tiny", bundle) == "tiny"


def test_monitor_in_finetune_mode_preparing(snap_compare, tmp_path, monkeypatch):
    """80x24: the fine-tune form (the base's name, the library's count) while the stories are prepared."""
    store = StoryStore(tmp_path / "stories")
    save_stories(store, unique_stories(23, seed=6))
    base = tmp_path / "helium-default"
    monkeypatch.chdir(tmp_path)

    async def preparing(pilot) -> None:
        pilot.app.animation_level = "none"
        screen = pilot.app.training
        await until(pilot, lambda: pilot.app.screen is screen, "the monitor")
        await pilot.press("ctrl+f")
        screen.query_one("#ft-folder", Input).value = "class-stories"
        screen.preparing = True  # as start_finetune does, without a thread (the picture must not move)
        screen.preparing_for = ("helium-default", "library + folder")
        screen.show_progress(Progress("encoding train", 12, 21))
        screen.query_one("#attach").focus()  # a button: no blinking text cursor
        await pilot.pause()
        assert screen.query_one("#progress", ProgressBar).progress == 12

    app = MonitorHost(TrainingScreen(), base=base, store=store)
    assert snap_compare(app, terminal_size=SIZE, run_before=preparing)


def test_the_finetune_form_plans_a_fresh_run_and_its_data_dir(tmp_path, helium_home):
    (tmp_path / "class").mkdir()
    now = datetime.datetime(2026, 11, 30, 21, 5, 9)
    plan = FinetuneForm(
        base=str(tmp_path / "base"), library=False, folder=str(tmp_path / "class"), steps=" 12 "
    ).plan(now)
    assert (plan.library, plan.folder, plan.steps) == (False, tmp_path / "class", 12)
    assert plan.run_dir == (helium_home / "runs" / "20261130-210509").resolve()
    assert plan.data_dir == (helium_home / FINETUNE_DATA_DIR / "20261130-210509").resolve()
    assert FinetuneForm(base=str(tmp_path / "base")).plan(now).steps is None  # empty: the default budget


@pytest.mark.slow
async def test_a_stopped_finetune_reopens_in_finetune_mode_and_resumes_with_its_own_settings(
    tmp_path, helium_home, tiny_bundle
):
    store = StoryStore()
    save_stories(store, unique_stories(MIN_STORIES + 2, seed=7))
    runner = fake_trainer_kwargs(tmp_path)
    runner["env"].update(FAKE_STEP_S="0.05", FAKE_BUNDLE="")
    screen = TrainingScreen(runner_options=runner)
    app = MonitorHost(screen, base=tiny_bundle, store=store)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen is screen, "the monitor")
        screen.query_one("#ft-library", Checkbox).value = True
        screen.query_one("#ft-steps", Input).value = "100000"
        assert screen.start_finetune() is not None
        await until(pilot, lambda: screen.state is not None and screen.state.step >= 2, "two steps")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen.state.status == "stopped", "the run to stop")
        run_dir = screen.handle.run_dir
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not screen, "the studio")

        again = TrainingScreen(runner_options=runner)
        await app.push_screen(again)  # the next visit re-attaches, in fine-tune mode
        await until(
            pilot, lambda: again.state is not None and again.state.status == "stopped", "the re-attach"
        )
        assert again.finetuning and again.query_one("#ft-start").region.width
        again.query_one("#lr", Input).value = "5"  # the hidden new-model form's lr is not the fine-tune's
        assert again.resume_from_form() is not None
        await until(pilot, lambda: again.state.status == "running", "the resumed run")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: again.state.is_final, "the resumed run to stop")
    config = json.loads((run_dir / "train_config.json").read_text())
    assert config["lr"] == FINETUNE_DEFAULTS["lr"] and config["init_from"] == str(tiny_bundle.absolute())
