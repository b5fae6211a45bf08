"""The compare view (f3 in the studio): the prompt told 2–4 times side by side; keep the best.

Variants are rows of one batch on the loaded model (seeds seed, seed + 1, ...), or, against another
installed model, half from each with the same seed, each model from its own recommended settings except where
the user changed one in the studio (`other_settings`). A daemon thread tells them
(`helium_tui.variants`) and the columns stream; enter keeps the chosen one in the studio and the library.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine.generation.sampling import MODEL_SETTINGS, SamplingParams, settle
from engine.humanize import plural
from helium_tui.app_state import AppState, app_state
from helium_tui.names import cut
from helium_tui.safe_text import terminal_safe
from helium_tui.streaming import FrameBuffer, start_daemon
from helium_tui.variants import Batch, tell_variants
from helium_tui.widgets.sampling import draw_seed
from helium_tui.widgets.story_view import Piece, VariantColumn

if TYPE_CHECKING:
    from engine.generation.session import Session

MIN_VARIANTS, MAX_VARIANTS = 2, 4
DEFAULT_VARIANTS = 3
HEAD_NAME = 28  # the head line cuts longer model names with '…' (helium_tui.names)
HEAD_CHARS = 500  # the head line shows the prompt's start: more than a terminal row, never the whole prompt
CHOOSE = Binding.Group("Choose", compact=True)  # ← → share one footer label
COUNT = Binding.Group("Variants", compact=True)  # and so do + −

HELP = """\
# Compare
The prompt is told several times at once with the studio's settings. **← →** (or a click, or 1–4) choose a
column, **enter** keeps it: it goes into the studio's story pane and the library. **+ −** change the number of
variants, **m** switches between different draws of this model and another installed model (half the columns
each, the same seed; each model starts from its own recommended settings, and what you changed in the studio
applies to both: the column titles say the settings), **ctrl+r** tells them again with a new seed (unless the seed is fixed).

Variants of one model are rows of one batch: row n draws with the seed + n, the story that seed tells on its
own, so a kept variant is saved with its own seed; retelling it in the studio tells a new story with the same
settings.
"""


@dataclass
class Variant:
    """One column: which model tells it and how far it got."""

    model: str  # the model's name
    row: int  # its row in that model's batch (1-based)
    text: str = ""  # told so far
    tokens: int = 0  # tokens told so far
    finish: str = ""  # eos, length or cancelled once it ended ("" while telling)


@dataclass
class Job:
    """One round of variants: inputs, cancel flag and the text its thread buffers for the UI."""

    prompt: str
    params: SamplingParams  # the loaded model's variants' (seed always set)
    variants: list[Variant]
    other_params: SamplingParams | None = None  # the other model's variants' (same seed)
    cancel: threading.Event = field(default_factory=threading.Event)
    buffer: FrameBuffer[tuple[int, str, str]] = field(default_factory=FrameBuffer)  # (column, text, finish)
    started: float = field(default_factory=time.perf_counter)

    def params_of(self, variant: Variant) -> SamplingParams:
        """The settings a variant is told with: its model's (the other model's when it is not the first's)."""
        mine = variant.model == self.variants[0].model
        return self.params if mine or self.other_params is None else self.other_params


def changed_settings(params: SamplingParams, model: dict[str, Any]) -> dict[str, Any]:
    """The settings of params that differ from a model's recommended ones (`Session.sampling`): the user's choices."""
    base = settle(model)
    return {key: getattr(params, key) for key in MODEL_SETTINGS if not _same(getattr(params, key), getattr(base, key))}


def other_settings(params: SamplingParams, mine: dict[str, Any], name: str) -> SamplingParams:
    """The settings another installed model `name` tells with next to params (the loaded model's, whose recommended
    ones are `mine`): its own recommended settings, then what the user changed, the same seed."""
    from engine.bundles.info import read_metadata
    from engine.bundles.registry import resolve_model
    from engine.generation.sampling import model_defaults

    theirs = model_defaults(read_metadata(resolve_model(name)))  # read_metadata drops settings that do not check
    return settle(theirs, **changed_settings(params, mine), seed=params.seed)


def brief(p: SamplingParams) -> str:
    """Settings in a column title, what shapes a story first: 'T 0.3 · rep 1.2/64 · top-p 0.95' ('greedy · …')."""
    parts = ["greedy" if p.greedy else f"T {p.temperature:g}"]
    window = f"/{p.repeat_last_n}" if p.repeat_last_n >= 0 else ""
    parts += [f"rep {p.repetition_penalty:g}{window}"] if p.repetition_penalty != 1 else []
    parts += [f"freq {p.frequency_penalty:g}"] if p.frequency_penalty else []
    parts += [f"pres {p.presence_penalty:g}"] if p.presence_penalty else []
    parts += [f"names +{p.name_bonus:g}"] if p.name_bonus else []
    if not p.greedy:  # top-k and top-p change nothing in a greedy story
        parts += ([f"top-k {p.top_k}"] if p.top_k else []) + ([f"top-p {p.top_p:g}"] if p.top_p < 1 else [])
    return " · ".join(parts)


def _same(a: object, b: object) -> bool:
    """Equal settings, floats to the sliders' precision."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) < 1e-6
    return a == b


class CompareScreen(Screen[None]):
    """Tell one prompt 2–4 times side by side and keep the best."""

    BINDINGS = [
        Binding("left", "choose(-1)", "Left", tooltip="Choose the column on the left", group=CHOOSE),
        Binding("right", "choose(1)", "Right", tooltip="Choose the column on the right", group=CHOOSE),
        Binding("enter", "keep", "Keep", tooltip="Keep the chosen variant: into the studio and the library"),
        Binding("escape", "stop", "Stop", tooltip="Stop telling"),
        Binding("escape", "back", "Back", tooltip="Back to the studio, keeping nothing"),
        Binding("ctrl+r", "retell", "Retell", tooltip="Tell the variants again (a new seed unless fixed)"),
        Binding("plus,equals_sign", "count(1)", "More", tooltip="One more variant (up to 4)", group=COUNT),
        Binding("minus", "count(-1)", "Fewer", tooltip="One fewer variant (at least 2)", group=COUNT),
        Binding("m", "against", "Against", tooltip="Switch: draws of this model, or another installed model"),
        *[Binding(str(n), f"pick({n - 1})", f"Variant {n}", show=False) for n in range(1, MAX_VARIANTS + 1)],
    ]
    HELP = HELP

    generating: reactive[bool] = reactive(False, bindings=True)
    """Variants are being told."""
    chosen: reactive[int] = reactive(0)
    """The column enter keeps."""

    @dataclass
    class Flush(Message):
        """New text is buffered in job."""

        job: Job

    @dataclass
    class Done(Message):
        """Every variant of job ended; other is the other model's session, if one was loaded for it."""

        job: Job
        other: Session | None = None

    @dataclass
    class Failed(Message):
        """Telling job failed (one line for the user)."""

        job: Job
        error: str

    @dataclass
    class Kept(Message):
        """To the app: a variant was kept (and saved); the studio shows it, ready to continue or retell."""

        prompt: str
        text: str
        params: SamplingParams  # the settings it was told with

    def __init__(
        self,
        prompt: str,
        params: SamplingParams,
        session: Session,
        count: int = DEFAULT_VARIANTS,
        against: str | None = None,
        seed_fixed: bool = False,
    ) -> None:
        super().__init__(id="compare")
        self.prompt = prompt  # what every variant continues
        self.params = params  # the studio's settings (its seed unless fixed is drawn anew on retell)
        self.seed_fixed = seed_fixed  # the studio's seed is fixed: a retell keeps it
        self.session = session  # the loaded model
        self.count = count  # number of columns
        self.against = against  # another installed model's name (None: draws of the loaded model)
        self.job: Job | None = None  # the current (or last) round
        self.kept = False  # a variant was kept: the app is taking it to the studio (a second enter keeps nothing)
        self.columns = [VariantColumn(i) for i in range(MAX_VARIANTS)]  # the first `count` are shown

    @property
    def shared(self) -> AppState:
        """What the app's screens share: the story library, the other model loaded last."""
        return app_state(self)

    def compose(self) -> ComposeResult:
        yield Static(id="compare-head")
        yield Horizontal(*self.columns, id="compare-columns")
        yield Static(id="compare-status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.action_retell(new_seed=False)

    def on_unmount(self) -> None:
        if self.job is not None:
            self.job.cancel.set()  # closing: the thread ends within a token

    # ---- actions -------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """escape stops while telling and goes back otherwise; retelling and resizing wait for the end."""
        if action == "stop":
            return self.generating
        if action == "back":
            return not self.generating
        if action in ("count", "against", "retell"):
            return None if self.generating else True
        return True

    def action_choose(self, step: int) -> None:
        """Choose the column step to the left (-1) or right (1)."""
        self.chosen = (self.chosen + step) % self.count

    def action_pick(self, index: int) -> None:
        """Choose column index (from 0)."""
        if 0 <= index < self.count:
            self.chosen = index

    def action_stop(self) -> None:
        """Stop telling (the text so far stays)."""
        if self.job is not None:
            self.job.cancel.set()

    def action_back(self) -> None:
        """Back to the studio without keeping anything."""
        self.app.pop_screen()

    def action_count(self, step: int) -> None:
        """One more (1) or fewer (-1) variant, then tell them again."""
        count = max(MIN_VARIANTS, min(MAX_VARIANTS, self.count + step))
        if count != self.count:
            self.count = count
            self.chosen = min(self.chosen, count - 1)
            self.action_retell(new_seed=False)

    def action_against(self) -> None:
        """Cycle: draws of the loaded model, then each other installed model."""
        from engine.bundles.registry import list_models

        names = [m.name for m in list_models() if m.name != self.session.name]
        if not names:
            self.notify("No other model is installed to compare against (ctrl+o lists them).", timeout=4)
            return
        cycle = [None, *names]
        self.against = cycle[(cycle.index(self.against) + 1) % len(cycle) if self.against in cycle else 1]
        self.action_retell(new_seed=False)

    def palette_commands(self) -> list[SystemCommand]:
        """One palette command per installed model to compare against, and one for draws of this model."""
        from engine.bundles.registry import list_models

        commands = [
            SystemCommand(
                "Compare draws of this model",
                terminal_safe(f"{self.session.name}, different draws"),
                lambda: self._set_against(None),
            )
        ]
        for info in list_models():
            if info.name != self.session.name:
                commands.append(
                    SystemCommand(
                        f"Compare against {terminal_safe(info.name)}",
                        "Half the columns from each model, the same seed",
                        lambda name=info.name: self._set_against(name),
                    )
                )
        return commands

    def _set_against(self, name: str | None) -> None:
        if self.generating:
            self.action_stop()
        self.against = name
        self.action_retell(new_seed=False)

    def action_retell(self, new_seed: bool = True) -> None:
        """Tell the variants (again); new_seed draws a new seed unless the studio's seed is fixed."""
        if self.job is not None:
            self.job.cancel.set()
        if new_seed and not self.seed_fixed:
            self.params = replace(self.params, seed=draw_seed())
        params = self.params
        mine = (self.count + 1) // 2 if self.against else self.count
        variants = [Variant(self.session.name, i + 1) for i in range(mine)]
        variants += [Variant(self.against, i + 1) for i in range(self.count - mine)] if self.against else []
        try:
            theirs = other_settings(params, self.session.sampling, self.against) if self.against else None
        except (OSError, ValueError) as exc:  # the other model went away or its settings do not check
            theirs = None
            self.notify(terminal_safe(f"{self.against}: {exc}"), severity="warning", markup=False)
        job = self.job = Job(self.prompt, params, variants, theirs)
        self._columns_for(job)
        self.generating = True
        self._show_status()
        other = self.shared.compare_session
        if other is None or other.name != self.against:
            other = None  # not loaded yet (or against another model): the thread loads it
        session, against = self.session, self.against
        start_daemon("compare", lambda: self._tell(job, session, against, other))

    def action_keep(self) -> None:
        """Keep the chosen variant: it goes into the studio's story pane and the library."""
        job = self.job
        if job is None or self.kept:
            return
        self.kept = True
        job.cancel.set()
        variant = job.variants[self.chosen]
        extra: dict[str, object] = {"variant": f"{self.chosen + 1} of {len(job.variants)}"}
        extra["batch_row"] = variant.row
        finish = variant.finish or "cancelled"
        error = self.shared.save_story(  # the variant's own seed: the library's retell tells it again
            job.prompt, variant.text, job.params_of(variant).for_row(variant.row - 1), variant.model, variant.tokens,
            finish, extra,
        )  # fmt: skip
        if error is not None:
            self.notify(terminal_safe(error), severity="warning", markup=False)
        self.post_message(self.Kept(job.prompt, variant.text, job.params_of(variant)))  # shown in the studio
        where = " and saved it to the library" if error is None else ""
        self.notify(
            terminal_safe(f"Kept variant {self.chosen + 1} ({variant.model}){where}."),
            timeout=4,
            markup=False,
        )

    # ---- telling -------------------------------------------------------------------------------------

    def _tell(self, job: Job, session: Session, against: str | None, other: Session | None) -> None:
        """Tell job's variants (daemon thread): Flush while text comes, then Done or Failed."""
        from engine.generation.session import open_session

        def emit(column: int, text: str, finish: str) -> None:
            if job.buffer.push((column, text, finish)):
                self.post_message(self.Flush(job))

        try:
            mine = [i for i, v in enumerate(job.variants) if v.model == session.name]
            batches = [Batch(session.generator, mine)]
            if against is not None:
                if other is None:  # loaded here, kept by the app for the next round (see Done)
                    other = open_session(against, device=session.device.type, dtype=session.dtype_name)
                theirs = [i for i in range(len(job.variants)) if i not in mine]
                batches.append(Batch(other.generator, theirs, job.other_params))
            tell_variants(batches, job.prompt, job.params, job.cancel, emit)
        except Exception as exc:  # noqa: BLE001 - any failure becomes a notification; the app keeps running
            line = str(exc).strip().splitlines()
            self.post_message(self.Failed(job, f"{type(exc).__name__}: {line[0] if line else ''}"))
        else:
            self.post_message(self.Done(job, other))

    def _columns_for(self, job: Job) -> None:
        """Show one empty column per variant, titled by its model (or its number)."""
        for column in self.columns:
            column.display = column.index < len(job.variants)
        for column, variant in zip(self.columns, job.variants, strict=False):
            column.restart("")
            column.border_title = terminal_safe(
                f"{column.index + 1} · {cut(variant.model, HEAD_NAME)} · {brief(job.params_of(variant))}"
                if self.against else f"Variant {column.index + 1}"
            )  # fmt: skip
            column.border_subtitle = ""
        self.watch_chosen(self.chosen)

    def watch_chosen(self, chosen: int) -> None:
        for column in self.columns:
            column.set_class(column.index == chosen, "-chosen")
        if self.job is not None:
            self._show_status()

    @on(VariantColumn.Clicked)
    def _clicked(self, message: VariantColumn.Clicked) -> None:
        self.chosen = message.index

    def _drain(self, job: Job) -> None:
        items = job.buffer.drain()
        if job is not self.job or not items:
            return
        pieces: dict[int, list[Piece]] = {}
        for column, text, finish in items:
            variant = job.variants[column]
            variant.text += text
            if finish:
                variant.finish = finish
            else:
                variant.tokens += 1
            if text:
                pieces.setdefault(column, []).append(Piece(text))
        for column, new in pieces.items():
            self.columns[column].append(new)
        for column, variant in zip(self.columns, job.variants, strict=False):
            state = f" · {variant.finish}" if variant.finish else " …"
            column.border_subtitle = plural(variant.tokens, "token") + state
        self._show_status()

    def _show_status(self) -> None:
        job = self.job
        if job is None:
            return
        total = sum(v.tokens for v in job.variants)
        mine = cut(self.session.name, HEAD_NAME)
        models = f"{mine} vs {cut(self.against, HEAD_NAME)}" if self.against else f"draws of {mine}"
        head = Text.assemble(
            ("Compare ", "bold"),
            terminal_safe(models),
            (f" · seed {job.params.seed} · ", "dim"),
            (terminal_safe(" ".join(job.prompt[:HEAD_CHARS].split())), "italic"),
            no_wrap=True,
            overflow="ellipsis",
        )
        self.query_one("#compare-head", Static).update(head)
        if self.generating:
            elapsed = time.perf_counter() - job.started
            speed = f" · {total / elapsed:.0f} tok/s" if total and elapsed > 0 else ""
            line = f"telling {plural(len(job.variants), 'variant')} · {plural(total, 'token')}{speed}"
        else:
            line = f"{plural(len(job.variants), 'variant')} told · ← → choose · enter keeps {self.chosen + 1}"
        self.query_one("#compare-status", Static).update(Text(line, no_wrap=True, overflow="ellipsis"))

    @on(Flush)
    def _on_flush(self, message: Flush) -> None:
        self._drain(message.job)

    @on(Done)
    def _on_done(self, message: Done) -> None:
        if message.other is not None:
            self.shared.compare_session = message.other  # kept for the next round
        self._drain(message.job)
        if message.job is self.job:
            self.generating = False
            self._show_status()

    @on(Failed)
    def _on_failed(self, message: Failed) -> None:
        if message.job is not self.job:
            return
        self.generating = False
        self._show_status()
        self.notify(
            terminal_safe(message.error), title="Compare failed", severity="error", timeout=8, markup=False
        )
