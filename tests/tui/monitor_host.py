"""A bare app that hosts the training monitor, and the waits and form helpers the monitor's tests share.

MonitorHost holds the `AppState` TrainingScreen reads, as HeliumApp does: the last run watched, a loaded model (its
name and bundle dir) and the story library (an empty one unless given); it records the notices it shows. Every wait
ends after WAIT_S.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from textual.app import App, ComposeResult
from textual.widgets import Input, Select, Static

from helium_tui.app_state import AppState
from helium_tui.library import StoryStore
from helium_tui.screens.dialogs import AskDialog
from helium_tui.screens.training.screen import TrainingScreen

WAIT_S = 60.0  # upper bound for a subprocess to reach a state (bounded polling, never a timing assert)


class MonitorHost(App):
    """The training screen over a stand-in studio."""

    CSS_PATH = "../../helium_tui/helium.tcss"
    TITLE = "Helium"

    def __init__(
        self,
        screen: TrainingScreen,
        last_run_dir: Path | None = None,
        base: Path | None = None,
        store: StoryStore | None = None,
    ) -> None:
        super().__init__()
        self.training = screen
        self._stories = tempfile.TemporaryDirectory(prefix="helium-stories-")  # an empty library, removed with the host
        session = SimpleNamespace(name=base.name, bundle=SimpleNamespace(path=base)) if base else None
        store = store or StoryStore(Path(self._stories.name))
        self.state = AppState(store, session=session, last_run_dir=last_run_dir)  # type: ignore[arg-type]
        self.notices: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("studio")

    def on_mount(self) -> None:
        self.push_screen(self.training)

    def notify(self, message: str, **kwargs) -> None:
        self.notices.append(message)
        super().notify(message, **kwargs)


async def wait_for(pilot, condition, what: str) -> None:
    """Let the app run until condition() holds (bounded by WAIT_S so CI cannot hang)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


async def opened(pilot, app: MonitorHost) -> TrainingScreen:
    """Wait until the monitor is the screen on top, mounted; returns it."""
    screen = app.training
    await wait_for(pilot, lambda: app.screen is screen and screen.is_mounted, "the monitor")
    await pilot.pause()
    return screen


def write_events(run_dir: Path, events: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"time": 1_700_000_000.0 + i, **ev}) for i, ev in enumerate(events)]
    (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n")


def fill_form(
    screen: TrainingScreen, data: str, out: str, steps: str | None = None, preset: str = "tiny"
) -> None:
    """Pick a preset (tiny: fast tests) and type a prepared data dir, an out dir and (optionally) the steps."""
    screen.query_one("#preset", Select).value = preset
    screen.query_one("#data", Input).value = data
    screen.query_one("#out", Input).value = out
    if steps is not None:
        screen.query_one("#steps", Input).value = steps


def stats(screen: TrainingScreen) -> str:
    return str(screen.query_one("#stats", Static).render())


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
