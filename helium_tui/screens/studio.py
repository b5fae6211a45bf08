"""The story studio: a prompt editor, a live story pane, sampling sliders and the token inspector.

Generation runs in a thread worker that streams deltas into a per-run buffer; the UI drains it on a
posted message, so a fast model cannot flood the event loop.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, TextArea

from engine.generate import Delta, GenerationResult, Generator
from engine.sampling import SamplingParams
from helium_tui.widgets.inspector import InspectorPanel
from helium_tui.widgets.sliders import ParamSlider, ParamSpec, SeedRow
from helium_tui.widgets.status_bar import StatusBar
from helium_tui.widgets.story_view import Piece, StoryView

if TYPE_CHECKING:
    from engine.session import Session
    from helium_tui.app import HeliumApp

DEFAULT_PROMPT = "Once upon a time"
INSPECT_TOP = 5  # alternatives recorded per token for the inspector
FRAME_S = 1 / 15  # story redraws at most 15 times a second: at 30 the UI thread slows sampling ~20%
HINT = "Write a story opening in the prompt above, then press ctrl+g to tell the story."

DEFAULTS = SamplingParams()  # the sliders start at the engine's defaults
PARAMS: list[ParamSpec] = [
    ParamSpec("temperature", "Temperature", 0.0, 2.0, 0.05, DEFAULTS.temperature),
    ParamSpec("top_k", "Top-k", 0, 200, 1, DEFAULTS.top_k, decimals=0, zero_label="off"),
    ParamSpec("top_p", "Top-p", 0.05, 1.0, 0.05, DEFAULTS.top_p),
    ParamSpec("repetition_penalty", "Repetition pen.", 1.0, 2.0, 0.05, DEFAULTS.repetition_penalty),
    ParamSpec("max_tokens", "Max tokens", 16, 2048, 16, DEFAULTS.max_new_tokens, decimals=0),
]


@dataclass
class Run:
    """One generation: its inputs, the cancel flag and the buffer the worker fills."""

    prompt: str  # the text sent to the model
    params: SamplingParams  # how it samples (seed always set, so the story can be retold)
    cancel: threading.Event = field(default_factory=threading.Event)  # set to stop within a token
    lock: threading.Lock = field(default_factory=threading.Lock)  # guards pending/flush_posted
    pending: list[Delta] = field(default_factory=list)  # deltas not yet shown
    flush_posted: bool = False  # a Flush message is on its way to the UI
    last_post: float = 0.0  # when the worker last posted a Flush
    started: float = field(default_factory=time.perf_counter)  # when the run began
    first_token: float | None = None  # when the first delta arrived (UI clock)

    def push(self, delta: Delta) -> bool:
        """Buffer a delta; True when the caller should post a Flush (none pending, a frame has passed)."""
        now = time.perf_counter()
        with self.lock:
            self.pending.append(delta)
            if self.flush_posted or now - self.last_post < FRAME_S:
                return False  # the next token (or the Done message) will flush it
            self.flush_posted, self.last_post = True, now
            return True

    def drain(self) -> list[Delta]:
        """Take everything buffered (UI thread)."""
        with self.lock:
            self.flush_posted = False
            out, self.pending = self.pending, []
            return out


class StudioScreen(Screen[None]):
    """The main screen: write a prompt, tell a story, tune sampling, inspect tokens."""

    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", priority=True, id="generate"),
        Binding("ctrl+enter", "generate", "Generate", show=False, priority=True),
        Binding("escape", "stop", "Stop", id="stop"),
        Binding("ctrl+r", "regenerate", "Retell", priority=True, id="regenerate"),
        Binding("ctrl+n", "continue_story", "Continue", priority=True, id="continue"),
        Binding("f8", "clear", "Clear", id="clear", show=False),
        Binding("f2", "toggle_inspector", "Inspect", id="inspector"),
    ]

    class Flush(Message):
        """New deltas are buffered in run."""

        def __init__(self, run: Run) -> None:
            super().__init__()
            self.run = run  # the run whose buffer to drain

    class Done(Message):
        """A run ended (finished, hit max tokens, or was stopped)."""

        def __init__(self, run: Run, result: GenerationResult) -> None:
            super().__init__()
            self.run = run  # the run that ended
            self.result = result  # its text and timings

    class Failed(Message):
        """A run raised; the message is shown as a notification."""

        def __init__(self, run: Run, error: str) -> None:
            super().__init__()
            self.run = run  # the run that failed
            self.error = error  # one line for the user

    def __init__(self) -> None:
        super().__init__(id="studio")
        self.run: Run | None = None  # the current (or last) run
        self.last_result: GenerationResult | None = None  # result of the last run that ended
        self.generating = False  # a run is in flight

    @property
    def helium(self) -> HeliumApp:
        """The app, typed."""
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Horizontal(id="studio-body"):
            with Vertical(id="main-column"):
                yield TextArea(DEFAULT_PROMPT, id="prompt", soft_wrap=True, tab_behavior="focus", highlight_cursor_line=False)
                with VerticalScroll(id="story-scroll", can_focus=False):
                    yield StoryView(hint=HINT, id="story")
            with Vertical(id="sidebar"):
                yield InspectorPanel(id="inspector")
                with VerticalScroll(id="controls", can_focus=False):
                    for spec in PARAMS:
                        yield ParamSlider(spec)
                    yield SeedRow(id="seed-row")
        yield StatusBar(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#prompt").border_title = "Prompt"
        self.query_one("#story-scroll").border_title = "Story"
        self.query_one("#controls").border_title = "Sampling"
        self.query_one("#prompt", TextArea).focus()
        self.query_one("#prompt", TextArea).move_cursor((0, len(DEFAULT_PROMPT)))

    # ---- widgets -------------------------------------------------------------------------------------

    @property
    def story(self) -> StoryView:
        """The story pane."""
        return self.query_one("#story", StoryView)

    @property
    def status(self) -> StatusBar:
        """The status line."""
        return self.query_one("#status", StatusBar)

    @property
    def prompt_text(self) -> str:
        """What the prompt editor holds."""
        return self.query_one("#prompt", TextArea).text

    @prompt_text.setter
    def prompt_text(self, text: str) -> None:
        area = self.query_one("#prompt", TextArea)
        area.text = text
        area.move_cursor(area.document.end)

    def param(self, key: str) -> ParamSlider:
        """The slider for a parameter (see PARAMS)."""
        return self.query_one(f"#param-{key}", ParamSlider)

    # ---- model ---------------------------------------------------------------------------------------

    def set_loading(self, name: str) -> None:
        """Show that a model is loading (the pane gets a loading indicator)."""
        self.query_one("#story-scroll").loading = True
        self.status.set(state="loading", model=name, device="")

    def set_session(self, session: Session | None) -> None:
        """Use session for the next stories (None: loading failed, keep what was there)."""
        self.query_one("#story-scroll").loading = False
        if session is None:
            self.status.set(state="error" if self.helium.session is None else "ready")
            return
        self.action_stop()
        self.status.set(state="ready", model=session.name, device=f"{session.device.type} · {session.dtype_name}")
        self.refresh_bindings()

    # ---- sampling ------------------------------------------------------------------------------------

    def sampling_params(self) -> SamplingParams:
        """SamplingParams from the sliders; a random seed is drawn (and recorded) when none is fixed."""
        seed = self.query_one(SeedRow).fixed
        return SamplingParams(
            max_new_tokens=int(self.param("max_tokens").value),
            temperature=self.param("temperature").value,
            top_k=int(self.param("top_k").value),
            top_p=self.param("top_p").value,
            repetition_penalty=self.param("repetition_penalty").value,
            seed=seed if seed is not None else random.randrange(2**31),
        )

    def apply_params(self, params: dict, seed: int | None) -> None:
        """Move the sliders to saved parameters (keys of SamplingParams); seed fixes the seed."""
        names = {"max_tokens": "max_new_tokens"}
        for spec in PARAMS:
            value = params.get(names.get(spec.key, spec.key))
            if isinstance(value, int | float):
                self.param(spec.key).value = float(value)
        self.query_one(SeedRow).set_seed(seed)

    # ---- actions -------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop only while telling; retell/continue only while idle; telling needs a model (else dimmed)."""
        if action == "stop":
            return self.generating
        if action in ("regenerate", "continue_story") and self.generating:
            return False
        if action in ("generate", "regenerate", "continue_story"):
            return True if self.helium.session is not None else None
        return True

    def action_generate(self) -> None:
        """Tell a story from the prompt editor."""
        self.start(self.prompt_text, keep=False)

    def action_regenerate(self) -> None:
        """Retell the last story's prompt with the current sliders (a new seed unless fixed)."""
        self.start(self.story.prompt if self.run else self.prompt_text, keep=False)

    def action_continue_story(self) -> None:
        """Extend the story: prompt := prompt + story so far, new tokens append to the pane."""
        full = self.story.prompt + self.story.text
        if not full:
            self.action_generate()
            return
        self.prompt_text = full
        self.start(full, keep=True)

    def action_stop(self) -> None:
        """Stop the story being told (within a token)."""
        if self.run is not None:
            self.run.cancel.set()

    def action_clear(self) -> None:
        """Stop, and empty the story pane and the prompt."""
        self.action_stop()
        self.story.reset("")
        self.query_one(InspectorPanel).show(None)
        self.prompt_text = ""
        self.query_one("#prompt", TextArea).focus()
        self.status.set(tokens=0, tokens_per_s=None, ttft_s=None)

    def action_toggle_inspector(self) -> None:
        """Colour tokens by probability and show alternatives of the selected token."""
        story = self.story
        story.inspect = not story.inspect
        self.query_one(InspectorPanel).display = story.inspect
        if story.inspect and story.cursor < 0 and (indices := story.token_indices):
            story.cursor = indices[0]
        self.notify("Token inspector on: click a token or use ← → in the story" if story.inspect
                    else "Token inspector off", timeout=2)

    # ---- generation ----------------------------------------------------------------------------------

    def start(self, prompt: str, keep: bool, params: SamplingParams | None = None) -> Run | None:
        """Begin a run from prompt; keep=True appends to the current story instead of starting anew."""
        session = self.helium.session
        if session is None:
            self.notify("No model is loaded yet.", severity="warning")
            return None
        self.action_stop()
        run = Run(prompt, params or self.sampling_params())
        self.run = run
        if not keep:
            self.story.reset(prompt)
            self.query_one(InspectorPanel).show(None)
        self.generating = True
        self.status.set(state="generating", tokens=self._tokens_shown(), tokens_per_s=None, ttft_s=None)
        self.refresh_bindings()
        self._generate(run, session.generator)
        return run

    def _tokens_shown(self) -> int:
        return sum(1 for p in self.story.pieces if p.token is not None)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False)
    def _generate(self, run: Run, generator: Generator) -> None:
        """Stream one story (worker thread); results reach the UI as Flush/Done/Failed messages."""
        try:  # the generator runs one story at a time: this waits while an earlier one winds down
            stream = generator.stream(run.prompt, run.params, cancel=run.cancel, inspect_top=INSPECT_TOP)
            for delta in stream:
                if run.push(delta):
                    self.post_message(self.Flush(run))
            assert stream.result is not None
            self.post_message(self.Done(run, stream.result))
        except Exception as exc:  # noqa: BLE001 - any failure becomes a notification; the app keeps running
            self.post_message(self.Failed(run, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))

    def _show(self, run: Run) -> None:
        """Move buffered deltas of run into the story pane and update the live numbers."""
        deltas = run.drain()
        if not deltas or run is not self.run:
            return
        now = time.perf_counter()
        if run.first_token is None:
            run.first_token = now
        scroll = self.query_one("#story-scroll", VerticalScroll)
        at_end = scroll.scroll_y >= scroll.max_scroll_y - 1
        self.story.extend([Piece(d.text, d.token) for d in deltas])
        if at_end:
            scroll.scroll_end(animate=False, immediate=False)
        tokens = self._tokens_shown()
        span = now - run.first_token
        self.status.set(tokens=tokens, ttft_s=run.first_token - run.started,
                        tokens_per_s=(tokens - 1) / span if span > 0 and tokens > 1 else None)

    @on(Flush)
    def _on_flush(self, message: Flush) -> None:
        self._show(message.run)

    @on(Done)
    def _on_done(self, message: Done) -> None:
        run, result = message.run, message.result
        self._show(run)
        if run is not self.run:
            return
        self.generating = False
        self.last_result = result
        self.status.set(
            state="stopped" if result.finish_reason == "cancelled" else "ready",
            tokens=self._tokens_shown(),
            tokens_per_s=result.tokens_per_s,
            ttft_s=result.ttft_s,
        )
        self.refresh_bindings()
        if result.generated_tokens:
            self._save(run, result)

    @on(Failed)
    def _on_failed(self, message: Failed) -> None:
        if message.run is not self.run:
            return
        self.generating = False
        self.status.set(state="error")
        self.refresh_bindings()
        self.notify(message.error, title="Generation failed", severity="error", timeout=8)

    def _save(self, run: Run, result: GenerationResult) -> None:
        """Keep the finished story in the library (when the library is available)."""
        store = self.helium.store
        if store is None:
            return
        from helium_tui.library import Story

        params = asdict(run.params)
        story = Story(
            id="",
            prompt=self.story.prompt,
            text=self.story.text,
            params=params,
            model=self.helium.session.name if self.helium.session else "",
            seed=run.params.seed,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            tokens=self._tokens_shown(),
            finish_reason=result.finish_reason,
        )
        try:
            store.save(story)
        except (OSError, ValueError) as exc:
            self.notify(f"Could not save the story: {exc}", severity="warning")

    def load_story(self, prompt: str, text: str, params: dict, seed: int | None) -> None:
        """Show a saved story (prompt + text) and its parameters, ready to continue or retell."""
        self.action_stop()
        self.run = None
        self.story.reset(prompt)
        self.story.extend([Piece(text)] if text else [])
        self.prompt_text = prompt
        self.apply_params(params, seed)
        self.status.set(tokens=0, tokens_per_s=None, ttft_s=None)

    @on(StoryView.TokenSelected)
    def _on_token(self, message: StoryView.TokenSelected) -> None:
        self.query_one(InspectorPanel).show(message.token, message.index)
