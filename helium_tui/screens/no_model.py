"""Shown when no model could be loaded: why, and how to get one.

Offers the model picker (when bundles exist elsewhere), retry and quit. The error is shown as plain text
(terminal-safe, never Markdown or markup: it may quote a path the user typed).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Markdown, Static

from helium_tui.safe_text import terminal_safe

GUIDE = """\
Helium needs a model bundle (a folder with `config.json`, `model.safetensors` and `tokenizer.json`).
Get one of these ways:

* **Use the shipped default** `helium-default`: it comes with Helium in `assets/`;
  reinstall Helium (`pip install -e .`) if it is missing.
* **Import a llama2.c model**, e.g. stories260K:
  `helium import llama2c stories260K.bin --tokenizer tok512.bin --out ~/models/stories260K`
* **Train your own** on TinyStories: `helium train --out runs/mine` (its bundle lands in `runs/mine/bundle`).

Then start the studio with `helium --model PATH_OR_NAME`, or press **ctrl+o** to pick an installed model.
"""


class NoModelScreen(Screen[None]):
    """Explains that no model is loaded and how to get one."""

    BINDINGS = [
        Binding("ctrl+o", "app.models", "Models", tooltip="Choose an installed model, or download one"),
        Binding("r", "app.retry_load", "Retry", tooltip="Load the model given at start-up again"),
        Binding("q", "app.quit", "Quit"),
    ]
    HELP = "# No model\n" + GUIDE

    def __init__(self, error: str) -> None:
        super().__init__(id="no-model")
        self.error = error  # why loading failed (one line)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="no-model-scroll"), Center():
            yield Static(
                Text.assemble(("No model to tell stories with\n\n", "bold"), terminal_safe(self.error)),
                id="no-model-error",
            )
            yield Markdown(GUIDE, id="no-model-guide")
        yield Footer(compact=True)
