"""Snapshot tests of the studio's screens at 80×24 (pytest-textual-snapshot).

Only deterministic content: a tiny CPU model, greedy or fixed-seed stories, a story held at a chosen token
while streaming, timings set to fixed numbers, no animations, no blinking cursor, no toasts, and every wait
on a named condition. Update with `--snapshot-update`.
"""

from __future__ import annotations

import pytest

from tests.tui.conftest import HeldGenerator, loaded, make_app, tell, until

SIZE = (80, 24)


async def settle(pilot) -> None:
    """Let the startup model load finish; focus a slider (a text cursor would blink); no animations."""
    app = pilot.app
    app.animation_level = "none"
    await loaded(app, pilot)
    if app.screen is app.studio:
        slider = app.studio.query_one("#param-temperature KeySlider")
        slider.focus()
        await until(pilot, lambda: app.focused is slider, "the slider to have focus")
    await quiet(pilot)


async def quiet(pilot) -> None:
    """Drop toasts and let every refresh and scheduled animation finish."""
    pilot.app.clear_notifications()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()
    await pilot.pause()


def fixed_timings(studio) -> None:
    """The status line's only non-deterministic numbers, set to fixed ones."""
    studio.status.show(tokens_per_s=312.5, ttft_s=0.042)


def test_studio(snap_compare, tiny_bundle):
    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=settle)


def test_studio_while_streaming(snap_compare, tiny_bundle, monkeypatch):
    """Mid-story at 80×24: the status line keeps its TTFT, the footer offers Stop."""
    monkeypatch.setattr("helium_tui.streaming.FRAME_S", 0.0)  # every delta reaches the pane before the hold

    async def streaming(pilot) -> None:
        await settle(pilot)
        app = pilot.app
        studio = app.studio
        studio.param("temperature").value = 0
        held = app.session.generator = HeldGenerator(app.session.generator, hold_at=40)
        await pilot.press("ctrl+g")
        await until(
            pilot, lambda: held.holding.is_set() and studio.status.stats.tokens == 40, "40 tokens shown"
        )
        fixed_timings(studio)
        await quiet(pilot)

    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=streaming)


@pytest.mark.slow
def test_finished_story_with_the_inspector_open(snap_compare, tiny_bundle):
    async def inspected(pilot) -> None:
        await settle(pilot)
        app = pilot.app
        studio = app.studio
        studio.param("temperature").value = 0
        studio.param("max_tokens").value = 48
        await tell(pilot)
        await pilot.press("f2")
        studio.story.focus()
        await pilot.press("right", "right", "right")  # the 4th token: its alternatives in the panel
        await until(pilot, lambda: studio.story.cursor == studio.story.token_indices[3], "the 4th token")
        fixed_timings(studio)
        await quiet(pilot)

    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=inspected)


@pytest.mark.slow
def test_compare_view(snap_compare, tiny_bundle, installed_second):
    """The loaded model against another installed one, greedy: the same text on any machine."""

    async def compared(pilot) -> None:
        from helium_tui.screens.compare import CompareScreen

        await settle(pilot)
        from helium_tui.widgets.sliders import SeedRow

        app = pilot.app
        app.studio.param("temperature").value = 0
        app.studio.param("repetition_penalty").value = 2.0  # greedy, yet no loops
        app.studio.param("max_tokens").value = 48
        app.studio.query_one(SeedRow).set_seed(7)
        screen = CompareScreen(
            app.studio.prompt_text, app.studio.sampling_params(), app.session, count=2, against="tiny-two"
        )
        await app.push_screen(screen)
        await until(pilot, lambda: screen.job is not None and not screen.generating, "both variants")
        await pilot.press("right")
        await quiet(pilot)

    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=compared)


def test_model_picker(snap_compare, tiny_bundle, installed_second):
    async def open_picker(pilot) -> None:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await quiet(pilot)

    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=open_picker)


def test_help(snap_compare, tiny_bundle):
    async def open_help(pilot) -> None:
        await settle(pilot)
        await pilot.press("f1")
        await quiet(pilot)

    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=open_help)


def test_no_model(snap_compare, helium_home):
    assert snap_compare(make_app(None), terminal_size=SIZE, run_before=settle)


@pytest.mark.slow
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
            pilot.app.state.store.save(story)
        await pilot.press("ctrl+l")
        await quiet(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_library)


def test_training_monitor(snap_compare, tiny_bundle):
    async def open_monitor(pilot) -> None:
        await settle(pilot)
        await pilot.press("ctrl+t")
        await quiet(pilot)

    assert snap_compare(make_app(tiny_bundle), terminal_size=SIZE, run_before=open_monitor)
