"""The model picker: installed bundles (and the loaded one) with parameter count and vocabulary.

Dismisses with the chosen bundle's path; the app loads it in a background worker.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from engine.registry import ModelInfo, list_models


def human_count(n: int) -> str:
    """1234567 → '1.2M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def model_row(info: ModelInfo, current: bool) -> Text:
    """One picker line: marker, name, parameters, vocabulary, where it comes from."""
    return Text.assemble(
        ("● " if current else "  ", "green"),
        (f"{info.name:<22.22}", "bold" if current else ""),
        (f"{human_count(info.parameters) if info.parameters else '?':>7} params", ""),
        (f"  vocab {info.vocab_size:>6}", "dim"),
        (f"  {info.source}", "italic dim"),
    )


class ModelPicker(ModalScreen[str | None]):
    """Choose a model bundle; dismisses with its path (None: cancelled)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: Path | None, current_info: ModelInfo | None = None) -> None:
        super().__init__(id="model-picker")
        self.current = current.resolve() if current else None  # path of the loaded bundle
        self.current_info = current_info  # describes it when it is not installed by name
        self.models: list[ModelInfo] = []  # the rows, in order

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Label("Choose a model  [dim](enter to load, esc to cancel)[/]", id="picker-title")
            yield OptionList(id="picker-list")
            yield Label("", id="picker-empty")

    def on_mount(self) -> None:
        self.models = list_models()
        paths = {m.path.resolve() for m in self.models}
        if self.current_info is not None and self.current not in paths:
            self.models.insert(0, self.current_info)
        options = self.query_one(OptionList)
        for i, info in enumerate(self.models):
            options.add_option(Option(model_row(info, info.path.resolve() == self.current), id=str(i)))
        empty = self.query_one("#picker-empty", Label)
        empty.display = not self.models
        empty.update("No model bundles installed. See `helium import --help` and `helium train --help`.")
        if self.models:
            highlighted = next((i for i, m in enumerate(self.models) if m.path.resolve() == self.current), 0)
            options.highlighted = highlighted
        options.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(str(self.models[int(event.option.id or 0)].path))

    def action_cancel(self) -> None:
        """Close without switching."""
        self.dismiss(None)
