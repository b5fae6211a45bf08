"""The training monitor's lower half as a widget that watches one run: it polls the run's events, shows its
loss, stats, progress, tokens/s and error, says once how the run ended, offers to install a finished run's
model and asks a going run to stop. While a fine-tune's stories are prepared it shows how far that is instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Label, ProgressBar, Sparkline, Static
from textual_plotext import PlotextPlot

from engine.bundles.install import install_run_bundle, run_bundle_path
from engine.runs.runner import RunEvent, RunHandle, RunState
from helium_tui.safe_text import terminal_safe
from helium_tui.screens.dialogs import AskDialog
from helium_tui.screens.training.form_values import check_name, installed_as, suggested_model_name
from helium_tui.screens.training.overlay import Overlay, OverlayPicker, candidate_runs, load_overlays
from helium_tui.screens.training.view import Progress, draw_loss, error_text, preparing_text, stats_text

POLL_S = 0.5  # how often the watched run's new events are read
SPARK_POINTS = 120  # tokens/s values kept for the sparkline
NO_RUN = "No run yet: start one above, or attach to a run directory."  # the stats block before any run


def notify_plain(node: Widget, message: str, **kwargs: Any) -> None:
    """A notification of plain text: paths and run output are never markup, and terminal-safe."""
    node.notify(terminal_safe(message), markup=False, **kwargs)


class RunMonitor(Horizontal):
    """The watched run's loss plot beside its stats block, progress bar, sparklines (tokens/s, gradient norm,
    update ratio) and error tail."""

    DEFAULT_CSS = """
    RunMonitor .dynamics { height: 2; margin-bottom: 1; }
    """

    stoppable: reactive[bool] = reactive(False, bindings=True)  # the run is going and not yet stopping

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.handle: RunHandle | None = None  # the run being watched
        self.state: RunState | None = None  # the last snapshot rendered
        self.throughput: list[float] = []  # recent tokens/s values
        self.installed: str | None = None  # the name the watched run's model is installed under
        self._timer: Timer | None = None  # the polling timer while a run is watched
        self._rendered: tuple[int, str] = (-1, "")  # (events seen, status) of the last render
        self._reported: str = ""  # the final status already handled for the current run
        self.overlays: list[Overlay] = []  # other runs' loss curves drawn with the watched run's
        self.overlaid: list[Path] = []  # the run dirs of `overlays`

    def compose(self) -> ComposeResult:
        yield PlotextPlot(id="loss-plot")
        with Vertical(id="side"):
            yield Static(Text(NO_RUN), id="stats")
            yield ProgressBar(total=None, show_eta=False, id="progress")
            yield Label("tokens/s", id="throughput-label")
            yield Sparkline([], summary_function=max, id="throughput")
            yield Label("gradient norm (before clipping)", id="gradnorm-label")
            yield Sparkline([], summary_function=max, id="gradnorm", classes="dynamics")
            yield Label("update/weight ratio (largest layer group)", id="ratio-label")
            yield Sparkline([], summary_function=max, id="ratio", classes="dynamics")
            yield Static("", id="error")

    # --- watching -----------------------------------------------------------------------------------------

    def follow(self, handle: RunHandle) -> None:
        """Make handle the watched run, reset the monitor and start polling it."""
        self.handle = handle
        self.state, self.throughput, self.installed = None, [], None
        self._rendered, self._reported = (-1, ""), ""
        self.query_one("#error", Static).update("")
        self.stop_polling()
        self._timer = self.set_interval(POLL_S, self.refresh_run)
        self.refresh_run()

    def stop_polling(self) -> None:
        """Read no more events (the monitor is left; the run goes on)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

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
        if state.is_final and not alive:
            self.stop_polling()

    def _collect_throughput(self, events: list[RunEvent]) -> None:
        """Keep the tokens/s of new step events for the sparkline."""
        for ev in events:
            if ev.event == "step" and isinstance(ev.get("tokens_per_s"), (int, float)):
                self.throughput.append(float(ev.get("tokens_per_s")))
        del self.throughput[:-SPARK_POINTS]

    def _on_final(self, state: RunState) -> None:
        """Say once how the run ended; for a finished run, ask for the name to install its model under."""
        if not state.is_final or self._reported == state.status:
            return
        self._reported = state.status
        if state.status == "failed":
            error = state.error or "see train.log"
            notify_plain(self, f"Training failed: {error}", severity="error", timeout=10)
        elif state.status == "finished" and state.bundle:
            self.installed = installed_as(run_bundle_path(state.run_dir, state.bundle))
            if self.installed:
                self.query_one("#stats", Static).update(stats_text(state, self.installed))
            else:
                self.ask_install()
        elif state.status == "stopped":
            notify_plain(self, f"Training stopped at step {state.step} (checkpoint saved)")

    # --- showing ------------------------------------------------------------------------------------------

    def render_state(self, state: RunState) -> None:
        """Show a snapshot: stats, progress, curves, throughput and any error."""
        self.query_one("#stats", Static).update(stats_text(state, self.installed))
        self.query_one("#progress", ProgressBar).update(total=state.max_steps, progress=state.step)
        self.query_one("#throughput", Sparkline).data = list(self.throughput) or [0.0]
        self.query_one("#gradnorm", Sparkline).data = state.grad_norms[-SPARK_POINTS:] or [0.0]
        self.query_one("#ratio", Sparkline).data = state.max_ratios[-SPARK_POINTS:] or [0.0]
        draw_loss(self.query_one("#loss-plot", PlotextPlot), state, self.overlays)
        self.query_one("#error", Static).update(error_text(state))

    def show_last(self) -> None:
        """Show the watched run again, or the empty monitor: an empty plot, the hint, an idle progress bar."""
        if self.state is not None:
            self.render_state(self.state)
            return
        draw_loss(self.query_one("#loss-plot", PlotextPlot), None)
        self.query_one("#stats", Static).update(Text(NO_RUN))
        self.query_one("#progress", ProgressBar).update(total=None, progress=0)

    def show_preparing(self, base: str, sources: str, progress: Progress) -> None:
        """While a fine-tune is prepared: for which model, from which stories, how far; the progress bar."""
        self.query_one("#stats", Static).update(preparing_text(base, sources, progress))
        self.query_one("#progress", ProgressBar).update(total=progress.total, progress=progress.done)

    # --- other runs on the plot ----------------------------------------------------------------------------

    def pick_overlays(self) -> None:
        """Offer the runs beside the watched one and in the runs dir; overlay the ticked ones' loss curves."""
        runs = candidate_runs(self.state.run_dir if self.state else None)
        if not runs:
            notify_plain(self, "No other runs to overlay (none beside this run or in the runs dir).", severity="warning")
            return
        self.app.push_screen(OverlayPicker(runs, self.overlaid), self.set_overlays)

    def set_overlays(self, paths: list[Path] | None) -> None:
        """Overlay these runs' loss curves (read once, now); None leaves the overlays as they are."""
        if paths is None:
            return
        self.overlaid, self.overlays = list(paths), load_overlays(list(paths))
        if self.state is not None:
            draw_loss(self.query_one("#loss-plot", PlotextPlot), self.state, self.overlays)

    # --- installing the model and stopping the run --------------------------------------------------------

    def ask_install(self) -> None:
        """Ask for a model name (default: preset and data dir, e.g. tiny-ts4096; a fine-tune's
        `<base>-tuned-<date>`), then install the run's bundle."""
        state = self.state
        if state is None or state.status != "finished" or not state.bundle:
            notify_plain(self, "No finished run with a model to install.", severity="warning")
            return
        bundle = run_bundle_path(state.run_dir, state.bundle)
        default = suggested_model_name(Path(state.run_dir), state.preset, bundle)
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
            notify_plain(self, f"Could not install the run's model: {exc}", severity="error")
            return None
        self.query_one("#stats", Static).update(stats_text(state, self.installed))
        notify_plain(self, f"Model {self.installed!r} is in the model picker (ctrl+o)")
        return self.installed

    def stop_run(self) -> None:
        """Ask the watched run to stop gracefully (in a thread: stopping waits for the checkpoint)."""
        if self.handle is None or not self.handle.is_alive():
            notify_plain(self, "No running training to stop.", severity="warning")
            return
        self.stoppable = False
        notify_plain(self, "Stopping: the run saves a checkpoint first…")
        self._stop_worker(self.handle)

    @work(thread=True, exclusive=True, group="training-stop")
    def _stop_worker(self, handle: RunHandle) -> None:
        """Stop handle's run (blocking). It touches no widget: the polling timer shows the outcome, and a
        UI call from here could land while the app is closing (a flaky crash on exit)."""
        handle.stop(timeout=60)
