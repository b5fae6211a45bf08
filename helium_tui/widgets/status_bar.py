"""The studio's status line: model, device/dtype, tokens, speed and time to first token.

A reactive-free Static updated through `set_*` calls from the screen.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static


@dataclass
class Stats:
    """What the status bar shows about the model and the last/current story."""

    model: str = "no model"  # loaded model name
    device: str = ""  # e.g. "cpu · float32"
    state: str = "loading"  # loading | ready | generating | stopped | error
    tokens: int = 0  # tokens generated in this story
    tokens_per_s: float | None = None  # decode speed (None: not measured yet)
    ttft_s: float | None = None  # time to first token (None: not measured yet)


STATE_STYLES = {"ready": "green", "generating": "bold yellow", "loading": "cyan", "stopped": "magenta", "error": "red"}


class StatusBar(Static):
    """One line of facts about the model and the story being told."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.stats = Stats()  # what is shown

    def set(self, **changes: object) -> None:
        """Update some fields of `stats` and redraw."""
        for key, value in changes.items():
            setattr(self.stats, key, value)
        self.update(self.render_stats())

    def render_stats(self) -> Text:
        s = self.stats
        speed = f"{s.tokens_per_s:.1f} tok/s" if s.tokens_per_s is not None else "– tok/s"
        ttft = f"TTFT {s.ttft_s * 1000:.0f} ms" if s.ttft_s is not None else "TTFT –"
        parts: list[tuple[str, str]] = [
            (f" {s.state} ", f"reverse {STATE_STYLES.get(s.state, '')}"),
            (f" {s.model}", "bold"),
            (f" · {s.device}" if s.device else "", "dim"),
            (f" │ {s.tokens} tokens │ {speed} │ {ttft}", ""),
        ]
        return Text.assemble(*parts, no_wrap=True, overflow="ellipsis")

    def on_mount(self) -> None:
        self.update(self.render_stats())
