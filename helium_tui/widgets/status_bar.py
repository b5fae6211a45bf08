"""The studio's status line: state, model, device/dtype, tokens, speed and time to first token.

`Stats` is frozen; `StatusBar.show(**changes)` replaces fields, so a misspelt field or an unknown state is an
error, not a silent no-op. The numbers are laid out first and never cut: a narrow terminal shortens the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from rich.cells import cell_len
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from engine.humanize import plural
from helium_tui.names import cut
from helium_tui.safe_text import terminal_safe

State = Literal["loading", "ready", "generating", "stopped", "error"]
STATE_STYLES: dict[str, str] = {
    "ready": "green",
    "generating": "bold yellow",
    "loading": "cyan",
    "stopped": "magenta",
    "error": "red",
}


@dataclass(frozen=True)
class Stats:
    """What the status bar shows about the model and the last/current story."""

    model: str = "no model"  # loaded model name
    device: str = ""  # e.g. "cpu · float32"
    state: State = "loading"  # what the studio is doing
    tokens: int = 0  # tokens generated in this story
    tokens_per_s: float | None = None  # decode speed (None: not measured yet)
    ttft_s: float | None = None  # time to first token (None: not measured yet)

    def __post_init__(self) -> None:
        if self.state not in STATE_STYLES:
            raise ValueError(f"unknown state {self.state!r}; one of {', '.join(STATE_STYLES)}")

    @property
    def numbers(self) -> str:
        """Tokens, speed and TTFT: the part that is never cut."""
        speed = f"{self.tokens_per_s:.1f} tok/s" if self.tokens_per_s is not None else "– tok/s"
        ttft = f"TTFT {self.ttft_s * 1000:.0f} ms" if self.ttft_s is not None else "TTFT –"
        return f"│ {plural(self.tokens, 'token')} │ {speed} │ {ttft} "


class StatusBar(Widget):
    """One line of facts about the model and the story being told."""

    stats: reactive[Stats] = reactive(Stats, layout=False)
    """What is shown (replace it through `show`)."""

    def show(self, **changes: object) -> Stats:
        """Replace some fields of `stats` (TypeError for a field that does not exist) and redraw."""
        self.stats = replace(self.stats, **changes)  # type: ignore[arg-type]
        return self.stats

    def render(self) -> Text:
        s = self.stats
        state = Text(f" {s.state} ", style=f"reverse {STATE_STYLES[s.state]}")
        numbers = s.numbers
        room = max(
            self.size.width - state.cell_len - cell_len(numbers) - 1, 0
        )  # 1: a space before the numbers
        device = terminal_safe(f" · {s.device}") if s.device else ""
        name = terminal_safe(s.model)
        device = device if 1 + cell_len(name) + cell_len(device) <= room else ""  # the model's whole name first
        head = Text(" " + cut(name, max(room - 1 - cell_len(device), 0)), style="bold")
        head.append(device, style="dim")
        head.truncate(room, overflow="ellipsis", pad=True)
        return Text.assemble(state, head, " ", numbers, no_wrap=True, overflow="ellipsis")
