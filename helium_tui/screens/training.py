"""The training monitor: start, resume or attach to a background run, and watch its loss, speed and progress.

Runs go through `engine.runner` (a separate process writing RUN_DIR/events.jsonl), so leaving this screen or
the app never stops a run; a finished run's bundle is installed under a name the user confirms. Its fine-tune
mode prepares the library's stories for the studio's model on a daemon thread, then starts the run the same way.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import (
    Button,
    Checkbox,
    ContentSwitcher,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Select,
    Sparkline,
    Static,
)
from textual_plotext import PlotextPlot

from engine.config import PRESETS
from engine.errors import BundleError
from engine.install import install_run_bundle
from engine.rundir import EVENTS_FILE
from engine.runner import RunEvent, RunHandle, RunState, attach, start_run
from helium_tui.safe_text import terminal_safe
from helium_tui.screens.dialogs import AskDialog
from helium_tui.screens.training_view import HELP, Progress, draw_loss, error_text, preparing_text, stats_text
from helium_tui.streaming import start_daemon
from helium_tui.training_form import (
    FinetuneForm,
    FinetunePlan,
    RunForm,
    check_name,
    installed_as,
    is_finetune_run,
    suggested_model_name,
)
from trainer.config import TrainConfig, resume_config
from trainer.finetune import FinetuneData, TooLittleText, finetune_config, prepare_finetune_data, read_base

POLL_S = 0.5  # how often the screen reads new events
SPARK_POINTS = 120  # tokens/s values kept for the sparkline
PROGRESS_S = 0.1  # the preparing thread reports its progress at most this often
NEW_FORM, TUNE_FORM = "new-form", "tune-form"  # the two forms of the top rows (ContentSwitcher ids)


class TrainingScreen(Screen):
    """Start, attach to and watch a training run; Stop asks the run to save a checkpoint and exit."""

    HELP = HELP
    BINDINGS = [
        Binding("escape", "back", "Back (run continues)", id="training.back",
                tooltip="Back to the studio; the run keeps going"),
        Binding("ctrl+s", "stop_run", "Stop run", id="training.stop",
                tooltip="Ask the run to save a checkpoint and exit"),
        Binding("ctrl+f", "finetune_mode", "Fine-tune", id="training.finetune",
                tooltip="Fine-tune the studio's model on your stories (ctrl+f again: train a new model)"),
        Binding("ctrl+f", "new_mode", "New model", id="training.new",
                tooltip="Back to training a new model from scratch"),
    ]  # fmt: skip

    stoppable: reactive[bool] = reactive(False, bindings=True)  # the watched run is going and not yet stopping
    finetuning: reactive[bool] = reactive(False, bindings=True)  # the top rows show the fine-tune form
    preparing: reactive[bool] = reactive(False)  # a fine-tune's stories are being prepared

    @dataclass
    class Prepared(Message):
        """A fine-tune's data is ready (posted by the preparing thread): start its run."""

        plan: FinetunePlan
        base_name: str  # the base model's name
        data: FinetuneData  # what was prepared
        config: TrainConfig  # the run's config

    @dataclass
    class PrepareFailed(Message):
        """A fine-tune could not be prepared (posted by the preparing thread)."""

        error: str  # one line for the user
        too_little: bool  # too little text: a notice, not an error

    @dataclass
    class PrepareProgress(Message):
        """The preparing thread got further (at most one a PROGRESS_S)."""

        progress: Progress

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
        self._prepare_cancel = threading.Event()  # set when the screen goes: a preparing thread starts nothing
        self.preparing_for: tuple[str, str] = ("", "")  # (base model, stories) of the fine-tune being prepared

    def compose(self) -> ComposeResult:
        yield Header()
        defaults = TrainConfig().with_(**{k: v for k, v in self.config_overrides.items() if k in ("batch_size", "lr")})
        form = RunForm()
        with Vertical(id="run-form"):
            with ContentSwitcher(initial=NEW_FORM, id="modes"):
                with Vertical(id=NEW_FORM):
                    with Horizontal(classes="row"):  # what to train
                        yield Select([(p, p) for p in PRESETS], value=form.preset, allow_blank=False, compact=True,
                                     id="preset")  # fmt: skip
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
                with Vertical(id=TUNE_FORM):
                    with Horizontal(classes="row"):  # the model and the stories
                        yield Label("fine-tune", id="ft-label")
                        yield Static("", id="ft-base")
                        yield Checkbox("library", True, compact=True, id="ft-library")
                        yield Label("steps")
                        yield Input(placeholder="auto", type="integer", compact=True, id="ft-steps")
                    with Horizontal(classes="row"):  # more stories, and go
                        yield Input(placeholder="and/or a folder of .txt/.md/.jsonl stories", compact=True,
                                    id="ft-folder")  # fmt: skip
                        yield Button("Fine-tune", variant="success", compact=True, id="ft-start")
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
            self.finetuning = is_finetune_run(last)
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
            typed = {} if self.finetuning else self.form.hyperparams()  # batch and lr are the new-model form's
            config = resume_config(run_dir, **typed)
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
        if is_finetune_run(handle.run_dir):
            self.finetuning = True  # its settings are the fine-tune form's, not a preset's
        elif form is not None:
            self.show_form(form)
        self.watch_run(handle)
        return handle

    def _run_going(self) -> bool:
        """True (and a notice) while the watched run is still going or a fine-tune is being prepared: one run at
        a time from this screen."""
        if self.preparing:
            self._notify("A fine-tune is being prepared: wait for it to start.", severity="warning")
            return True
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

    # --- fine-tuning the studio's model -------------------------------------------------------------------

    def action_finetune_mode(self) -> None:
        """Show the fine-tune form: the studio's model, the library's stories and/or a folder, the steps."""
        self.finetuning = True

    def action_new_mode(self) -> None:
        """Show the form that trains a new model from scratch."""
        self.finetuning = False

    def watch_finetuning(self, finetuning: bool) -> None:
        self.query_one("#modes", ContentSwitcher).current = TUNE_FORM if finetuning else NEW_FORM
        self.sub_title = "fine-tune" if finetuning else ""
        if finetuning:
            self.show_finetune_sources()

    def watch_preparing(self, preparing: bool) -> None:
        self.query_one("#ft-start", Button).disabled = preparing

    def on_screen_resume(self) -> None:
        self.show_finetune_sources()  # the studio may have loaded another model meanwhile

    def _base_model(self) -> tuple[str, str]:
        """(name, bundle dir) of the model loaded in the studio; ("", "") when none is. The name is the one its
        fine-tune records (a run's `bundle/` is named after its run)."""
        session = getattr(self.app, "session", None)
        path = getattr(getattr(session, "bundle", None), "path", None)
        if path is None:
            return "", ""
        try:
            return read_base(path).name, str(path)
        except (BundleError, ValueError, OSError):
            return session.name, str(path)

    def _library_count(self) -> int | None:
        """How many stories the library holds (None without a library)."""
        store = getattr(self.app, "store", None)
        if store is None:
            return None
        try:
            return len(store.scan()[0])
        except OSError:
            return 0

    def show_finetune_sources(self) -> None:
        """Show the base model's name and how many stories the library holds."""
        name, _ = self._base_model()
        base = Text(terminal_safe(name), style="bold") if name else Text("no model loaded (ctrl+o)", style="dim")
        self.query_one("#ft-base", Static).update(base)
        count = self._library_count()
        library = self.query_one("#ft-library", Checkbox)
        library.label = "no library" if count is None else f"library: {count} {'story' if count == 1 else 'stories'}"
        library.disabled = count is None

    @property
    def finetune_form(self) -> FinetuneForm:
        """The fine-tune form's fields as typed, with the studio's model."""
        library = self.query_one("#ft-library", Checkbox)
        return FinetuneForm(
            base=self._base_model()[1],
            library=library.value and not library.disabled,
            folder=self.query_one("#ft-folder", Input).value,
            steps=self.query_one("#ft-steps", Input).value,
        )

    @on(Button.Pressed, "#ft-start")
    @on(Input.Submitted, "#ft-steps, #ft-folder")
    def _finetune_pressed(self) -> None:
        self.start_finetune()

    def start_finetune(self) -> FinetunePlan | None:
        """Prepare the fine-tune's stories in the background, then start its run (see `_prepared`); None (and a
        notice) on bad input or while a run is going or being prepared."""
        self.finetuning = True
        if self._run_going():
            return None
        try:
            plan = self.finetune_form.plan()
        except ValueError as exc:
            self._notify(str(exc), severity="error")
            return None
        self.show_finetune_sources()
        sources = " + ".join(s for s in ("library" if plan.library else "", "folder" if plan.folder else "") if s)
        self.preparing_for = (self._base_model()[0], sources)
        self.preparing = True
        self.show_progress(Progress())
        store = getattr(self.app, "store", None) if plan.library else None
        cancel = self._prepare_cancel
        start_daemon("finetune-data", lambda: self._prepare(plan, store, cancel))
        return plan

    def _prepare(self, plan: FinetunePlan, store: Any, cancel: threading.Event) -> None:
        """On a daemon thread: read the stories, prepare them in the base model's tokens, build the run's config,
        and post Prepared or PrepareFailed. It touches no widget (the screen may be gone)."""
        progress, last_post = Progress(), 0.0

        def report(stage: str, done: int, total: int | None) -> None:
            nonlocal last_post
            if stage != progress.stage:
                progress.stage, progress.done, progress.total = stage, 0, None
            progress.done += done
            progress.total = total if total is not None else progress.total
            if time.monotonic() - last_post >= PROGRESS_S:
                last_post = time.monotonic()
                self.post_message(self.PrepareProgress(Progress(progress.stage, progress.done, progress.total)))

        try:
            base = read_base(plan.base)
            texts = [story.full_text for story in store.list()[0]] if store is not None else []
            if cancel.is_set():
                return
            data = prepare_finetune_data(base, plan.data_dir, texts, plan.folder, progress=report)
            overrides = {"command": "helium (training monitor: fine-tune)", **self.config_overrides}
            config = finetune_config(base, data.data_dir, plan.run_dir, **(overrides | {"max_steps": plan.steps}))
        except TooLittleText as exc:
            self.post_message(self.PrepareFailed(str(exc), too_little=True))
        except (ValueError, OSError, BundleError) as exc:
            self.post_message(self.PrepareFailed(str(exc), too_little=False))
        except Exception as exc:  # noqa: BLE001 - odd files (a broken tokenizer) must not take the app down
            self.post_message(self.PrepareFailed(f"{type(exc).__name__}: {exc}", too_little=False))
        else:
            self.post_message(self.Prepared(plan, base.name, data, config))

    @on(PrepareProgress)
    def _prepare_progress(self, message: PrepareProgress) -> None:
        if self.preparing:
            self.show_progress(message.progress)

    def show_progress(self, progress: Progress) -> None:
        """While preparing: what is prepared for which model in the stats block, and the progress bar."""
        self.query_one("#stats", Static).update(preparing_text(*self.preparing_for, progress))
        self.query_one("#progress", ProgressBar).update(total=progress.total, progress=progress.done)

    @on(PrepareFailed)
    def _prepare_failed(self, message: PrepareFailed) -> None:
        self.preparing = False
        self._show_last_state()
        if message.too_little:
            self._notify(f"Not enough text to fine-tune on: {message.error}", severity="warning", timeout=10)
        else:
            self._notify(f"Could not prepare the fine-tune: {message.error}", severity="error", timeout=10)

    @on(Prepared)
    def _prepared(self, message: Prepared) -> None:
        """Start the prepared fine-tune's run and watch it."""
        self.preparing = False
        plan, data, config = message.plan, message.data, message.config
        if self._run_going():
            self._show_last_state()
            return
        try:
            handle = start_run(config.to_dict(), plan.run_dir, **self.runner_options)
        except (ValueError, OSError) as exc:
            self._show_last_state()
            self._notify(str(exc), severity="error")
            return
        stories = f"{data.train_stories} {'story' if data.train_stories == 1 else 'stories'}"
        self._watch_new(
            handle, f"Fine-tuning {message.base_name} on {stories} ({data.train_tokens:,} tokens, "
            f"{data.val_stories} held out): {config.max_steps} steps in {plan.run_dir}",
        )  # fmt: skip

    def _show_last_state(self) -> None:
        """Show the watched run again (or the empty monitor) after a fine-tune that did not start."""
        if self.state is not None:
            self.render_state(self.state)
        else:
            self.query_one("#stats", Static).update(Text("No run yet: start one above, or attach to a run directory."))
            self.query_one("#progress", ProgressBar).update(total=None, progress=0)

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
        """Ask for a model name (default: preset and data dir, e.g. tiny-ts4096; a fine-tune's
        `<base>-tuned-<date>`), then install the run's bundle."""
        state = self.state
        if state is None or state.status != "finished" or not state.bundle:
            self._notify("No finished run with a model to install.", severity="warning")
            return
        default = suggested_model_name(Path(state.run_dir), state.preset, self._bundle_path(state))
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
        if action in ("finetune_mode", "new_mode"):
            return self.finetuning == (action == "new_mode")  # one ctrl+f at a time: the other form
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
            SystemCommand("Start fine-tune", "Fine-tune the studio's model on the library's stories and/or a folder",
                          self.start_finetune),  # fmt: skip
            SystemCommand("Attach to run", "Watch the run in the run dir field", self.attach_from_form),
            SystemCommand("Resume run", "Continue the run dir's run from its newest checkpoint", self.resume_from_form),
            SystemCommand("Install model", "Install the finished run's model by name", self.ask_install),
        ]

    def on_unmount(self) -> None:
        self._prepare_cancel.set()  # a fine-tune still being prepared never starts

    def action_back(self) -> None:
        """Leave the monitor; the run keeps going in the background (a fine-tune being prepared is dropped)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.app.pop_screen()

    def _notify(self, message: str, **kwargs: Any) -> None:
        """A notification of plain text: paths and run output are never markup, and terminal-safe."""
        self.notify(terminal_safe(message), markup=False, **kwargs)
