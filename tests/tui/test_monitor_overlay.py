"""The training monitor overlays other runs' loss on the watched run: picked from the runs beside it and in the
runs dir (never the watched run itself), at most MAX_OVERLAYS, escape changing nothing."""

from __future__ import annotations

import json

from textual.widgets import Input, SelectionList

from helium_tui.screens.training.overlay import OverlayPicker, candidate_runs
from helium_tui.screens.training.screen import TrainingScreen
from tests.tui.monitor_host import MonitorHost, wait_for, write_events


def run(run_dir, losses: list[float]):
    events = [dict(event="start", step=0, max_steps=len(losses), tokens_per_step=64, params=4321, preset="tiny",
                   device="cpu", dtype="float32", world_size=1, pid=999_999_999)]  # fmt: skip
    events += [dict(event="step", step=i + 1, loss=loss, lr=3e-4, tokens_per_s=2000.0, mfu=None, grad_norm=1.0,
                    tokens=64 * (i + 1), elapsed_s=i + 1, eta_s=0) for i, loss in enumerate(losses)]  # fmt: skip
    events.append(dict(event="status", status="finished", step=len(losses), bundle=None))
    write_events(run_dir, events)
    (run_dir / "train_config.json").write_text(json.dumps({"preset": "tiny", "data": "/data/ts4096"}))
    return run_dir


async def test_overlay_other_runs_on_the_watched_one(tmp_path, helium_home):
    watched = run(tmp_path / "runs" / "watched", [5.0, 4.0, 3.0])
    other = run(tmp_path / "runs" / "other", [5.5, 4.5, 3.5, 2.5])
    run(tmp_path / "runs" / "third", [6.0])
    assert watched.resolve() not in candidate_runs(str(watched)) and len(candidate_runs(str(watched))) == 2
    screen = TrainingScreen()
    app = MonitorHost(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.screen is screen, "the monitor")
        screen.query_one("#run-dir", Input).value = str(watched)
        await pilot.click("#attach")
        await wait_for(pilot, lambda: screen.state is not None and screen.state.step == 3, "the watched run")
        screen.monitor.pick_overlays()
        await wait_for(pilot, lambda: isinstance(app.screen, OverlayPicker) and app.screen.is_mounted, "the picker")
        picker = app.screen
        await pilot.press("escape")  # cancel: nothing overlaid
        await wait_for(pilot, lambda: app.screen is screen, "the monitor again")
        assert screen.monitor.overlays == []
        screen.monitor.pick_overlays()
        await wait_for(pilot, lambda: isinstance(app.screen, OverlayPicker) and app.screen is not picker and app.screen.is_mounted, "picker")
        choices = app.screen.runs
        app.screen.query_one(SelectionList).select(choices.index(other.resolve()))
        await pilot.press("o")
        await wait_for(pilot, lambda: app.screen is screen, "the monitor again")
        assert screen.monitor.overlays == [("other", [1.0, 2.0, 3.0, 4.0], [5.5, 4.5, 3.5, 2.5])]


def test_overlays_of_the_same_name_are_labelled_apart(tmp_path):
    from helium_tui.screens.training.overlay import load_overlays

    a = run(tmp_path / "runs" / "tiny", [5.0, 4.0])
    b = run(tmp_path / "elsewhere" / "tiny", [6.0, 5.0])  # the user runs dir's 'tiny' beside the watched one's
    assert [name for name, _, _ in load_overlays([a, b])] == ["runs/tiny", "elsewhere/tiny"]
