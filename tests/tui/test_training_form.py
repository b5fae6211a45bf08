"""The training monitor's start form: start and stop runs (the fake trainer, a real subprocess), crashes, bad input
of every field, typed batch and lr reaching the run, resuming a real stopped run from its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, ProgressBar, Static

from helium_tui.screens.training.screen import TrainingScreen
from tests.tui.monitor_host import (
    MonitorHost,
    fill_form,
    opened,
    stats,
    wait_for,
)


async def test_start_and_stop_a_run_through_the_form(tmp_path, helium_home, fake_runner, data_dir):
    screen = TrainingScreen(runner_options=fake_runner)
    app = MonitorHost(screen)
    out = tmp_path / "runs" / "form-run"
    async with app.run_test(size=(110, 32)) as pilot:
        await opened(pilot, app)
        fill_form(screen, str(data_dir), str(out), steps="100000", preset="micro")
        await pilot.click("#start")
        await wait_for(pilot, lambda: screen.state is not None and screen.state.step >= 3, "three steps")
        assert "running" in stats(screen) and "/100000" in stats(screen)
        assert screen.query_one("#stop").disabled is False
        assert screen.query_one("#progress", ProgressBar).total == 100000
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.state.status == "stopped", "the run to stop")
        assert screen.handle.process.wait(10) == 0
        assert "checkpoint step_" in stats(screen)
        assert screen.query_one("#stop").disabled is True and screen.check_action("stop_run", ()) is None
        assert (screen.form.data, screen.form.steps, screen.form.preset) == (str(data_dir), "100000", "micro")
    config = json.loads((out / "train_config.json").read_text())
    assert config["preset"] == "micro" and config["max_steps"] == 100000
    assert Path(config["data"]) == data_dir.resolve() and Path(config["out"]) == out.resolve()


async def test_a_crashing_run_shows_the_error_tail_and_the_app_keeps_running(
    tmp_path, helium_home, fake_runner, data_dir
):
    fake_runner["env"]["FAKE_CRASH_AT"] = "3"
    screen = TrainingScreen(runner_options=fake_runner)
    app = MonitorHost(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await opened(pilot, app)
        fill_form(screen, str(data_dir), str(tmp_path / "crash-run"))
        assert screen.start_from_form() is not None
        await wait_for(
            pilot, lambda: screen.state is not None and screen.state.status == "failed", "the crash"
        )
        error = str(screen.query_one("#error", Static).render())
        assert "exited with code 3" in error and "RuntimeError: boom at step 3" in error
        assert app.screen is screen and app.is_running


async def test_bad_form_input_is_reported_not_started(tmp_path, helium_home, fake_runner):
    screen = TrainingScreen(runner_options=fake_runner)
    app = MonitorHost(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await opened(pilot, app)
        screen.query_one("#data", Input).value = str(tmp_path / "missing")
        assert screen.start_from_form() is None
        await pilot.pause()
        assert any("not a prepared data dir" in m for m in app.notices)
        assert not (helium_home / "runs").exists()


@pytest.mark.slow
async def test_batch_and_lr_typed_in_the_form_reach_the_run_config(
    tmp_path, helium_home, fake_runner, data_dir
):
    screen = TrainingScreen(runner_options=fake_runner, config_overrides={"batch_size": 4})
    app = MonitorHost(screen)
    out = tmp_path / "runs" / "hyper-run"
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot, app)
        fill_form(screen, str(data_dir), str(out), steps="3")
        await pilot.click("#batch")
        await pilot.press("1", "6")
        await pilot.click("#lr")
        await pilot.press("3", "e", "minus", "4")
        await pilot.click("#start")
        await wait_for(pilot, lambda: screen.state is not None and screen.state.is_final, "the run to end")
        assert screen.state.status == "finished"
    config = json.loads((out / "train_config.json").read_text())
    assert config["batch_size"] == 16 and config["lr"] == 3e-4  # typed values beat the screen's overrides


@pytest.mark.slow
async def test_empty_batch_and_lr_use_the_defaults(tmp_path, helium_home, fake_runner, data_dir):
    screen = TrainingScreen(runner_options=fake_runner, config_overrides={"batch_size": 4})
    app = MonitorHost(screen)
    out = tmp_path / "runs" / "default-run"
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot, app)
        assert screen.query_one("#batch", Input).placeholder == "4"  # labelled "batch"
        assert screen.query_one("#lr", Input).placeholder == "0.001"
        fill_form(screen, str(data_dir), str(out), steps="3")
        assert screen.start_from_form() is not None
        await wait_for(pilot, lambda: screen.state is not None and screen.state.is_final, "the run to end")
    config = json.loads((out / "train_config.json").read_text())
    assert config["batch_size"] == 4 and config["lr"] == 1e-3


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch", "0", "batch size must be a whole number ≥ 1"),
        ("batch", "-8", "batch size must be a whole number ≥ 1"),
        ("batch", "2.5", "batch size must be a whole number ≥ 1"),
        ("lr", "0", "learning rate must be a positive number"),
        ("lr", "-1e-3", "learning rate must be a positive number"),
        ("lr", "fast", "learning rate must be a positive number"),
        ("lr", "inf", "learning rate must be a positive number"),
    ],
)
@pytest.mark.slow
async def test_bad_batch_or_lr_is_reported_and_starts_nothing(
    tmp_path, helium_home, fake_runner, data_dir, field, value, message
):
    screen = TrainingScreen(runner_options=fake_runner)
    app = MonitorHost(screen)
    out = tmp_path / "runs" / "never"
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot, app)
        fill_form(screen, str(data_dir), str(out))
        screen.query_one(f"#{field}", Input).value = value
        await pilot.click("#start")
        await pilot.pause()
        assert any(message in m for m in app.notices), app.notices
        assert screen.handle is None
    assert not out.exists() and not (helium_home / "runs").exists()


async def test_resume_without_a_resumable_run_is_reported(tmp_path, helium_home, fake_runner):
    screen = TrainingScreen(runner_options=fake_runner)
    app = MonitorHost(screen)
    empty = tmp_path / "empty"
    empty.mkdir()
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot, app)
        await pilot.click("#resume")
        await pilot.pause()
        assert any("type the run directory to resume" in m for m in app.notices)
        screen.query_one("#out", Input).value = str(empty)  # the out dir is used when run-dir is empty
        assert screen.resume_from_form() is None  # (a second click this soon would hit the button's debounce)
        await pilot.pause()
        assert any(f"{empty}: no train_config.json to resume from" in m for m in app.notices)
        assert screen.handle is None
    assert list(empty.iterdir()) == []


@pytest.mark.slow
async def test_a_stopped_real_run_resumes_from_its_checkpoint(
    tmp_path, helium_home, one_thread, prepared_dir
):
    small = dict(batch_size=4, context=32, log_interval=1, eval_interval=0, eval_batches=1, warmup_steps=2)
    screen = TrainingScreen(config_overrides=small)
    app = MonitorHost(screen)
    run_dir = tmp_path / "resumed-run"
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot, app)
        fill_form(screen, str(prepared_dir), str(run_dir), steps="100000")
        assert screen.start_from_form() is not None
        await wait_for(pilot, lambda: screen.state is not None and screen.state.step >= 2, "two real steps")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.state.is_final, "the real run to stop")
        assert screen.state.status == "stopped", screen.state.error_tail
        assert screen.handle.process.wait(30) == 0
        stopped_at = screen.state.step

        screen.query_one("#lr", Input).value = "2e-3"  # a typed lr applies to the resumed run
        await pilot.click("#resume")
        await wait_for(
            pilot, lambda: screen.state.status != "stopped" and screen.state.step > stopped_at, "more steps"
        )
        assert screen.state.status == "running" and screen.query_one("#run-dir", Input).value == str(
            run_dir.resolve()
        )
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.state.is_final, "the resumed run to stop")
        assert screen.state.status == "stopped", screen.state.error_tail
        assert screen.handle.process.wait(30) == 0
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    starts = [i for i, ev in enumerate(events) if ev["event"] == "start"]
    assert len(starts) == 2 and events[starts[1]]["step"] == stopped_at  # continued from the checkpoint
    resumed_steps = [ev["step"] for ev in events[starts[1] :] if ev["event"] == "step"]
    assert resumed_steps and resumed_steps[0] == stopped_at + 1
    assert all(ev["lr"] > 1e-3 for ev in events[starts[1] :] if ev["event"] == "step")  # above the old peak
    config = json.loads((run_dir / "train_config.json").read_text())
    assert config["lr"] == 2e-3 and config["max_steps"] == 100000 and config["batch_size"] == 4
