"""Sampling controls: labelled sliders over real-valued parameters and a seed row.

Built on textual-slider's integer `Slider`; `ParamSlider` maps its steps onto min..max in float units and
takes any value (a saved story's): out of range is clamped, not a number is refused with ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Switch
from textual_slider import Slider

from engine.checks import is_seed
from helium_tui.widgets.safe_input import SafeInput


@dataclass(frozen=True)
class ParamSpec:
    """One sampling parameter shown as a slider."""

    key: str  # widget id suffix and SamplingParams field it feeds
    label: str  # shown left of the value
    lo: float  # smallest value
    hi: float  # largest value
    step: float  # one arrow key press
    default: float  # value at start
    decimals: int = 2  # digits shown after the point (0 = integer)
    zero_label: str = ""  # shown instead of the value at 0 (e.g. "off")


class KeySlider(Slider):
    """textual-slider's Slider with home/end and page keys, compact (one row)."""

    BINDINGS = [
        Binding("home", "slide_home", "Min", show=False),
        Binding("end", "slide_end", "Max", show=False),
        Binding("pageup", "slide_page(1)", "Up", show=False),
        Binding("pagedown", "slide_page(-1)", "Down", show=False),
    ]

    def action_slide_home(self) -> None:
        """Jump to the minimum."""
        self.value = self.min

    def action_slide_end(self) -> None:
        """Jump to the maximum."""
        self.value = self.max

    def action_slide_page(self, direction: int) -> None:
        """Move a tenth of the range."""
        self.value = self.value + direction * max(self.step, (self.max - self.min) // 10)


class ParamSlider(Vertical):
    """A label with the current value over a slider; `value` is in the parameter's own units."""

    @dataclass
    class Changed(Message):
        """The user moved the slider."""

        slider: ParamSlider  # the ParamSlider that changed
        value: float  # its new value

    def __init__(self, spec: ParamSpec) -> None:
        super().__init__(id=f"param-{spec.key}", classes="param")
        self.spec = spec
        self._steps = round((spec.hi - spec.lo) / spec.step)

    def compose(self) -> ComposeResult:
        with Horizontal(classes="param-head"):
            yield Label(self.spec.label, classes="param-label")
            yield Label(self._format(self.spec.default), classes="param-value")
        yield KeySlider(0, self._steps, value=self._index(self.spec.default))

    @property
    def value(self) -> float:
        """The current value (an int-valued float for integer parameters)."""
        return self._value_of(self.query_one(KeySlider).value)

    @value.setter
    def value(self, value: float) -> None:
        self.set_value(value)

    def set_value(self, value: object) -> bool:
        """Move to the step nearest value, clamped to lo..hi; True when value is shown exactly.

        ValueError when value is not a number (nan, text, a bool, ...).
        """
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            got = "nan" if isinstance(value, float) else type(value).__name__  # no repr: it may be huge
            raise ValueError(f"{self.spec.label} must be a number, got {got}")
        index = self._index(value)
        self.query_one(KeySlider).value = index
        return self._value_of(index) == value

    def _index(self, value: float) -> int:
        if value <= self.spec.lo:  # also -inf and ints too large for a float
            return 0
        if value >= self.spec.hi:
            return self._steps
        return max(0, min(self._steps, round((value - self.spec.lo) / self.spec.step)))

    def _value_of(self, index: int) -> float:
        return round(self.spec.lo + index * self.spec.step, 6)

    def _format(self, value: float) -> str:
        if value == 0 and self.spec.zero_label:
            return self.spec.zero_label
        return f"{value:.{self.spec.decimals}f}"

    @on(Slider.Changed)
    def _moved(self, event: Slider.Changed) -> None:
        event.stop()
        value = self._value_of(event.value)
        self.query_one(".param-value", Label).update(self._format(value))
        self.post_message(self.Changed(self, value))


class SeedRow(Horizontal):
    """A switch for a fixed seed and the seed itself; off means a fresh random seed each story."""

    def compose(self) -> ComposeResult:
        yield Label("Fixed seed", classes="param-label")
        yield Switch(False, id="seed-fixed")
        yield SafeInput("42", type="integer", id="seed-value", placeholder="seed")

    @property
    def fixed(self) -> int | None:
        """The fixed seed, or None when the switch is off or the field holds no seed (engine.checks.is_seed)."""
        if not self.query_one("#seed-fixed", Switch).value:
            return None
        try:
            seed = int(self.query_one("#seed-value", Input).value.strip())
        except ValueError:  # empty, not a number, or too many digits to convert
            return None
        return seed if is_seed(seed) else None

    def set_seed(self, seed: int | None) -> None:
        """Show seed as fixed (None: switch off)."""
        self.query_one("#seed-fixed", Switch).value = seed is not None
        if seed is not None:
            self.query_one("#seed-value", Input).value = str(seed)
