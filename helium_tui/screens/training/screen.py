"""The training monitor: start, resume or attach to a background run, and watch its loss, speed and progress.

Runs go through `engine.runs.runner` (a separate process writing RUN_DIR/events.jsonl), so leaving this screen or
the app never stops a run; a finished run's bundle is installed under a name the user confirms. Its fine-tune
mode prepares the library's stories for the studio's model on a daemon thread, then starts the run the same way.
Its parts: the form rows (form_rows.py) and their values (form_values.py), the watched run (watch.py), what they
show (view.py) and a fine-tune's preparation (finetune.py). The studio's model, the library and the last run
watched come from the app's shared `AppState`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input

from engine.humanize import plural
from engine.model.config import PRESETS
from engine.runs.rundir import EVENTS_FILE
from engine.runs.runner import RunHandle, RunState, attach, start_run
from helium_tui.app_state import AppState, app_state
from helium_tui.library import StoryStore
from helium_tui.screens.training.finetune import (
    FinetuneFailed,
    FinetuneReady,
    base_model,
    library_count,
    prepare_finetune,
)
from helium_tui.screens.training.form_rows import RunForms
from helium_tui.screens.training.form_values import FinetunePlan, RunForm, is_finetune_run
from helium_tui.screens.training.view import HELP, Progress
from helium_tui.screens.training.watch import RunMonitor, notify_plain
from helium_tui.streaming import start_daemon
from trainer.config import TrainConfig, resume_config


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

    finetuning: reactive[bool] = reactive(False, bindings=True)  # the top rows show the fine-tune form
    preparing: reactive[bool] = reactive(False)  # a fine-tune's stories are being prepared

    @dataclass
    class Prepared(Message):
        """A fine-tune's data is ready (posted by the preparing thread): start its run."""

        ready: FinetuneReady

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
        self._prepare_cancel = threading.Event()  # set when the screen goes: a preparing thread starts nothing
        self.preparing_for: tuple[str, str] = ("", "")  # (base model, stories) of the fine-tune being prepared
        typed = {k: v for k, v in self.config_overrides.items() if k in ("batch_size", "lr")}
        self.forms = RunForms(TrainConfig().with_(**typed), id="run-form")  # the top rows
        self.monitor = RunMonitor(id="monitor")  # the watched run: its plot and stats

    def compose(self) -> ComposeResult:
        yield Header()
        yield self.forms
        yield self.monitor
        yield Footer()

    @property
    def shared(self) -> AppState:
        """What the app's screens share: the studio's model, the story library, the last run watched."""
        return app_state(self)

    @property
    def handle(self) -> RunHandle | None:
        """The run being watched."""
        return self.monitor.handle

    @property
    def state(self) -> RunState | None:
        """The watched run's last snapshot shown."""
        return self.monitor.state

    @property
    def stoppable(self) -> bool:
        """The watched run is going and not yet stopping."""
        return self.monitor.stoppable

    def on_mount(self) -> None:
        self.title = "Training monitor"
        self.watch(self.monitor, "stoppable", self.forms.show_stoppable)
        self.monitor.show_last()
        last = self.shared.last_run_dir
        if last is not None and last.joinpath(EVENTS_FILE).exists():
            self.forms.run_dir = str(last)
            self.finetuning = is_finetune_run(last)
            self.watch_run(attach(last))

    @property
    def form(self) -> RunForm:
        """The new-model form's fields as typed."""
        return self.forms.form

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
            notify_plain(self, str(exc), severity="error")
            return None
        self._watch_new(handle, f"Training started in {run_dir}")
        return handle

    def resume_from_form(self) -> RunHandle | None:
        """Resume the run in the run-dir field (else the out dir) from its newest checkpoint, with its saved
        config and the form's batch and lr when typed; None (and a notice) on bad input."""
        if self._run_going():
            return None
        target = self.forms.run_dir.strip() or self.form.out.strip()
        if not target:
            notify_plain(self, "type the run directory to resume", severity="warning")
            return None
        run_dir = Path(target).expanduser()
        try:
            typed = {} if self.finetuning else self.form.hyperparams()  # batch and lr are the new-model form's
            config = resume_config(run_dir, **typed)
            handle = start_run(config.to_dict(), run_dir, resume=True, **self.runner_options)
        except (ValueError, OSError) as exc:
            notify_plain(self, str(exc), severity="error")
            return None
        self._watch_new(handle, f"Training resumed in {run_dir}")
        return handle

    def attach_from_form(self) -> RunHandle | None:
        """Attach to the run in the run-dir field."""
        return self.attach_to(self.forms.run_dir)

    def attach_to(self, run_dir: str) -> RunHandle | None:
        """Watch the run in run_dir (going or ended); None (and a notice) when it is not a run directory."""
        if not run_dir.strip():
            notify_plain(self, "type a run directory to attach to", severity="warning")
            return None
        try:
            handle = attach(Path(run_dir.strip()).expanduser())
        except (ValueError, OSError) as exc:
            notify_plain(self, str(exc), severity="error")
            return None
        form = RunForm.of_run(handle.run_dir, tuple(PRESETS))
        if is_finetune_run(handle.run_dir):
            self.finetuning = True  # its settings are the fine-tune form's, not a preset's
        elif form is not None:
            self.forms.show_form(form)
        self.watch_run(handle)
        return handle

    def _run_going(self) -> bool:
        """True (and a notice) while the watched run is still going or a fine-tune is being prepared: one run at
        a time from this screen."""
        if self.preparing:
            notify_plain(self, "A fine-tune is being prepared: wait for it to start.", severity="warning")
            return True
        if self.handle is not None and self.handle.is_alive():
            notify_plain(self, "A run is already going: stop it first.", severity="warning")
            return True
        return False

    def _watch_new(self, handle: RunHandle, message: str) -> None:
        """Show a run this screen just launched: its directory in the run-dir field, a notice, the monitor."""
        self.forms.run_dir = str(handle.run_dir)
        notify_plain(self, message)
        self.watch_run(handle)

    def watch_run(self, handle: RunHandle) -> None:
        """Make handle the watched run (and the one the monitor re-attaches to next time)."""
        self.shared.last_run_dir = handle.run_dir
        self.monitor.follow(handle)

    # --- fine-tuning the studio's model -------------------------------------------------------------------

    def action_finetune_mode(self) -> None:
        """Show the fine-tune form: the studio's model, the library's stories and/or a folder, the steps."""
        self.finetuning = True

    def action_new_mode(self) -> None:
        """Show the form that trains a new model from scratch."""
        self.finetuning = False

    def watch_finetuning(self, finetuning: bool) -> None:
        self.forms.show_mode(finetuning)
        self.sub_title = "fine-tune" if finetuning else ""
        if finetuning:
            self.show_finetune_sources()

    def watch_preparing(self, preparing: bool) -> None:
        self.forms.show_preparing(preparing)

    def on_screen_resume(self) -> None:
        self.show_finetune_sources()  # the studio may have loaded another model meanwhile

    def show_finetune_sources(self) -> None:
        """Show the studio's model and how many stories the library holds."""
        shared = self.shared
        self.forms.show_sources(base_model(shared.session)[0], library_count(shared.store))

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
        base_name, base_dir = base_model(self.shared.session)
        try:
            plan = self.forms.finetune_form(base_dir).plan()
        except ValueError as exc:
            notify_plain(self, str(exc), severity="error")
            return None
        self.show_finetune_sources()
        sources = " + ".join(s for s in ("library" if plan.library else "", "folder" if plan.folder else "") if s)
        self.preparing_for = (base_name, sources)
        self.preparing = True
        self.show_progress(Progress())
        store = self.shared.store if plan.library else None
        cancel, overrides = self._prepare_cancel, self.config_overrides
        start_daemon("finetune-data", lambda: self._prepare(plan, store, overrides, cancel))
        return plan

    def _prepare(
        self, plan: FinetunePlan, store: StoryStore | None, overrides: dict[str, Any], cancel: threading.Event
    ) -> None:
        """On a daemon thread: prepare the fine-tune and post its progress and outcome. It touches no widget
        (the screen may be gone)."""
        report = lambda progress: self.post_message(self.PrepareProgress(progress))  # noqa: E731
        outcome = prepare_finetune(plan, store, overrides, cancel, report)
        if isinstance(outcome, FinetuneFailed):
            self.post_message(self.PrepareFailed(outcome.error, outcome.too_little))
        elif outcome is not None:
            self.post_message(self.Prepared(outcome))

    @on(PrepareProgress)
    def _prepare_progress(self, message: PrepareProgress) -> None:
        if self.preparing:
            self.show_progress(message.progress)

    def show_progress(self, progress: Progress) -> None:
        """While preparing: what is prepared for which model in the stats block, and the progress bar."""
        self.monitor.show_preparing(*self.preparing_for, progress)

    @on(PrepareFailed)
    def _prepare_failed(self, message: PrepareFailed) -> None:
        self.preparing = False
        self.monitor.show_last()
        if message.too_little:
            notify_plain(self, f"Not enough text to fine-tune on: {message.error}", severity="warning", timeout=10)
        else:
            notify_plain(self, f"Could not prepare the fine-tune: {message.error}", severity="error", timeout=10)

    @on(Prepared)
    def _prepared(self, message: Prepared) -> None:
        """Start the prepared fine-tune's run and watch it."""
        self.preparing = False
        ready = message.ready
        plan, data, config = ready.plan, ready.data, ready.config
        if self._run_going():
            self.monitor.show_last()
            return
        try:
            handle = start_run(config.to_dict(), plan.run_dir, **self.runner_options)
        except (ValueError, OSError) as exc:
            self.monitor.show_last()
            notify_plain(self, str(exc), severity="error")
            return
        stories = plural(data.train_stories, 'story', 'stories')
        self._watch_new(
            handle, f"Fine-tuning {ready.base_name} on {stories} ({data.train_tokens:,} tokens, "
            f"{data.val_stories} held out): {config.max_steps} steps in {plan.run_dir}",
        )  # fmt: skip

    # --- the watched run's model, stopping and leaving ---------------------------------------------------

    def ask_install(self) -> None:
        """Ask for the name to install the finished run's model under, then install it."""
        self.monitor.ask_install()

    def install_as(self, name: str | None) -> str | None:
        """Install the finished run's model as name; None when not installed."""
        return self.monitor.install_as(name)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop is dimmed in the footer unless a run is going."""
        if action == "stop_run":
            return True if self.stoppable else None
        if action in ("finetune_mode", "new_mode"):
            return self.finetuning == (action == "new_mode")  # one ctrl+f at a time: the other form
        return True

    def action_stop_run(self) -> None:
        """Ask the watched run to save a checkpoint and exit."""
        self.monitor.stop_run()

    def palette_commands(self) -> list[SystemCommand]:
        """The buttons by name in the command palette (ctrl+p); the keys are listed from BINDINGS."""
        return [
            SystemCommand("Start run", "Train a new model with the form's settings", self.start_from_form),
            SystemCommand("Start fine-tune", "Fine-tune the studio's model on the library's stories and/or a folder",
                          self.start_finetune),  # fmt: skip
            SystemCommand("Attach to run", "Watch the run in the run dir field", self.attach_from_form),
            SystemCommand("Resume run", "Continue the run dir's run from its newest checkpoint", self.resume_from_form),
            SystemCommand("Install model", "Install the finished run's model by name", self.ask_install),
            SystemCommand("Overlay runs", "Draw other runs' loss on the plot", self.monitor.pick_overlays),
        ]

    def on_unmount(self) -> None:
        self._prepare_cancel.set()  # a fine-tune still being prepared never starts

    def action_back(self) -> None:
        """Leave the monitor; the run keeps going in the background (a fine-tune being prepared is dropped)."""
        self.monitor.stop_polling()
        self.app.pop_screen()
