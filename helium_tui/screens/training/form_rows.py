"""The training monitor's top rows as a widget: the new-model or the fine-tune form, then the run dir row.

`RunForms` reads and fills its fields as typed (helium_tui/screens/training/form_values.py checks them); what its buttons do
is the screen's (helium_tui/screens/training/screen.py).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, ContentSwitcher, Input, Label, Select, Static

from engine.humanize import plural
from engine.model.config import PRESETS, describe_preset, preset_size
from helium_tui.safe_text import terminal_safe
from helium_tui.screens.training.form_values import FinetuneForm, RunForm
from helium_tui.widgets.safe_input import SafeInput
from trainer.config import TrainConfig

NEW_FORM, TUNE_FORM = "new-form", "tune-form"  # the two forms of the top rows (ContentSwitcher ids)
PRESETS_HELP = "The model's size and shape:\n" + "\n".join(map(describe_preset, PRESETS))


def preset_label(name: str) -> str:
    """A preset as its field shows it, short enough for 80 columns: 'mini 5.5M' (the tooltip says the rest)."""
    return f"{name} {preset_size(name).split(' · ')[1].removesuffix(' params')}"


FIRST_FIELD = {NEW_FORM: "#preset", TUNE_FORM: "#ft-folder"}  # focused when a form is shown
LIBRARY_HINT = "also this model's own stories (off: see why with f1)"
LIBRARY_WHY = (
    "The library holds stories this model wrote. Learning from its own outputs mostly teaches it its own habits "
    "and mistakes again (names that drift, loops), so it is off unless you tick it; stories you wrote or chose "
    "yourself, in a folder, teach it something new."
)


class RunForms(Vertical):
    """The top rows: one of the two forms (new model, fine-tune), then the run dir with Attach/Resume/Stop."""

    def __init__(self, defaults: TrainConfig, id: str | None = None) -> None:
        super().__init__(id=id)
        self.defaults = defaults  # the batch size and lr shown when those fields are empty

    def compose(self) -> ComposeResult:
        form = RunForm()
        with ContentSwitcher(initial=NEW_FORM, id="modes"):
            with Vertical(id=NEW_FORM):
                with Horizontal(classes="row"):  # what to train
                    yield Select([(preset_label(p), p) for p in PRESETS], value=form.preset, allow_blank=False,
                                 compact=True, id="preset", tooltip=PRESETS_HELP)  # fmt: skip
                    yield SafeInput(placeholder="prepared data dir", compact=True, id="data")
                    yield Label("steps")
                    yield SafeInput(form.steps, type="integer", compact=True, id="steps")
                    yield Label("batch")
                    yield SafeInput(placeholder=str(self.defaults.batch_size), type="integer", compact=True, id="batch")
                    yield Label("lr")
                    yield SafeInput(placeholder=f"{self.defaults.lr:g}", type="number", compact=True, id="lr")
                with Horizontal(classes="row"):  # where a new run goes
                    yield SafeInput(placeholder="out dir for a new run (empty: runs/<time>)", compact=True, id="out")
                    yield Button("Start", variant="success", compact=True, id="start")
            with Vertical(id=TUNE_FORM):
                with Horizontal(classes="row"):  # the model and your stories
                    yield Label("fine-tune", id="ft-label")
                    yield Static("", id="ft-base")
                    yield SafeInput(placeholder="on a folder of your .txt/.md/.jsonl stories", compact=True,
                                id="ft-folder")  # fmt: skip
                with Horizontal(classes="row"):  # the library, if you choose it, and go
                    yield Checkbox("library", False, compact=True, id="ft-library", tooltip=LIBRARY_WHY)
                    yield Static(LIBRARY_HINT, id="ft-why")
                    yield Label("steps")
                    yield SafeInput(placeholder="auto", type="integer", compact=True, id="ft-steps")
                    yield Button("Fine-tune", variant="success", compact=True, id="ft-start")
        with Horizontal(classes="row"):  # a run to watch or continue
            yield SafeInput(placeholder="run dir to attach to or resume", compact=True, id="run-dir")
            yield Button("Attach", compact=True, id="attach")
            yield Button("Resume", variant="primary", compact=True, id="resume")
            yield Button("Stop", variant="error", compact=True, id="stop", disabled=True)

    def _value(self, widget_id: str) -> str:
        return self.query_one(widget_id, Input).value

    @property
    def form(self) -> RunForm:
        """The new-model form's fields as typed."""
        preset = str(self.query_one("#preset", Select).value)
        fields = ("#data", "#steps", "#batch", "#lr", "#out")
        return RunForm(preset, *(self._value(widget_id) for widget_id in fields))

    def show_form(self, form: RunForm) -> None:
        """Fill the new-model form (not the out dir) from form."""
        self.query_one("#preset", Select).value = form.preset
        fields = {"#data": form.data, "#steps": form.steps, "#batch": form.batch, "#lr": form.lr}
        for widget_id, value in fields.items():
            self.query_one(widget_id, Input).value = value

    def finetune_form(self, base: str) -> FinetuneForm:
        """The fine-tune form's fields as typed, for the model in bundle dir base ("" = none loaded)."""
        library = self.query_one("#ft-library", Checkbox)
        return FinetuneForm(
            base=base,
            library=library.value and not library.disabled,
            folder=self._value("#ft-folder"),
            steps=self._value("#ft-steps"),
        )

    @property
    def run_dir(self) -> str:
        """The run dir field, as typed."""
        return self._value("#run-dir")

    @run_dir.setter
    def run_dir(self, value: str) -> None:
        self.query_one("#run-dir", Input).value = value

    def show_mode(self, finetuning: bool) -> None:
        """Show the fine-tune form (else the new-model form) with its first field focused, so typing lands there."""
        form = TUNE_FORM if finetuning else NEW_FORM
        self.query_one("#modes", ContentSwitcher).current = form
        self.query_one(FIRST_FIELD[form]).focus()

    def show_sources(self, base: str, stories: int | None) -> None:
        """Show the base model's name ("" = none loaded) and how many stories the library holds (None: no
        library)."""
        none = Text("no model loaded (ctrl+o)", style="dim")
        name = Text(terminal_safe(base), style="bold") if base else none
        self.query_one("#ft-base", Static).update(name)
        library = self.query_one("#ft-library", Checkbox)
        count = f"library: {plural(stories, 'story', 'stories')}"
        library.label = "no library" if stories is None else count
        library.disabled = stories is None

    def show_stoppable(self, stoppable: bool) -> None:
        """Enable Stop while the watched run can be stopped."""
        self.query_one("#stop", Button).disabled = not stoppable

    def show_preparing(self, preparing: bool) -> None:
        """Disable the Fine-tune button while a fine-tune is being prepared."""
        self.query_one("#ft-start", Button).disabled = preparing
