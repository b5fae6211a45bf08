"""Training monitor screen: attach to run directories, show curves and failures, install finished models by
name, real tiny runs end to end, fit 80x24. The start form's own tests: test_training_form.py."""

from __future__ import annotations

import pytest
from textual.widgets import Input, ProgressBar, Sparkline, Static

from engine.bundles.install import install_run_bundle
from engine.bundles.registry import list_models
from engine.humanize import format_duration
from engine.paths import user_models_dir
from helium_tui.screens.dialogs import AskDialog
from helium_tui.screens.training.screen import TrainingScreen
from helium_tui.screens.training.view import thin
from tests.tui.monitor_host import (
    MonitorHost,
    answer,
    asking,
    fill_form,
    finished_run,
    opened,
    stats,
    wait_for,
    write_events,
)


def test_helpers():
    assert format_duration(None) == "?" and format_duration(12.4) == "12s"
    assert format_duration(185) == "3m05s" and format_duration(3720) == "1h02m"
    xs, ys = thin(list(range(1000)), [float(i) for i in range(1000)], limit=100)
    assert len(xs) <= 101 and xs[0] == 0 and xs[-1] == 999 and ys[-1] == 999.0


async def test_attach_to_a_finished_run_shows_curves_and_installs_its_model_by_name(
    tmp_path, helium_home, tiny_bundle
):
    run_dir = finished_run(tmp_path / "runs" / "my-run", tiny_bundle)
    screen = TrainingScreen()
    app = MonitorHost(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.screen is screen, "the monitor")
        screen.query_one("#run-dir", Input).value = str(run_dir)
        await pilot.click("#attach")
        await wait_for(pilot, lambda: asking(app), "the name question")
        assert app.screen.query_one(Input).value == "tiny-ts4096"  # preset + data dir
        text = stats(screen)
        assert "finished" in text and "10/10" in text and "loss 2.5000" in text and "val 2.6000" in text
        assert "lr 3.00e-04" in text and "tok/s 2,010" in text and "step_000010.pt" in text
        assert "4,321 params" in text
        bar = screen.query_one("#progress", ProgressBar)
        assert (bar.progress, bar.total) == (10, 10)
        assert screen.query_one("#throughput", Sparkline).data == [2000.0 + s for s in range(1, 11)]
        assert screen.state.steps == list(range(1, 11)) and screen.state.val_steps == [5, 10]
        assert screen.form.data == "/data/ts4096" and screen.form.steps == "10"  # the run's settings
        assert (screen.form.batch, screen.form.lr) == ("16", "0.002")
        await answer(pilot, app, "my-story-model")
        assert "installed as my-story-model" in stats(screen)
        assert any("Model 'my-story-model' is in the model picker" in m for m in app.notices)
    installed = user_models_dir() / "my-story-model"
    assert installed.is_symlink() and installed.resolve() == tiny_bundle.resolve()
    assert "my-story-model" in [m.name for m in list_models()]
    assert install_run_bundle(run_dir, tiny_bundle, "my-story-model") == "my-story-model"  # idempotent

    again = MonitorHost(TrainingScreen(), last_run_dir=run_dir)  # the next visit: installed, nothing asked
    async with again.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: again.training.state is not None, "the re-attach")
        await pilot.pause()
        assert not isinstance(again.screen, AskDialog) and "installed as my-story-model" in stats(
            again.training
        )


@pytest.mark.slow
async def test_a_model_not_installed_now_can_be_installed_later_and_bad_names_are_refused(
    tmp_path, helium_home, tiny_bundle
):
    run_dir = finished_run(tmp_path / "runs" / "later", tiny_bundle, data="/data/[link=a:b]")
    screen = TrainingScreen()
    app = MonitorHost(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen is screen, "the monitor")
        assert screen.attach_to(str(run_dir)) is not None
        await answer(pilot, app, None)  # not now
        assert "model not installed: ctrl+p → Install model" in stats(screen)
        assert not user_models_dir().exists() or not list(user_models_dir().iterdir())
        titles = {c.title for c in screen.palette_commands()}
        assert {"Start run", "Attach to run", "Resume run", "Install model"} <= titles
        screen.ask_install()
        await wait_for(pilot, lambda: asking(app), "the name question")
        assert app.screen.query_one(Input).value == "tiny-link-a-b"  # only safe characters are offered
        await answer(pilot, app, "../escape")
        assert any("not a valid model name" in m for m in app.notices)
        assert screen.install_as("[b]bold") == "[b]bold"  # a name is never markup
        assert "installed as [b]bold" in stats(screen)


async def test_attach_shows_a_recorded_failure_and_its_tail(tmp_path):
    run_dir = tmp_path / "crashed"
    write_events(run_dir, [
        dict(event="start", step=0, max_steps=100, tokens_per_step=64, params=1, preset="tiny", device="cpu",
             dtype="float32", world_size=1, pid=999_999_999),
        dict(event="step", step=1, loss=6.0, lr=1e-4, tokens_per_s=10.0, mfu=None, grad_norm=1.0, tokens=64,
             elapsed_s=1.0, eta_s=99.0),
        dict(event="error", message="CUDA out of memory", tail=["Traceback (most recent call last):",
                                                              "torch.OutOfMemoryError: CUDA out of memory"]),
        dict(event="status", status="failed", step=1),
    ])  # fmt: skip
    app = MonitorHost(TrainingScreen())
    async with app.run_test(size=(110, 32)) as pilot:
        await opened(pilot, app)
        screen = app.training
        assert screen.attach_to(str(run_dir)) is not None
        await pilot.pause()
        error = str(screen.query_one("#error", Static).render())
        assert "error: CUDA out of memory" in error and "torch.OutOfMemoryError" in error
        assert "failed" in stats(screen)
        assert any("Training failed: CUDA out of memory" in m for m in app.notices)
        assert screen.attach_to(str(tmp_path / "nowhere")) is None  # a bad directory: a notice, no crash
        await pilot.pause()
        assert any("no such run directory" in m for m in app.notices)


async def test_a_new_screen_reattaches_to_the_last_run(tmp_path):
    run_dir = tmp_path / "run"
    write_events(
        run_dir, [dict(event="start", step=0, max_steps=5), dict(event="status", status="stopped", step=2)]
    )
    app = MonitorHost(TrainingScreen(), last_run_dir=run_dir)
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.training.handle is not None, "the re-attach")
        await wait_for(pilot, lambda: "stopped" in stats(app.training), "the stopped run")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, TrainingScreen), "the studio")


@pytest.mark.slow
async def test_a_real_tiny_training_run_through_the_screen(tmp_path, helium_home, prepared_dir):
    small = dict(batch_size=4, context=32, log_interval=1, eval_interval=2, eval_batches=1, warmup_steps=2)
    screen = TrainingScreen(config_overrides=small)
    app = MonitorHost(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await opened(pilot, app)
        fill_form(screen, str(prepared_dir), str(tmp_path / "real-run"), steps="100000")
        assert screen.start_from_form() is not None
        await wait_for(pilot, lambda: screen.state is not None and screen.state.step >= 2, "two real steps")
        assert screen.state.losses and screen.state.losses[-1] > 0
        assert "running" in stats(screen) and "/100000" in stats(screen) and "tiny" in stats(screen)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: screen.state.status in ("stopped", "failed"), "the real run to stop")
        assert screen.state.status == "stopped", screen.state.error_tail
        assert screen.handle.process.wait(30) == 0
        assert "checkpoint step_" in stats(screen)
    assert list((tmp_path / "real-run" / "checkpoints").glob("step_*.pt"))


@pytest.mark.slow
async def test_a_real_tiny_run_finishes_and_its_model_is_installed(tmp_path, helium_home, prepared_dir):
    small = dict(batch_size=4, context=32, log_interval=1, eval_interval=2, eval_batches=1, warmup_steps=1)
    screen = TrainingScreen(config_overrides=small)
    app = MonitorHost(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await opened(pilot, app)
        fill_form(screen, str(prepared_dir), str(tmp_path / "runs" / "finished-run"), steps="4")
        assert screen.start_from_form() is not None
        await wait_for(pilot, lambda: screen.state is not None and screen.state.is_final, "the run to end")
        assert screen.state.status == "finished", screen.state.error_tail
        assert screen.state.steps == [1, 2, 3, 4] and screen.state.val_steps
        await wait_for(pilot, lambda: asking(app), "the name question")
        name = app.screen.query_one(Input).value
        assert name == f"tiny-{prepared_dir.name}"  # preset + data dir
        await answer(pilot, app, name)
        assert f"installed as {name}" in stats(screen)
    assert name in [m.name for m in list_models()]


@pytest.mark.slow
async def test_ctrl_t_opens_the_monitor_in_the_real_app(helium_home):
    from helium_tui.app import HeliumApp

    app = HeliumApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainingScreen), "the monitor")
        assert "No run yet" in stats(app.screen) and app.state.last_run_dir is None
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, TrainingScreen), "the studio")


@pytest.mark.parametrize("size", [(80, 24), (140, 45)])
async def test_the_form_fits_its_placeholders_and_buttons(size):
    app = MonitorHost(TrainingScreen())
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.screen is app.training, "the monitor")
        await pilot.pause()
        screen = app.training
        for widget_id in ("#data", "#out", "#run-dir"):
            field = screen.query_one(widget_id, Input)
            assert field.content_region.width >= len(field.placeholder) + 1, widget_id  # never cut
        for widget_id in ("#start", "#attach", "#resume", "#stop"):
            button = screen.query_one(widget_id)
            assert button.region.right <= size[0] and button.region.width >= len(str(button.label)) + 2
        assert screen.query_one("#monitor").region.height >= 12  # room for the curves
