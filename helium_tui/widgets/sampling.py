"""The studio's sampling panel: a slider per SamplingParams field and the seed row, read and set as a whole.

`SamplingPanel.params()` builds the SamplingParams of the next story; `apply(saved, seed)` moves the sliders to
a saved story's settings, clamping what they cannot show and skipping what is not a number.
"""

from __future__ import annotations

import random

from textual.app import ComposeResult
from textual.containers import VerticalScroll

from engine.checks import SEED_RANGE, is_seed
from engine.generation.sampling import SamplingParams
from helium_tui.widgets.sliders import ParamSlider, ParamSpec, SeedRow

DEFAULTS = SamplingParams()  # the sliders start at the engine's defaults
PARAMS: list[ParamSpec] = [
    ParamSpec("temperature", "Temperature", 0.0, 2.0, 0.05, DEFAULTS.temperature),
    ParamSpec("top_k", "Top-k", 0, 200, 1, DEFAULTS.top_k, decimals=0, zero_label="off"),
    ParamSpec("top_p", "Top-p", 0.05, 1.0, 0.05, DEFAULTS.top_p),
    ParamSpec("repetition_penalty", "Repetition pen.", 1.0, 2.0, 0.05, DEFAULTS.repetition_penalty),
    ParamSpec("max_tokens", "Max tokens", 16, 2048, 16, DEFAULTS.max_new_tokens, decimals=0),
]
SAVED_NAMES = {"max_tokens": "max_new_tokens"}  # slider key -> SamplingParams field, where they differ


def draw_seed() -> int:
    """A fresh seed for a story told without a fixed one (recorded with it, so it can be retold)."""
    return random.randrange(2**31)


class SamplingPanel(VerticalScroll, can_focus=False):
    """The sliders of PARAMS and the seed row."""

    def compose(self) -> ComposeResult:
        for spec in PARAMS:
            yield ParamSlider(spec)
        yield SeedRow(id="seed-row")

    def on_mount(self) -> None:
        self.border_title = "Sampling"

    def slider(self, key: str) -> ParamSlider:
        """The slider for a parameter (a key of PARAMS)."""
        return self.query_one(f"#param-{key}", ParamSlider)

    def params(self) -> SamplingParams:
        """SamplingParams from the sliders; a random seed is drawn (and recorded) when none is fixed."""
        seed = self.query_one(SeedRow).fixed
        return SamplingParams(
            max_new_tokens=int(self.slider("max_tokens").value),
            temperature=self.slider("temperature").value,
            top_k=int(self.slider("top_k").value),
            top_p=self.slider("top_p").value,
            repetition_penalty=self.slider("repetition_penalty").value,
            seed=seed if seed is not None else draw_seed(),
        )

    def apply(self, saved: dict, seed: object) -> list[str]:
        """Move the sliders to saved parameters (keys of SamplingParams) and fix seed (None: switch off).

        Values the sliders cannot show are clamped to their range, or skipped when they are not numbers;
        returns one note per such value, for the caller to tell the user.
        """
        notes: list[str] = []
        for spec in PARAMS:
            name = SAVED_NAMES.get(spec.key, spec.key)
            if name not in saved:
                continue
            value, slider = saved[name], self.slider(spec.key)
            try:
                exact = slider.set_value(value)
            except ValueError:
                notes.append(f"{name} ignored (not a number)")
                continue
            if not exact:
                given = (
                    f"{value:.6g}"
                    if isinstance(value, float)
                    else str(value)
                    if abs(value) < 10**9
                    else "huge"
                )
                notes.append(f"{name} {given} → {slider.value:g}")
        if seed is not None and not is_seed(seed):
            notes.append(f"seed ignored (not {SEED_RANGE})")
            seed = None
        self.query_one(SeedRow).set_seed(seed)  # type: ignore[arg-type]
        return notes
