"""The model picker: installed bundles (and the loaded one), then catalog models to download from the Hub.

Dismisses with the chosen bundle's path; the app loads it in a background worker. A catalog model is pulled by an
app-level thread worker, so the download goes on when the picker closes; the picker shows its progress when open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from weakref import WeakKeyDictionary

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, ProgressBar
from textual.widgets.option_list import Option
from textual.worker import Worker, get_current_worker

from engine.bundles.registry import ModelInfo, list_models
from engine.errors import first_line
from engine.hub import catalog
from engine.hub.catalog import CatalogModel, human_bytes, is_installed
from helium_tui.names import cut, cut_apart
from helium_tui.safe_text import terminal_safe


def human_count(n: int) -> str:
    """1234567 → '1.2M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


NAME_WIDTH = 22  # the picker's name column; longer names are cut with '…' (helium_tui.names)


def model_row(info: ModelInfo, current: bool, shown: str | None = None) -> Text:
    """One picker line: marker, name (shown: as cut apart from the others), parameters, vocabulary, source."""
    name = shown if shown is not None else cut(terminal_safe(info.name), NAME_WIDTH)
    return Text.assemble(
        ("● " if current else "  ", "green"),
        (f"{name:<{NAME_WIDTH}}", "bold" if current else ""),
        (f"{human_count(info.parameters) if info.parameters else '?':>7} params", ""),
        (f"  vocab {info.vocab_size:>6}", "dim"),
        (f"  {terminal_safe(str(info.source))}", "italic dim"),
    )


def catalog_row(entry: CatalogModel, pulling: bool) -> Text:
    """One line for a model that is not installed yet: its size, or that it is downloading."""
    return Text.assemble(
        ("  ", ""),
        (f"{cut(entry.name, NAME_WIDTH):<{NAME_WIDTH}}", ""),
        (f"{human_count(entry.params):>7} params", ""),
        (f"  vocab {entry.vocab_size:>6}", "dim"),
        ("  downloading…" if pulling else f"  ↓ {human_bytes(entry.download_bytes)}", "italic cyan"),
    )


@dataclass
class PullJob:
    """A catalog model being pulled for an app: what the picker shows while the worker runs."""

    entry: CatalogModel
    stage: str = "download"  # download, convert or install (engine.hub.pull.PullProgress.stage)
    done: int = 0  # bytes downloaded
    total: int = 0  # bytes to download
    worker: Worker | None = None  # the app's thread worker doing it


PULLS: WeakKeyDictionary[App, PullJob] = WeakKeyDictionary()  # the pull in flight per app (one at a time)


def start_pull(app: App, entry: CatalogModel) -> PullJob:
    """Pull entry in an app-level thread worker (it outlives the picker); progress reaches the UI thread."""
    from engine.hub.pull import PullCancelled, pull

    job = PULLS[app] = PullJob(entry, total=entry.download_bytes)

    def run() -> None:
        worker = get_current_worker()
        try:
            result = pull(
                entry,
                progress=lambda p: app.call_from_thread(_pull_progress, app, job, p.stage, p.done, p.total),
                cancelled=lambda: worker.is_cancelled,
            )
        except PullCancelled:
            return
        except Exception as exc:  # noqa: BLE001 - any failure becomes a notification, never a crash
            if not worker.is_cancelled:
                app.call_from_thread(_pull_finished, app, job, None, first_line(exc, 10_000))
        else:
            if not worker.is_cancelled:
                app.call_from_thread(_pull_finished, app, job, result.path, None)

    job.worker = app.run_worker(
        run, name=f"pull {entry.name}", group="pull", thread=True, exit_on_error=False
    )
    return job



def _pull_progress(app: App, job: PullJob, stage: str, done: int, total: int) -> None:
    """On the UI thread: record the job's progress and show it in the picker if one is open."""
    job.stage, job.done, job.total = stage, done, total
    if PULLS.get(app) is job and isinstance(app.screen, ModelPicker):  # not a stopped job's last report
        app.screen.show_pull(job)


def _pull_finished(app: App, job: PullJob, path: Path | None, error: str | None) -> None:
    """On the UI thread: the pull ended; load the model if the picker is open, else say where it is."""
    if PULLS.get(app) is job:
        del PULLS[app]
    picker = app.screen if isinstance(app.screen, ModelPicker) else None
    name = job.entry.name
    if error is not None:
        app.notify(error, title=f"Could not download {name}", severity="error", timeout=10, markup=False)
        if picker is not None:
            picker.refresh_rows()
    elif picker is not None:
        picker.dismiss(str(path))
    else:
        app.notify(f"{name} is downloaded and installed: ctrl+o to load it", timeout=8)


WEIGHTS = ("none", "int8", "int4")  # the picker's `i` goes round them
WEIGHT_NAMES = {"none": "full precision", "int8": "int8 (weight-only, faster on CPUs)",
                "int4": "int4 (Q4_0 blocks: smallest, fastest on CPUs)"}  # fmt: skip


class ModelPicker(ModalScreen[str | None]):
    """Choose a model bundle or a catalog model to download; dismisses with a bundle path (None: cancelled)."""

    BINDINGS = [
        Binding("escape", "cancel", "Close"),
        Binding("x", "stop_pull", "Stop the download"),
        Binding("i", "next_weights", "Weights: full precision, int8, int4"),
    ]

    def __init__(self, current: Path | None, current_info: ModelInfo | None = None, weights: str = "none") -> None:
        super().__init__(id="model-picker")
        self.weights = weights  # "none", "int8" or "int4": how the model chosen next loads; the app reads it after
        self.current = current.resolve() if current else None  # path of the loaded bundle
        self.current_info = current_info  # describes it when it is not installed by name
        self.models: list[ModelInfo] = []  # the installed rows, in order
        self.catalog: list[CatalogModel] = []  # then the catalog models not installed yet

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Label(
                "Choose a model  [dim](enter to load or download, esc to close)[/]", id="picker-title"
            )
            yield Label(self._weights_text(), id="picker-weights")
            yield OptionList(id="picker-list")
            yield Label("", id="picker-empty")
            with Vertical(id="picker-pull"):
                yield Label("", id="picker-pull-label")
                yield ProgressBar(id="picker-progress", show_eta=True)

    def on_mount(self) -> None:
        self.refresh_rows()
        options = self.query_one(OptionList)
        if options.option_count:  # the loaded model, else the first row
            current = (i for i, m in enumerate(self.models) if m.path.resolve() == self.current)
            options.highlighted = next(current, 0)
        options.focus()

    @property
    def job(self) -> PullJob | None:
        """The app's pull in flight, if any."""
        return PULLS.get(self.app)

    def refresh_rows(self) -> None:
        """List installed bundles, then catalog models not installed yet; show a pull in flight."""
        self.models = list_models()
        paths = {m.path.resolve() for m in self.models}
        if self.current_info is not None and self.current not in paths:
            self.models.insert(0, self.current_info)
        installed = {m.name for m in self.models}
        self.catalog = [
            e for e in catalog.CATALOG.values() if e.name not in installed and not is_installed(e)
        ]
        options = self.query_one(OptionList)
        highlighted = options.highlighted
        options.clear_options()
        shown = cut_apart((terminal_safe(m.name) for m in self.models), NAME_WIDTH)
        for i, info in enumerate(self.models):
            row = model_row(info, info.path.resolve() == self.current, shown[terminal_safe(info.name)])
            options.add_option(Option(row, id=f"model-{i}"))
        if self.models and self.catalog:
            options.add_option(None)
        job = self.job
        for entry in self.catalog:
            pulling = job is not None and job.entry.name == entry.name
            options.add_option(Option(catalog_row(entry, pulling), id=f"pull-{entry.name}"))
        if highlighted is not None and options.option_count:
            options.highlighted = min(highlighted, options.option_count - 1)
        empty = self.query_one("#picker-empty", Label)
        empty.display = not self.models and not self.catalog
        empty.update("No model bundles installed. See `helium import --help` and `helium train --help`.")
        self.show_pull(job)

    def show_pull(self, job: PullJob | None) -> None:
        """The progress area: the pull's stage and bytes, hidden when nothing is being pulled."""
        area = self.query_one("#picker-pull")
        area.display = job is not None
        if job is None:
            return
        name = job.entry.name
        if job.stage == "download":
            text = f"Downloading {name}: {human_bytes(job.done)} of {human_bytes(job.total)}  [dim](x stops it)[/]"
        else:
            text = f"{'Converting' if job.stage == 'convert' else 'Installing'} {name}…"
        self.query_one("#picker-pull-label", Label).update(text)
        self.query_one(ProgressBar).update(total=max(job.total, 1), progress=job.done)

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        kind, _, key = (event.option.id or "").partition("-")
        if kind == "model":
            self.dismiss(str(self.models[int(key)].path))
            return
        job = self.job
        if job is not None:
            if job.entry.name != key:
                self.notify(f"Already downloading {job.entry.name}; one at a time (x stops it)", timeout=4)
            return
        start_pull(self.app, catalog.CATALOG[key])
        self.refresh_rows()

    def action_stop_pull(self) -> None:
        """Stop the download in flight (partial files are removed; pulling again starts over)."""
        job = self.job
        if job is None:
            return
        if job.worker is not None:
            job.worker.cancel()
        del PULLS[self.app]
        self.notify(f"Stopped downloading {job.entry.name}", timeout=3)
        self.refresh_rows()

    def _weights_text(self) -> str:
        after = WEIGHTS[(WEIGHTS.index(self.weights) + 1) % len(WEIGHTS)]
        return f"Weights: [b]{WEIGHT_NAMES[self.weights]}[/]  [dim](i: {WEIGHT_NAMES[after]})[/]"

    def action_next_weights(self) -> None:
        """Cycle the weights of the model chosen next: full precision, int8, int4 (enter on the loaded one reloads it)."""
        self.weights = WEIGHTS[(WEIGHTS.index(self.weights) + 1) % len(WEIGHTS)]
        self.query_one("#picker-weights", Label).update(self._weights_text())

    def action_cancel(self) -> None:
        """Close without switching (a download goes on in the background)."""
        job = self.job
        if job is not None:
            self.notify(
                f"Downloading {job.entry.name} in the background; ctrl+o shows its progress", timeout=4
            )
        self.dismiss(None)
