"""The training monitor: start, resume or attach to a background run, and watch its loss, speed and progress.

Runs go through `engine.runner` (a separate process writing RUN_DIR/events.jsonl), so leaving this screen or
the app never stops a run; a finished run's bundle is installed under a name the user confirms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Button, Footer, Header, Input, Label, ProgressBar, Select, Sparkline, Static
from textual_plotext import PlotextPlot

from engine.config import PRESETS
from engine.install import install_run_bundle
from engine.rundir import EVENTS_FILE
from engine.runner import RunEvent, RunHandle, RunState, attach, start_run
from helium_tui.safe_text import terminal_safe
from helium_tui.screens.dialogs import AskDialog
from helium_tui.screens.training_view import HELP, draw_loss, error_text, stats_text
from helium_tui.training_form import RunForm, check_name, installed_as, suggested_model_name
from trainer.config import TrainConfig, resume_config

POLL_S = 0.5  # how often the screen reads new events
SPARK_POINTS = 120  # tokens/s values kept for the sparkline
class TrainingScreen(Screen):
    """Start, attach to and watch a training run; Stop asks the run to save a checkpoint and exit."""

    HELP = HELP
    BINDINGS = [
        Binding("escape", "back", "Back (run continues)", id="training.back",
                tooltip="Back to the studio; the run keeps going"),
        Binding("ctrl+s", "stop_run", "Stop run", id="training.stop",
                tooltip="Ask the run to save a checkpoint and exit"),
    ]  # fmt: skip

    stoppable: reactive[bool] = reactive(False, bindings=True)  # the watched run is going and not yet stopping

    def __init__(
        self, runner_options: dict[str, Any] | None = None, config_overrides: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.runner_options = runner_options or {}  # extra start_run keywords (tests run a stand-in trainer)
        self.config_overrides = config_overrides or {}  # extra TrainConfig fields for runs started here
        self.handle: RunHandle | None = None  # the run being watched
        self.state: RunState | None = None  # the last snapshot rendered
        self.throughput: list[float] = []  # recent tokens/s values
        self.installed: str | None = None  # the name the watched run's model is installed under
        self._timer: Timer | None = None  # the polling timer while a run is watched
        self._rendered: tuple[int, str] = (-1, "")  # (events seen, status) of the last render
        self._reported: str = ""  # the final status already handled for the current run

    def compose(self) -> ComposeResult:
        yield Header()
        defaults = TrainConfig().with_(**{k: v for k, v in self.config_overrides.items() if k in ("batch_size", "lr")})
        form = RunForm()
        with Vertical(id="run-form"):
            with Horizontal(classes="row"):  # what to train
                yield Select([(p, p) for p in PRESETS], value=form.preset, allow_blank=False, compact=True, id="preset")
                yield Input(placeholder="prepared data dir", compact=True, id="data")
                yield Label("steps")
                yield Input(form.steps, type="integer", compact=True, id="steps")
                yield Label("batch")
                yield Input(placeholder=str(defaults.batch_size), type="integer", compact=True, id="batch")
                yield Label("lr")
                yield Input(placeholder=f"{defaults.lr:g}", type="number", compact=True, id="lr")
            with Horizontal(classes="row"):  # where a new run goes
                yield Input(placeholder="out dir for a new run (empty: runs/<time>)", compact=True, id="out")
                yield Button("Start", variant="success", compact=True, id="start")
            with Horizontal(classes="row"):  # a run to watch or continue
                yield Input(placeholder="run dir to attach to or resume", compact=True, id="run-dir")
                yield Button("Attach", compact=True, id="attach")
                yield Button("Resume", variant="primary", compact=True, id="resume")
                yield Button("Stop", variant="error", compact=True, id="stop", disabled=True)
        with Horizontal(id="monitor"):
            yield PlotextPlot(id="loss-plot")
            with Vertical(id="side"):
                yield Static(Text("No run yet: start one above, or attach to a run directory."), id="stats")
                yield ProgressBar(total=None, show_eta=False, id="progress")
                yield Label("tokens/s", id="throughput-label")
                yield Sparkline([], summary_function=max, id="throughput")
                yield Static("", id="error")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Training monitor"
        draw_loss(self.query_one("#loss-plot", PlotextPlot), None)
        last = self.app.last_run_dir
        if last is not None and last.joinpath(EVENTS_FILE).exists():
            self.query_one("#run-dir", Input).value = str(last)
            self.watch_run(attach(last))

    # --- the form -----------------------------------------------------------------------------------------

    @property
    def form(self) -> RunForm:
        """The form's fields as typed."""
        value = lambda widget_id: self.query_one(widget_id, Input).value  # noqa: E731
        preset = self.query_one("#preset", Select).value
        return RunForm(str(preset), value("#data"), value("#steps"), value("#batch"), value("#lr"), value("#out"))

    def show_form(self, form: RunForm) -> None:
        """Fill the run fields (not the out dir) from form."""
        self.query_one("#preset", Select).value = form.preset
        for widget_id, value in (("#data", form.data), ("#steps", form.steps), ("#batch", form.batch), ("#lr", form.lr)):
            self.query_one(widget_id, Input).value = value

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
        self.attach_from_form()

    @on(Button.Pressed, "#stop")
    def _stop_pressed(self) -> None:
        self.action_stop_run()

    def start_from_form(self) -> RunHandle | None:
        """Start a run with the form's settings; None (and a notice) on bad input."""
        if self._run_going():
            return None
        try:
            config, run_dir = self.form.new_run(self.config_overrides)
            handle = start_run(config.to_dict(), run_dir, **self.runner_options)
        except (ValueError, OSError) as exc:
            self._notify(str(exc), severity="error")
            return None
        self._watch_new(handle, f"Training started in {run_dir}")
        return handle

    def resume_from_form(self) -> RunHandle | None:
        """Resume the run in the run-dir field (else the out dir) from its newest checkpoint, with its saved
        config and the form's batch and lr when typed; None (and a notice) on bad input."""
        if self._run_going():
            return None
        target = self.query_one("#run-dir", Input).value.strip() or self.query_one("#out", Input).value.strip()
        if not target:
            self._notify("type the run directory to resume", severity="warning")
            return None
        run_dir = Path(target).expanduser()
        try:
            config = resume_config(run_dir, **self.form.hyperparams())
            handle = start_run(config.to_dict(), run_dir, resume=True, **self.runner_options)
        except (ValueError, OSError) as exc:
            self._notify(str(exc), severity="error")
            return None
        self._watch_new(handle, f"Training resumed in {run_dir}")
        return handle

    def attach_from_form(self) -> RunHandle | None:
        """Attach to the run in the run-dir field."""
        return self.attach_to(self.query_one("#run-dir", Input).value)

    def attach_to(self, run_dir: str) -> RunHandle | None:
        """Watch the run in run_dir (going or ended); None (and a notice) when it is not a run directory."""
        if not run_dir.strip():
            self._notify("type a run directory to attach to", severity="warning")
            return None
        try:
            handle = attach(Path(run_dir.strip()).expanduser())
        except (ValueError, OSError) as exc:
            self._notify(str(exc), severity="error")
            return None
        form = RunForm.of_run(handle.run_dir, tuple(PRESETS))
        if form is not None:
            self.show_form(form)
        self.watch_run(handle)
        return handle

    def _run_going(self) -> bool:
        """True (and a notice) while the watched run is still going: one run at a time from this screen."""
        if self.handle is not None and self.handle.is_alive():
            self._notify("A run is already going: stop it first.", severity="warning")
            return True
        return False

    def _watch_new(self, handle: RunHandle, message: str) -> None:
        """Show a run this screen just launched: its directory in the run-dir field, a notice, the monitor."""
        self.query_one("#run-dir", Input).value = str(handle.run_dir)
        self._notify(message)
        self.watch_run(handle)

    def watch_run(self, handle: RunHandle) -> None:
        """Make handle the watched run, reset the monitor and start polling it."""
        self.handle = handle
        self.app.last_run_dir = handle.run_dir
        self.state, self.throughput, self.installed = None, [], None
        self._rendered, self._reported = (-1, ""), ""
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
        self.stoppable = alive and not handle.stop_requested
        if state.is_final and not alive and self._timer is not None:
            self._timer.stop()
            self._timer = None

    def watch_stoppable(self, stoppable: bool) -> None:
        self.query_one("#stop", Button).disabled = not stoppable

    def _collect_throughput(self, events: list[RunEvent]) -> None:
        """Keep the tokens/s of new step events for the sparkline."""
        for ev in events:
            if ev.event == "step" and isinstance(ev.get("tokens_per_s"), (int, float)):
                self.throughput.append(float(ev.get("tokens_per_s")))
        del self.throughput[:-SPARK_POINTS]

    def render_state(self, state: RunState) -> None:
        """Show a snapshot: stats, progress, curves, throughput and any error."""
        self.query_one("#stats", Static).update(stats_text(state, self.installed))
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=state.max_steps, progress=state.step)
        self.query_one("#throughput", Sparkline).data = list(self.throughput) or [0.0]
        draw_loss(self.query_one("#loss-plot", PlotextPlot), state)
        self.query_one("#error", Static).update(error_text(state))

    def _on_final(self, state: RunState) -> None:
        """Say once how the run ended; for a finished run, ask for the name to install its model under."""
        if not state.is_final or self._reported == state.status:
            return
        self._reported = state.status
        if state.status == "failed":
            self._notify(f"Training failed: {state.error or 'see train.log'}", severity="error", timeout=10)
        elif state.status == "finished" and state.bundle:
            self.installed = installed_as(self._bundle_path(state))
            if self.installed:
                self.query_one("#stats", Static).update(stats_text(state, self.installed))
            else:
                self.ask_install()
        elif state.status == "stopped":
            self._notify(f"Training stopped at step {state.step} (checkpoint saved)")

    # --- installing the model -----------------------------------------------------------------------------

    @staticmethod
    def _bundle_path(state: RunState) -> Path:
        bundle = Path(state.bundle or "")
        return bundle if bundle.is_absolute() else Path(state.run_dir) / bundle

    def ask_install(self) -> None:
        """Ask for a model name (default: preset and data dir, e.g. tiny-ts4096), then install the run's bundle."""
        state = self.state
        if state is None or state.status != "finished" or not state.bundle:
            self._notify("No finished run with a model to install.", severity="warning")
            return
        default = suggested_model_name(Path(state.run_dir), state.preset)
        question = "Training finished. Install its model (for ctrl+o and --model) as:"
        hint = "enter: install · escape: not now (ctrl+p → Install model later)"
        self.app.push_screen(AskDialog(question, default, hint), self.install_as)

    def install_as(self, name: str | None) -> str | None:
        """Install the finished run's bundle as name (a link in the models dir); None when not installed."""
        state = self.state
        if name is None or state is None or not state.bundle:
            return None
        try:
            self.installed = install_run_bundle(Path(state.run_dir), state.bundle, check_name(name))
        except (ValueError, OSError) as exc:
            self._notify(f"Could not install the run's model: {exc}", severity="error")
            return None
        self.query_one("#stats", Static).update(stats_text(state, self.installed))
        self._notify(f"Model {self.installed!r} is in the model picker (ctrl+o)")
        return self.installed

    # --- stopping and leaving -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop is dimmed in the footer unless a run is going."""
        if action == "stop_run":
            return True if self.stoppable else None
        return True

    def action_stop_run(self) -> None:
        """Ask the watched run to stop gracefully (in a thread: stopping waits for the checkpoint)."""
        if self.handle is None or not self.handle.is_alive():
            self._notify("No running training to stop.", severity="warning")
            return
        self.stoppable = False
        self._notify("Stopping: the run saves a checkpoint first…")
        self._stop_worker(self.handle)

    @work(thread=True, exclusive=True, group="training-stop")
    def _stop_worker(self, handle: RunHandle) -> None:
        """Stop handle's run (blocking). It touches no widget: the polling timer shows the outcome, and a
        UI call from here could land while the app is closing (a flaky crash on exit)."""
        handle.stop(timeout=60)

    def palette_commands(self) -> list[SystemCommand]:
        """The buttons by name in the command palette (ctrl+p); the keys are listed from BINDINGS."""
        return [
            SystemCommand("Start run", "Train a new model with the form's settings", self.start_from_form),
            SystemCommand("Attach to run", "Watch the run in the run dir field", self.attach_from_form),
            SystemCommand("Resume run", "Continue the run dir's run from its newest checkpoint", self.resume_from_form),
            SystemCommand("Install model", "Install the finished run's model by name", self.ask_install),
        ]

    def action_back(self) -> None:
        """Leave the monitor; the run keeps going in the background."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.app.pop_screen()

    def _notify(self, message: str, **kwargs: Any) -> None:
        """A notification of plain text: paths and run output are never markup, and terminal-safe."""
        self.notify(terminal_safe(message), markup=False, **kwargs)
