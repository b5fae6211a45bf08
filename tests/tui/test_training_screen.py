"""Training monitor screen: attach to run directories, start/stop real subprocess runs, show failures, install
finished models by name, fit 80x24."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Input, ProgressBar, Select, Sparkline, Static

from engine.humanize import format_duration
from engine.install import install_run_bundle
from engine.paths import user_models_dir
from engine.registry import list_models
from helium_tui.screens.dialogs import AskDialog
from helium_tui.screens.training import TrainingScreen
from helium_tui.screens.training_view import thin
from tests.fakes import fake_trainer_kwargs

WAIT_S = 60.0  # upper bound for a subprocess to reach a state (bounded polling, never a timing assert)


@pytest.fixture
def fake_runner(tmp_path) -> dict:
    """start_run keyword arguments that run the fake trainer (tests/fakes.py, a real subprocess) slowly
    enough for the screen to watch it, with no bundle at the end."""
    kwargs = fake_trainer_kwargs(tmp_path)
    kwargs["env"].update(FAKE_STEP_S="0.05", FAKE_BUNDLE="")
    return kwargs


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A directory that passes the form's 'prepared data dir' check (the fake trainer never reads it)."""
    d = tmp_path / "prepared"
    d.mkdir()
    (d / "manifest.json").write_text('{"format": "helium-data/1"}')
    return d


class MonitorApp(App):
    """A bare app hosting the training screen, with the state the screen keeps on its app; it records the
    notifications it shows."""

    CSS_PATH = "../../helium_tui/helium.tcss"

    def __init__(self, screen: TrainingScreen, last_run_dir: Path | None = None) -> None:
        super().__init__()
        self.training = screen
        self.last_run_dir = last_run_dir  # what HeliumApp remembers between monitor visits
        self.notices: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("studio")

    def on_mount(self) -> None:
        self.push_screen(self.training)

    def notify(self, message: str, **kwargs) -> None:
        self.notices.append(message)
        super().notify(message, **kwargs)


def write_events(run_dir: Path, events: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"time": 1_700_000_000.0 + i, **ev}) for i, ev in enumerate(events)]
    (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n")


def fill_form(screen: TrainingScreen, data: str, out: str, steps: str | None = None) -> None:
    """Type a prepared data dir, an out dir and (optionally) the steps into the start form."""
    screen.query_one("#data", Input).value = data
    screen.query_one("#out", Input).value = out
    if steps is not None:
        screen.query_one("#steps", Input).value = steps


def stats(screen: TrainingScreen) -> str:
    return str(screen.query_one("#stats", Static).render())


async def wait_for(pilot, condition, what: str) -> None:
    """Let the app run until condition() holds (bounded by WAIT_S so CI cannot hang)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


def test_helpers():
    assert format_duration(None) == "?" and format_duration(12.4) == "12s"
    assert format_duration(185) == "3m05s" and format_duration(3720) == "1h02m"
    xs, ys = thin(list(range(1000)), [float(i) for i in range(1000)], limit=100)
    assert len(xs) <= 101 and xs[0] == 0 and xs[-1] == 999 and ys[-1] == 999.0


def finished_run(run_dir: Path, bundle: Path, data: str = "/data/ts4096") -> Path:
    """A recorded finished run (10 steps, two evals) with its config, whose bundle is `bundle`."""
    events = [dict(event="start", step=0, max_steps=10, tokens_per_step=64, params=4321, preset="tiny",
                   device="cpu", dtype="float32", world_size=1, pid=999_999_999)]  # fmt: skip
    for step in range(1, 11):
        events.append(dict(event="step", step=step, loss=5.0 - 0.25 * step, lr=3e-4, tokens_per_s=2000.0 + step,
                           mfu=None, grad_norm=1.0, tokens=64 * step, elapsed_s=step, eta_s=10 - step))  # fmt: skip
        if step % 5 == 0:
            events.append(dict(event="eval", step=step, val_loss=5.1 - 0.25 * step))
    events += [dict(event="checkpoint", step=10, path=str(run_dir / "checkpoints/step_000010.pt"), best=True),
               dict(event="status", status="finished", step=10, bundle=str(bundle))]  # fmt: skip
    write_events(run_dir, events)
    config = {"preset": "tiny", "data": data, "max_steps": 10, "batch_size": 16, "lr": 0.002}
    (run_dir / "train_config.json").write_text(json.dumps(config))
    return run_dir


def asking(app: App) -> bool:
    """The name question is up, its field mounted."""
    return isinstance(app.screen, AskDialog) and bool(app.screen.query(Input))


async def answer(pilot, app: App, text: str | None) -> None:
    """Wait for the AskDialog, then type text and press enter (None: press escape)."""
    await wait_for(pilot, lambda: asking(app), "the question")
    if text is None:
        await pilot.press("escape")
    else:
        app.screen.query_one(Input).value = text
        await pilot.press("enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, AskDialog), "the question to close")


async def test_attach_to_a_finished_run_shows_curves_and_installs_its_model_by_name(
    tmp_path, helium_home, tiny_bundle
):
    run_dir = finished_run(tmp_path / "runs" / "my-run", tiny_bundle)
    screen = TrainingScreen()
    app = MonitorApp(screen)
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

    again = MonitorApp(TrainingScreen(), last_run_dir=run_dir)  # the next visit: installed, nothing asked
    async with again.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: again.training.state is not None, "the re-attach")
        await pilot.pause()
        assert not isinstance(again.screen, AskDialog) and "installed as my-story-model" in stats(again.training)


async def test_a_model_not_installed_now_can_be_installed_later_and_bad_names_are_refused(
    tmp_path, helium_home, tiny_bundle
):
    run_dir = finished_run(tmp_path / "runs" / "later", tiny_bundle, data="/data/[link=a:b]")
    screen = TrainingScreen()
    app = MonitorApp(screen)
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
    app = MonitorApp(TrainingScreen())
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.pause()
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


async def test_start_and_stop_a_run_through_the_form(tmp_path, helium_home, fake_runner, data_dir):
    screen = TrainingScreen(runner_options=fake_runner)
    app = MonitorApp(screen)
    out = tmp_path / "runs" / "form-run"
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.pause()
        screen.query_one("#preset", Select).value = "micro"
        fill_form(screen, str(data_dir), str(out), steps="100000")
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
    app = MonitorApp(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.pause()
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
    app = MonitorApp(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.pause()
        screen.query_one("#data", Input).value = str(tmp_path / "missing")
        assert screen.start_from_form() is None
        await pilot.pause()
        assert any("not a prepared data dir" in m for m in app.notices)
        assert not (helium_home / "runs").exists()


async def test_batch_and_lr_typed_in_the_form_reach_the_run_config(
    tmp_path, helium_home, fake_runner, data_dir
):
    screen = TrainingScreen(runner_options=fake_runner, config_overrides={"batch_size": 4})
    app = MonitorApp(screen)
    out = tmp_path / "runs" / "hyper-run"
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
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


async def test_empty_batch_and_lr_use_the_defaults(tmp_path, helium_home, fake_runner, data_dir):
    screen = TrainingScreen(runner_options=fake_runner, config_overrides={"batch_size": 4})
    app = MonitorApp(screen)
    out = tmp_path / "runs" / "default-run"
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
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
async def test_bad_batch_or_lr_is_reported_and_starts_nothing(
    tmp_path, helium_home, fake_runner, data_dir, field, value, message
):
    screen = TrainingScreen(runner_options=fake_runner)
    app = MonitorApp(screen)
    out = tmp_path / "runs" / "never"
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        fill_form(screen, str(data_dir), str(out))
        screen.query_one(f"#{field}", Input).value = value
        await pilot.click("#start")
        await pilot.pause()
        assert any(message in m for m in app.notices), app.notices
        assert screen.handle is None
    assert not out.exists() and not (helium_home / "runs").exists()


async def test_resume_without_a_resumable_run_is_reported(tmp_path, helium_home, fake_runner):
    screen = TrainingScreen(runner_options=fake_runner)
    app = MonitorApp(screen)
    empty = tmp_path / "empty"
    empty.mkdir()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.click("#resume")
        await pilot.pause()
        assert any("type the run directory to resume" in m for m in app.notices)
        screen.query_one("#out", Input).value = str(empty)  # the out dir is used when run-dir is empty
        assert screen.resume_from_form() is None  # (a second click this soon would hit the button's debounce)
        await pilot.pause()
        assert any(f"{empty}: no train_config.json to resume from" in m for m in app.notices)
        assert screen.handle is None
    assert list(empty.iterdir()) == []


async def test_a_stopped_real_run_resumes_from_its_checkpoint(
    tmp_path, helium_home, one_thread, prepared_dir
):
    small = dict(batch_size=4, context=32, log_interval=1, eval_interval=0, eval_batches=1, warmup_steps=2)
    screen = TrainingScreen(config_overrides=small)
    app = MonitorApp(screen)
    run_dir = tmp_path / "resumed-run"
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
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


async def test_a_new_screen_reattaches_to_the_last_run(tmp_path):
    run_dir = tmp_path / "run"
    write_events(
        run_dir, [dict(event="start", step=0, max_steps=5), dict(event="status", status="stopped", step=2)]
    )
    app = MonitorApp(TrainingScreen(), last_run_dir=run_dir)
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.training.handle is not None, "the re-attach")
        await wait_for(pilot, lambda: "stopped" in stats(app.training), "the stopped run")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, TrainingScreen), "the studio")


async def test_a_real_tiny_training_run_through_the_screen(tmp_path, helium_home, prepared_dir):
    small = dict(batch_size=4, context=32, log_interval=1, eval_interval=2, eval_batches=1, warmup_steps=2)
    screen = TrainingScreen(config_overrides=small)
    app = MonitorApp(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.pause()
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


async def test_a_real_tiny_run_finishes_and_its_model_is_installed(tmp_path, helium_home, prepared_dir):
    small = dict(batch_size=4, context=32, log_interval=1, eval_interval=2, eval_batches=1, warmup_steps=1)
    screen = TrainingScreen(config_overrides=small)
    app = MonitorApp(screen)
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.pause()
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


async def test_ctrl_t_opens_the_monitor_in_the_real_app(helium_home):
    from helium_tui.app import HeliumApp

    app = HeliumApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, TrainingScreen), "the monitor")
        assert "No run yet" in stats(app.screen) and app.last_run_dir is None
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, TrainingScreen), "the studio")


@pytest.mark.parametrize("size", [(80, 24), (140, 45)])
async def test_the_form_fits_its_placeholders_and_buttons(size):
    app = MonitorApp(TrainingScreen())
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
