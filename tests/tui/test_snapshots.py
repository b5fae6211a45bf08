"""Snapshot tests of the studio's screens at 80×24 (pytest-textual-snapshot).

Only deterministic content: a tiny CPU model, no generation timings. Update with `--snapshot-update`.
"""

from __future__ import annotations

from tests.tui.conftest import loaded, make_app

SIZE = (80, 24)


async def settle(pilot) -> None:
    """Let the startup model load finish; focus on a slider (a text cursor would blink)."""
    await loaded(pilot.app, pilot)
    if pilot.app.screen is pilot.app.studio:
        pilot.app.studio.query_one("#param-temperature KeySlider").focus()
    await pilot.pause()


def test_studio(snap_compare, tiny_bundle):
    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=settle)


def test_model_picker(snap_compare, tiny_bundle, installed_second):
    async def open_picker(pilot) -> None:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()

    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=open_picker)


def test_help(snap_compare, tiny_bundle):
    async def open_help(pilot) -> None:
        await settle(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=open_help)


def test_no_model(snap_compare, helium_home):
    assert snap_compare(make_app(None), terminal_size=SIZE, run_before=settle)


def test_story_library(snap_compare, tiny_bundle, tmp_path):
    from helium_tui.library import Story

    app = make_app(tiny_bundle, stories_dir=tmp_path / "stories")

    async def open_library(pilot) -> None:
        await settle(pilot)
        for i, (prompt, text) in enumerate([
            ("Once upon a time", ", there was a girl named Lily. She had a red ball. The end."),
            ("Tom had a boat", ". He sailed it on the pond with his dad. They were happy."),
        ]):  # fmt: skip
            story = Story(prompt, text, {"temperature": 0.8, "top_p": 0.95}, "tiny-bundle", seed=7 + i,
                          created=f"2026-11-2{i + 1}T10:00:00+00:00", tokens=20 + i, finish_reason="eos",
                          id=f"2026112{i + 1}-100000-ab1{i}")  # fmt: skip
            pilot.app.store.save(story)
        await pilot.press("ctrl+l")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=open_library)


def test_training_monitor(snap_compare, tiny_bundle, monkeypatch):
    from helium_tui.screens.training import TrainingScreen

    monkeypatch.setattr(TrainingScreen, "last_run_dir", None)  # no run from an earlier test to re-attach to

    async def open_monitor(pilot) -> None:
        await settle(pilot)
        pilot.app.animation_level = "none"  # the idle progress bar would pulse
        await pilot.press("ctrl+t")
        await pilot.pause()

    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=open_monitor)
