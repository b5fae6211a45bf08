"""The training monitor: start, resume or attach to a background run, and watch its loss, speed and progress.

Runs go through `engine.runner` (a separate process writing RUN_DIR/events.jsonl), so leaving this screen or
the app never stops a run; a finished run's bundle is installed by name for the model picker.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Footer, Header, Input, Label, ProgressBar, Select, Sparkline, Static
from textual_plotext import PlotextPlot

from engine.config import PRESETS
from engine.humanize import format_duration
from engine.install import install_run_bundle
from engine.paths import user_data_dir
from engine.runner import RunEvent, RunHandle, RunState, attach, start_run
from trainer.config import TrainConfig, resume_config

POLL_S = 0.5  # how often the screen reads new events
MAX_PLOT_POINTS = 400  # curves are thinned to about this many points before plotting
SPARK_POINTS = 120  # tokens/s values kept for the sparkline
DEFAULT_PRESET = "tiny"  # preset selected when the screen opens
DEFAULT_STEPS = 1000  # steps pre-filled in the form


def default_run_dir(now: datetime | None = None) -> Path:
    """A fresh run directory under the user data dir: runs/<YYYYMMDD-HHMMSS>."""
    return user_data_dir() / "runs" / f"{(now or datetime.now()):%Y%m%d-%H%M%S}"


def parse_count(text: str, what: str) -> int:
    """A whole number >= 1 typed in the form; ValueError naming `what` otherwise."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"{what} must be a whole number ≥ 1")
    return int(text)


def parse_lr(text: str) -> float:
    """A positive, finite learning rate typed in the form (3e-4, 0.001); ValueError otherwise."""
    try:
        lr = float(text.strip())
    except ValueError:
        lr = math.nan
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError("learning rate must be a positive number such as 3e-4")
    return lr


def thin(xs: list[int], ys: list[float], limit: int = MAX_PLOT_POINTS) -> tuple[list[int], list[float]]:
    """Every k-th point (and always the last) so a long curve plots quickly."""
    if len(xs) <= limit:
        return xs, ys
    k = -(-len(xs) // limit)
    idx = list(range(0, len(xs), k))
    if idx[-1] != len(xs) - 1:
        idx.append(len(xs) - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def _fmt(value: float | None, spec: str) -> str:
    """A number with a format spec, or '–' when unknown."""
    return "–" if value is None else format(value, spec)


class TrainingScreen(Screen):
    """Start, attach to and watch a training run; Stop asks the run to save a checkpoint and exit."""

    DEFAULT_CSS = """
    TrainingScreen .row { height: auto; }
    TrainingScreen .row Button { min-width: 8; }
    TrainingScreen #preset { width: 16; }
    TrainingScreen #data { width: 1fr; }
    TrainingScreen #steps, TrainingScreen #batch, TrainingScreen #lr { width: 12; padding: 0 1; }
    TrainingScreen #out { width: 1fr; }
    TrainingScreen #run-dir { width: 1fr; }
    TrainingScreen #monitor { height: 1fr; }
    TrainingScreen #loss-plot { width: 3fr; height: 1fr; }
    TrainingScreen #side { width: 2fr; height: 1fr; padding: 0 1; }
    TrainingScreen #stats { height: auto; }
    TrainingScreen #progress { margin: 1 0 0 0; }
    TrainingScreen #throughput { height: 3; margin-bottom: 1; }
    TrainingScreen #error { height: auto; max-height: 12; color: $error; overflow-y: auto; }
    """
    BINDINGS = [
        Binding("escape", "back", "Back (run continues)", id="training.back"),
        Binding("ctrl+s", "stop_run", "Stop run", id="training.stop"),
    ]

    last_run_dir: ClassVar[Path | None] = (
        None  # the run this app last watched; a new screen re-attaches to it
    )

    def __init__(
        self, runner_options: dict[str, Any] | None = None, config_overrides: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.runner_options = runner_options or {}  # extra start_run keywords (tests run a stand-in trainer)
        self.config_overrides = config_overrides or {}  # extra TrainConfig fields for runs started here
        self.handle: RunHandle | None = None  # the run being watched
        self.state: RunState | None = None  # the last snapshot rendered
        self.throughput: list[float] = []  # recent tokens/s values
        self._timer: Timer | None = None  # the polling timer while a run is watched
        self._rendered: tuple[int, str] = (-1, "")  # (events seen, status) of the last render
        self._reported: str = ""  # the final status already notified for the current run
        self._installed: str | None = None  # model name the finished run's bundle was installed as

    def compose(self) -> ComposeResult:
        yield Header()
        defaults = TrainConfig().with_(**{k: v for k, v in self.config_overrides.items() if k in ("batch_size", "lr")})
        batch, lr = defaults.batch_size, defaults.lr
        with Horizontal(classes="row"):  # what to train
            options = [(name, name) for name in PRESETS]
            yield Select(options, value=DEFAULT_PRESET, allow_blank=False, id="preset")
            yield Input(placeholder="prepared data dir (helium data prepare --out DIR)", id="data")
            yield Input(str(DEFAULT_STEPS), placeholder="steps", type="integer", id="steps")
            yield Input(placeholder=f"batch {batch}", type="integer", valid_empty=True, id="batch")
            yield Input(placeholder=f"lr {lr:g}", type="number", valid_empty=True, id="lr")
        with Horizontal(classes="row"):  # where: a new run's out dir, or a run to attach to or resume
            yield Input(placeholder="out dir (default: <user data dir>/runs/<time>)", id="out")
            yield Button("Start", variant="success", id="start")
            yield Input(placeholder="run directory to attach to or resume", id="run-dir")
            yield Button("Attach", id="attach")
            yield Button("Resume", variant="primary", id="resume")
            yield Button("Stop", variant="error", id="stop", disabled=True)
        with Horizontal(id="monitor"):
            yield PlotextPlot(id="loss-plot")
            with Vertical(id="side"):
                yield Static("No run yet: start one above, or attach to a run directory.", id="stats")
                yield ProgressBar(total=None, show_eta=False, id="progress")
                yield Label("tokens/s", id="throughput-label")
                yield Sparkline([], summary_function=max, id="throughput")
                yield Static("", id="error")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Training monitor"
        self._draw_plot(None)
        last = TrainingScreen.last_run_dir
        if last is not None and last.joinpath("events.jsonl").exists():
            self.query_one("#run-dir", Input).value = str(last)
            self.watch_run(attach(last))

    # --- starting and attaching ---------------------------------------------------------------------------

    @on(Button.Pressed, "#start")
    @on(Input.Submitted, "#data, #steps, #batch, #lr, #out")
    def _start_pressed(self) -> None:
        self.start_from_form()

    @on(Button.Pressed, "#resume")
    def _resume_pressed(self) -> None:
        self.resume_from_form()

    @on(Button.Pressed, "#attach")
    @on(Input.Submitted, "#run-dir")
    def _attach_pressed(self) -> None:
        self.attach_to(self.query_one("#run-dir", Input).value)

    @on(Button.Pressed, "#stop")
    def _stop_pressed(self) -> None:
        self.action_stop_run()

    def start_from_form(self) -> RunHandle | None:
        """Start a run with the form's preset, data dir, steps, batch, lr and out dir; None (and a notice) on
        bad input."""
        if self._run_going():
            return None
        preset = str(self.query_one("#preset", Select).value)
        data = self.query_one("#data", Input).value.strip()
        out = self.query_one("#out", Input).value.strip()
        data_dir = Path(data).expanduser()
        if not data or not data_dir.joinpath("manifest.json").is_file():
            self.notify(
                f"{data or 'data dir'}: not a prepared data dir (run `helium data prepare --out DIR`)",
                severity="error",
            )
            return None
        run_dir = Path(out).expanduser() if out else default_run_dir()
        try:
            steps = parse_count(self.query_one("#steps", Input).value, "steps")
            extra = {**self.config_overrides, **self.form_hyperparams()}
            values = {"command": "helium (training monitor)", **extra}
            values |= dict(preset=preset, data=str(data_dir.resolve()), out=str(run_dir.resolve()), max_steps=steps)
            config = TrainConfig.from_dict(values)
            handle = start_run(config.to_dict(), run_dir, **self.runner_options)
        except (ValueError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return None
        self._watch_new(handle, f"Training started in {run_dir}")
        return handle

    def resume_from_form(self) -> RunHandle | None:
        """Resume the run in the run-dir field (else the out dir) from its newest checkpoint, with its saved
        config and the form's batch and lr when typed; None (and a notice) on bad input."""
        if self._run_going():
            return None
        run_dir_text = self.query_one("#run-dir", Input).value.strip()
        target = run_dir_text or self.query_one("#out", Input).value.strip()
        if not target:
            self.notify("type the run directory to resume", severity="warning")
            return None
        run_dir = Path(target).expanduser()
        try:
            config = resume_config(run_dir, **self.form_hyperparams())
            handle = start_run(config.to_dict(), run_dir, resume=True, **self.runner_options)
        except (ValueError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return None
        self._watch_new(handle, f"Training resumed in {run_dir}")
        return handle

    def form_hyperparams(self) -> dict[str, Any]:
        """The batch_size and lr typed in the form (an empty field is left out); ValueError for bad values."""
        values: dict[str, Any] = {}
        batch = self.query_one("#batch", Input).value.strip()
        lr = self.query_one("#lr", Input).value.strip()
        if batch:
            values["batch_size"] = parse_count(batch, "batch size")
        if lr:
            values["lr"] = parse_lr(lr)
        return values

    def _run_going(self) -> bool:
        """True (and a notice) while the watched run is still going: one run at a time from this screen."""
        if self.handle is not None and self.handle.is_alive():
            self.notify("A run is already going: stop it first.", severity="warning")
            return True
        return False

    def _watch_new(self, handle: RunHandle, message: str) -> None:
        """Show a run this screen just launched: its directory in the run-dir field, a notice, the monitor."""
        self.query_one("#run-dir", Input).value = str(handle.run_dir)
        self.notify(message)
        self.watch_run(handle)

    def attach_to(self, run_dir: str) -> RunHandle | None:
        """Watch the run in run_dir (going or ended); None (and a notice) when it is not a run directory."""
        if not run_dir.strip():
            self.notify("type a run directory to attach to", severity="warning")
            return None
        try:
            handle = attach(Path(run_dir.strip()).expanduser())
        except (ValueError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return None
        self.watch_run(handle)
        return handle

    def watch_run(self, handle: RunHandle) -> None:
        """Make handle the watched run, reset the monitor and start polling it."""
        self.handle = handle
        TrainingScreen.last_run_dir = handle.run_dir
        self.state, self.throughput = None, []
        self._rendered, self._reported, self._installed = (-1, ""), "", None
        self.query_one("#error", Static).update("")
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(POLL_S, self.refresh_run)
        self.refresh_run()

    # --- polling and rendering ----------------------------------------------------------------------------

    def refresh_run(self) -> None:
        """Read new events (non-blocking) and redraw what changed; stop polling once the run has ended."""
        handle = self.handle
        if handle is None:
            return
        events = handle.poll()
        self._collect_throughput(events)
        state = handle.snapshot()
        key = (state.events_seen, state.status)
        if key != self._rendered:
            self._rendered = key
            self.state = state
            self.render_state(state)
            self._on_final(state)
        alive = handle.is_alive()
        stoppable = alive and not handle.stop_requested
        if self.query_one("#stop", Button).disabled == stoppable:
            self.query_one("#stop", Button).disabled = not stoppable
            self.refresh_bindings()
        if state.is_final and not alive and self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _collect_throughput(self, events: list[RunEvent]) -> None:
        """Keep the tokens/s of new step events for the sparkline."""
        for ev in events:
            if ev.event == "step" and isinstance(ev.get("tokens_per_s"), (int, float)):
                self.throughput.append(float(ev.get("tokens_per_s")))
        del self.throughput[:-SPARK_POINTS]

    def render_state(self, state: RunState) -> None:
        """Show a snapshot: stats, progress, curves, throughput and any error."""
        self.query_one("#stats", Static).update(self._stats_text(state))
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=state.max_steps, progress=state.step)
        self.query_one("#throughput", Sparkline).data = list(self.throughput) or [0.0]
        self._draw_plot(state)
        error = self.query_one("#error", Static)
        if state.error:
            error.update(Text("\n".join([f"error: {state.error}", *state.error_tail])))
        else:
            error.update("")

    def _stats_text(self, state: RunState) -> Text:
        """The stats block as styled text."""
        colors = {"running": "green", "finished": "bold green", "stopped": "yellow", "failed": "bold red"}
        steps = f"{state.step}/{state.max_steps}" if state.max_steps else str(state.step)
        eta = (
            "done" if state.status == "finished" else "–" if state.is_final else format_duration(state.eta_s)
        )
        text = Text()
        text.append("status ", style="dim").append(state.status, style=colors.get(state.status, ""))
        text.append(f"   {Path(state.run_dir).name}\n", style="dim")
        text.append("step ", style="dim").append(f"{steps}   ")
        text.append("ETA ", style="dim").append(f"{eta}\n")
        text.append("loss ", style="dim").append(_fmt(state.last_loss, ".4f"))
        text.append("   val ", style="dim").append(f"{_fmt(state.last_val_loss, '.4f')}\n")
        text.append("lr ", style="dim").append(_fmt(state.lr, ".2e"))
        text.append("   tok/s ", style="dim").append(f"{_fmt(state.tokens_per_s, ',.0f')}\n")
        if state.preset or state.params:
            params = f"{state.params:,}" if state.params else "?"
            text.append("model ", style="dim").append(f"{state.preset or '?'} · {params} params")
            text.append(f" · {state.device or '?'} {state.dtype or ''}\n")
        checkpoint = Path(state.last_checkpoint).name if state.last_checkpoint else "–"
        text.append("checkpoint ", style="dim").append(checkpoint)
        if self._installed:
            text.append("\nmodel installed as ", style="dim").append(self._installed, style="bold")
        return text

    def _draw_plot(self, state: RunState | None) -> None:
        """Redraw the loss and val-loss curves."""
        plot = self.query_one("#loss-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss")
        plt.xlabel("step")
        if state is not None and state.steps:
            plt.plot(*thin(state.steps, state.losses), label="train", marker="braille")
        if state is not None and state.val_steps:
            plt.plot(*thin(state.val_steps, state.val_losses), label="val", marker="braille")
        plot.refresh()

    def _on_final(self, state: RunState) -> None:
        """Notify once about how the run ended, and install a finished run's bundle for the model picker."""
        if not state.is_final or self._reported == state.status:
            return
        self._reported = state.status
        if state.status == "failed":
            self.notify(f"Training failed: {state.error or 'see train.log'}", severity="error", timeout=10)
        elif state.status == "finished" and state.bundle:
            try:
                self._installed = install_run_bundle(Path(state.run_dir), state.bundle)
            except (ValueError, OSError) as exc:
                self._installed = ""
                self.notify(f"Could not install the run's model: {exc}", severity="error")
            else:
                self.query_one("#stats", Static).update(self._stats_text(state))
                self.notify(f"Training finished: model {self._installed!r} is in the model picker (ctrl+o)")
        elif state.status == "stopped":
            self.notify(f"Training stopped at step {state.step} (checkpoint saved)")

    # --- stopping and leaving -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop is dimmed in the footer unless a run is going."""
        if action == "stop_run":
            return None if self.query("#stop") and self.query_one("#stop", Button).disabled else True
        return True

    def action_stop_run(self) -> None:
        """Ask the watched run to stop gracefully (in a thread: stopping waits for the checkpoint)."""
        if self.handle is None or not self.handle.is_alive():
            self.notify("No running training to stop.", severity="warning")
            return
        self.query_one("#stop", Button).disabled = True
        self.notify("Stopping: the run saves a checkpoint first…")
        self._stop_worker(self.handle)

    @work(thread=True, exclusive=True, group="training-stop")
    def _stop_worker(self, handle: RunHandle) -> None:
        """Stop handle's run (blocking). It touches no widget: the polling timer shows the outcome, and a
        UI call from here could land while the app is closing (a flaky crash on exit)."""
        handle.stop(timeout=60)

    def action_back(self) -> None:
        """Leave the monitor; the run keeps going in the background."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.app.pop_screen()
