"""The studio's sampling panel: a slider per SamplingParams field, the prompt switch and the seed row.

`SamplingPanel.params()` builds the SamplingParams of the next story; `apply(saved, seed)` moves the sliders to
a saved story's settings, clamping what they cannot show and skipping what is not a number; `use_model`
starts them from a model's recommended settings, and the "Model defaults" button goes back to those.
"""

from __future__ import annotations

import random
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Button, Label, Switch

from engine.checks import SEED_RANGE, is_seed
from engine.generation.sampling import SamplingParams
from helium_tui.widgets.sliders import ParamSlider, ParamSpec, SeedRow

DEFAULTS = SamplingParams()  # the sliders start at the engine's defaults (then a model's, `use_model`)
PARAMS: list[ParamSpec] = [
    ParamSpec("temperature", "Temperature", 0.0, 2.0, 0.05, DEFAULTS.temperature),
    ParamSpec("top_k", "Top-k", 0, 200, 1, DEFAULTS.top_k, decimals=0, zero_label="off"),
    ParamSpec("top_p", "Top-p", 0.05, 1.0, 0.05, DEFAULTS.top_p),
    ParamSpec("repetition_penalty", "Repetition pen.", 1.0, 2.0, 0.05, DEFAULTS.repetition_penalty),
    ParamSpec("frequency_penalty", "Frequency pen.", 0.0, 2.0, 0.05, DEFAULTS.frequency_penalty, zero_label="off"),
    ParamSpec("presence_penalty", "Presence pen.", 0.0, 2.0, 0.05, DEFAULTS.presence_penalty, zero_label="off"),
    # the penalties' window in tokens; the slider's 0 is the whole context (repeat_last_n -1)
    ParamSpec("repeat_last_n", "Penalty window", 0, 512, 16, 0, decimals=0, zero_label="all"),
    # names never penalized and the seen ones raised by this (engine.generation.names)
    ParamSpec("name_bonus", "Name bonus", 0.0, 4.0, 0.25, DEFAULTS.name_bonus, zero_label="off"),
    ParamSpec("max_tokens", "Max tokens", 16, 2048, 16, DEFAULTS.max_new_tokens, decimals=0),
]
SAVED_NAMES = {"max_tokens": "max_new_tokens"}  # slider key -> SamplingParams field, where they differ
# the settings of a story saved before they existed: what it was made with
MADE_WITH = {"frequency_penalty": 0.0, "presence_penalty": 0.0, "repeat_last_n": -1, "penalize_prompt": True,
             "name_bonus": 0.0}  # fmt: skip
WHOLE_CONTEXT = -1  # repeat_last_n for the whole context: the window slider's 0 ("all")


def draw_seed() -> int:
    """A fresh seed for a story told without a fixed one (recorded with it, so it can be retold)."""
    return random.randrange(2**31)


class SamplingPanel(VerticalScroll, can_focus=False):
    """The sliders of PARAMS and the seed row."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model_settings: dict[str, Any] = {}  # the loaded model's recommended settings (`use_model`)

    def compose(self) -> ComposeResult:
        for spec in PARAMS:
            yield ParamSlider(spec)
        with Horizontal(id="prompt-row"):
            yield Label("Penalize prompt", classes="param-label")
            yield Switch(DEFAULTS.penalize_prompt, id="penalize-prompt",
                         tooltip="Off: the prompt's own words are not counted, so its character's name can come back")  # fmt: skip
        yield SeedRow(id="seed-row")
        yield Button("Model defaults", compact=True, id="model-defaults",
                     tooltip="Every slider back to the loaded model's recommended settings")  # fmt: skip

    def on_mount(self) -> None:
        self.border_title = "Sampling"

    def slider(self, key: str) -> ParamSlider:
        """The slider for a parameter (a key of PARAMS)."""
        return self.query_one(f"#param-{key}", ParamSlider)

    def params(self) -> SamplingParams:
        """SamplingParams from the sliders; a random seed is drawn (and recorded) when none is fixed."""
        seed = self.query_one(SeedRow).fixed
        return SamplingParams(
            **self.shown(),
            seed=seed if seed is not None else draw_seed(),
        )

    def shown(self) -> dict[str, Any]:
        """The settings the panel shows, by SamplingParams field (no seed)."""
        window = int(self.slider("repeat_last_n").value)
        return {
            "max_new_tokens": int(self.slider("max_tokens").value),
            "temperature": self.slider("temperature").value,
            "top_k": int(self.slider("top_k").value),
            "top_p": self.slider("top_p").value,
            "repetition_penalty": self.slider("repetition_penalty").value,
            "frequency_penalty": self.slider("frequency_penalty").value,
            "presence_penalty": self.slider("presence_penalty").value,
            "repeat_last_n": window or WHOLE_CONTEXT,
            "name_bonus": self.slider("name_bonus").value,
            "penalize_prompt": self.query_one("#penalize-prompt", Switch).value,
        }

    def defaults(self) -> dict[str, Any]:
        """The settings a story starts from: the engine's defaults, then the loaded model's."""
        params = SamplingParams(**self.model_settings)
        return {name: getattr(params, name) for name in self.shown()}

    def use_model(self, settings: dict[str, Any]) -> list[str]:
        """Start from a model's recommended settings (`Session.sampling`): each setting still at the previous
        defaults moves to the new one; what the user changed stays. Returns notes as `apply` does."""
        before, shown = self.defaults(), self.shown()
        self.model_settings = dict(settings)
        after = self.defaults()
        untouched = {k: v for k, v in after.items() if _same(shown[k], before[k])}
        return self.move(untouched)

    @on(Button.Pressed, "#model-defaults")
    def reset(self) -> None:
        """Every setting back to the model's defaults (the seed row stays)."""
        self.move(self.defaults())

    def apply(self, saved: dict, seed: object) -> list[str]:
        """Move the sliders to saved parameters (keys of SamplingParams) and fix seed (None: switch off).

        Values the sliders cannot show are clamped to their range, or skipped when they are not numbers;
        returns one note per such value, for the caller to tell the user.
        """
        notes = self.move({**MADE_WITH, **saved})
        if seed is not None and not is_seed(seed):
            notes.append(f"seed ignored (not {SEED_RANGE})")
            seed = None
        self.query_one(SeedRow).set_seed(seed)  # type: ignore[arg-type]
        return notes

    def move(self, saved: dict) -> list[str]:
        """Move the sliders and the prompt switch to saved settings (keys of SamplingParams); notes as `apply`."""
        notes: list[str] = []
        if isinstance(saved.get("penalize_prompt"), bool):
            self.query_one("#penalize-prompt", Switch).value = saved["penalize_prompt"]
        for spec in PARAMS:
            name = SAVED_NAMES.get(spec.key, spec.key)
            if name not in saved:
                continue
            value, slider = saved[name], self.slider(spec.key)
            if name == "repeat_last_n" and value == WHOLE_CONTEXT:
                value = 0  # the slider's "all"
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
        return notes


def _same(a: object, b: object) -> bool:
    """Equal settings, floats to the sliders' precision."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) < 1e-6
    return a == b
