"""Other runs to overlay on the watched run's loss plot: where they are found, their curves, and the picker.

Run names are user text: terminal-safe, never markup. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, SelectionList

from engine.paths import user_runs_dir
from engine.runs.summary import list_runs, series
from helium_tui.names import run_labels
from helium_tui.safe_text import terminal_safe

Overlay = tuple[str, list[float], list[float]]  # (run name, steps, training losses)
MAX_OVERLAYS = 4  # more curves than this make the braille plot unreadable


def candidate_runs(watched: str | None) -> list[Path]:
    """Run dirs to offer: those beside the watched run and in the user runs dir, newest first, not the watched."""
    folders = [user_runs_dir()]
    if watched:
        folders.insert(0, Path(watched).resolve().parent)
    seen: dict[Path, None] = {}
    for folder in folders:
        try:
            runs = list_runs(folder)
        except (OSError, ValueError):
            continue
        for run in reversed(runs):
            seen.setdefault(run.path.resolve(), None)
    skip = Path(watched).resolve() if watched else None
    return [p for p in seen if p != skip]


def load_overlays(paths: list[Path]) -> list[Overlay]:
    """The training-loss curve of each run (runs with none are left out), labelled apart (`run_labels`)."""
    curves = []
    for path, label in zip(paths[:MAX_OVERLAYS], run_labels(paths[:MAX_OVERLAYS]), strict=True):
        try:
            xs, ys = series(path, "loss")
        except (OSError, ValueError):
            continue
        if xs:
            curves.append((label, xs, ys))
    return curves


class OverlayPicker(ModalScreen["list[Path] | None"]):
    """Tick runs (space) and confirm (enter: o) to overlay their loss curves; escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("o", "confirm", "Overlay")]
    DEFAULT_CSS = """
    OverlayPicker { align: center middle; }
    OverlayPicker > Vertical { width: 70; height: auto; max-height: 24; border: round $accent; padding: 0 1; }
    OverlayPicker SelectionList { height: auto; max-height: 16; }
    """

    def __init__(self, runs: list[Path], chosen: list[Path]) -> None:
        super().__init__()
        self.runs = runs  # what can be picked
        self.chosen = set(chosen)  # ticked when the picker opens

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text(f"Overlay other runs' loss (up to {MAX_OVERLAYS}):"))
            yield SelectionList[int](
                *((Text(terminal_safe(str(p))), i, p in self.chosen) for i, p in enumerate(self.runs))
            )
            yield Label(Text("space: tick · o: overlay · escape: cancel", style="dim"))

    @on(SelectionList.SelectedChanged)
    def _limit(self, event: SelectionList.SelectedChanged) -> None:
        """Keep at most MAX_OVERLAYS ticked (the newest tick wins)."""
        ticked = event.selection_list.selected
        if len(ticked) > MAX_OVERLAYS:
            event.selection_list.deselect(ticked[0])

    def action_confirm(self) -> None:
        """Close with the ticked runs."""
        self.dismiss([self.runs[i] for i in self.query_one(SelectionList).selected])

    def action_cancel(self) -> None:
        """Close without changing the overlays."""
        self.dismiss(None)
