"""The story studio: a prompt editor, a live story pane, sampling sliders and the token inspector.

A story is told on a daemon thread (`helium_tui.streaming`) that buffers deltas in its `Run`; the UI drains
the buffer on a posted message at most once a frame, so a fast model cannot flood the event loop. The model and
the library come from the app's `AppState`; the app tells the studio of a load (`ModelChanged`) and of a story to
show (`ShowStory`) by message.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, TextArea

from engine.generation.generate import Delta, GenerationResult, Generator
from engine.generation.sampling import SamplingParams
from helium_tui.app_state import AppState, ModelChanged, ShowStory, Source, app_state
from helium_tui.safe_text import terminal_safe
from helium_tui.streaming import FrameBuffer, start_daemon
from helium_tui.widgets.inspector import InspectorPanel
from helium_tui.widgets.prompt_area import PromptArea
from helium_tui.widgets.sampling import SamplingPanel
from helium_tui.widgets.sliders import ParamSlider, SeedRow
from helium_tui.widgets.status_bar import StatusBar
from helium_tui.widgets.story_view import Piece, StoryPane, StoryView

if TYPE_CHECKING:
    from engine.generation.session import Session

DEFAULT_PROMPT = "Once upon a time"
INSPECT_TOP = 5  # alternatives recorded per token for the inspector
HINT = "Write a story opening in the prompt above, then press ctrl+g to tell the story."


HELP = """\
# Story studio
**Sliders**: focus one with tab, then ← → (a step), pgup pgdn (a tenth), home end; or drag with the mouse.
Temperature 0 is greedy; top-k 0 and top-p 1 switch those filters off. Turn on **Fixed seed** to retell the
same story every time.

**Inspector** (f2): tokens are coloured from green (likely) to red (surprising); click one, or focus the story
and use ← → home end, to see the alternatives the model weighed.

**Compare** (f3): the prompt told 2–4 times side by side; keep the best one.
"""


@dataclass
class Run:
    """One story being told: its inputs, the cancel flag and the buffer its thread fills."""

    prompt: str  # the text sent to the model
    params: SamplingParams  # how it samples (seed always set, so the story can be retold)
    model: str  # the model telling it: the saved story's model even if another one loads meanwhile
    cancel: threading.Event = field(default_factory=threading.Event)  # set to stop within a token
    buffer: FrameBuffer[Delta] = field(default_factory=FrameBuffer)  # deltas not yet shown
    started: float = field(default_factory=time.perf_counter)  # when the run began
    first_token: float | None = None  # when the first delta arrived (UI clock)


class StudioScreen(Screen[None]):
    """The main screen: write a prompt, tell a story, tune sampling, inspect tokens."""

    # fmt: off
    BINDINGS = [  # the footer fits 80 columns: f2, f8, ctrl+l and ctrl+t are in f1 help and the palette (ctrl+p)
        Binding("ctrl+g", "generate", "Tell", priority=True, id="generate", tooltip="Tell a story from the prompt"),
        Binding("ctrl+enter", "generate", "Tell", show=False, priority=True),
        Binding("escape", "stop", "Stop", id="stop", tooltip="Stop the story being told"),
        Binding("ctrl+r", "regenerate", "Retell", priority=True, id="regenerate",
                tooltip="Retell: the same prompt, a new seed unless fixed"),
        Binding("ctrl+n", "continue_story", "Continue", priority=True, id="continue",
                tooltip="Continue: the story so far becomes the prompt"),
        Binding("f3", "compare", "Compare", id="compare", tooltip="Tell the prompt 2–4 times side by side"),
        Binding("f4", "look_inside", "Look", id="look-inside",
                tooltip="Look inside: attention, logit lens, knock-outs"),
        Binding("f2", "toggle_inspector", "Inspect", id="inspector", show=False,
                tooltip="Token inspector: colour tokens by probability"),
        Binding("f8", "clear", "Clear", id="clear", show=False, tooltip="Clear the prompt and the story"),
        Binding("ctrl+o", "app.models", "Models", id="studio-models", tooltip="Choose a model"),
        Binding("ctrl+l", "app.library", "Library", id="studio-library", show=False,
                tooltip="The story library: every finished story"),
        Binding("ctrl+t", "app.training", "Train", id="studio-training", show=False, tooltip="The training monitor"),
    ]
    # fmt: on
    HELP = HELP

    generating: reactive[bool] = reactive(False, bindings=True)
    """A story is being told (footer keys follow it)."""

    @dataclass
    class Flush(Message):
        """New deltas are buffered in run."""

        run: Run  # the run whose buffer to drain

    @dataclass
    class Done(Message):
        """A run ended (finished, hit max tokens, or was stopped)."""

        run: Run  # the run that ended
        result: GenerationResult  # its text and timings

    @dataclass
    class Failed(Message):
        """A run raised; the message is shown as a notification."""

        run: Run  # the run that failed
        error: str  # one line for the user

    def __init__(self) -> None:
        super().__init__(id="studio")
        self.run: Run | None = None  # the current (or last) run
        self.last_result: GenerationResult | None = None  # result of the last run that ended
        self.telling_with: Session | None = None  # the model of the story being told (None once it ended)

    @property
    def shared(self) -> AppState:
        """What the app's screens share: the loaded model, the story library."""
        return app_state(self)

    def compose(self) -> ComposeResult:
        with Horizontal(id="studio-body"):
            with Vertical(id="main-column"):
                yield PromptArea(
                    DEFAULT_PROMPT,
                    id="prompt",
                    soft_wrap=True,
                    tab_behavior="focus",
                    highlight_cursor_line=False,
                )
                yield StoryPane(StoryView(hint=HINT, id="story"), id="story-scroll")
            with Vertical(id="sidebar"):
                yield InspectorPanel(id="inspector")
                yield SamplingPanel(id="controls")
        yield StatusBar(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#prompt").border_title = "Prompt"
        self.query_one("#story-scroll").border_title = "Story"
        self.query_one("#prompt", TextArea).focus()
        self.query_one("#prompt", TextArea).move_cursor((0, len(DEFAULT_PROMPT)))

    def on_unmount(self) -> None:
        self.action_stop()  # the app is closing: the story's thread ends within a token

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
        self.query_one("#prompt", PromptArea).load_prompt(text)  # plain text, cut to fit (with a notice)

    def param(self, key: str) -> ParamSlider:
        """The slider for a parameter (see widgets/sampling.py PARAMS)."""
        return self.query_one(SamplingPanel).slider(key)

    # ---- model ---------------------------------------------------------------------------------------

    @on(ModelChanged)
    def _model_changed(self) -> None:
        """Show a load in flight (a loading indicator on the pane), else the loaded model; a new model stops the
        story the old one is telling."""
        loading, session = self.shared.loading, self.shared.session
        self.query_one("#story-scroll").loading = loading is not None
        self.refresh_bindings()  # telling needs a model
        if loading is not None:
            self.status.show(state="loading", model=loading, device="")
        elif session is None:
            self.status.show(state="error")
        else:
            if self.generating and self.telling_with is not session:
                self.action_stop()  # the story of the model loaded before
            device = f"{session.device.type} · {session.dtype_name}"
            self.status.show(state="ready", model=session.name, device=device)
            self.query_one(SamplingPanel).use_model(session.sampling)  # the model's recommended settings

    def watch_generating(self, generating: bool) -> None:
        if not generating:
            self.telling_with = None  # the story ended: its model may go once another loads
        self.publish()

    def publish(self) -> None:
        """Keep the shared state's view of the studio current (the look-inside view reads it): the story, or
        before any story the prompt being written, and whether a story is being told."""
        story = self.story
        if not story.prompt and not story.pieces:
            shown = Source(self.prompt_text, "", ())
        else:
            reopened = bool(story.pieces) and story.pieces[0].token is None  # a saved story: text without its ids
            sampled = None if reopened else tuple(p.token.id for p in story.pieces if p.token is not None)
            shown = Source(story.prompt, story.text, sampled)
        self.shared.shown, self.shared.telling = shown, self.generating

    # ---- sampling ------------------------------------------------------------------------------------

    def sampling_params(self) -> SamplingParams:
        """SamplingParams from the sliders; a random seed is drawn (and recorded) when none is fixed."""
        return self.query_one(SamplingPanel).params()

    def apply_params(self, params: dict, seed: object) -> list[str]:
        """Move the sliders to saved parameters and fix seed (SamplingPanel.apply); notes on what did not fit."""
        return self.query_one(SamplingPanel).apply(params, seed)

    # ---- actions -------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop only while telling; retell/continue only while idle; telling needs a model (else dimmed)."""
        if action == "stop":
            return self.generating
        if action in ("regenerate", "continue_story") and self.generating:
            return False
        if action in ("generate", "regenerate", "continue_story", "compare", "look_inside"):
            return True if self.shared.session is not None else None
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
        self.query_one(StoryPane).restart("")
        self.query_one(InspectorPanel).show(None)
        self.prompt_text = ""
        self.query_one("#prompt", TextArea).focus()
        self.status.show(tokens=0, tokens_per_s=None, ttft_s=None)

    def action_toggle_inspector(self) -> None:
        """Colour tokens by probability and show alternatives of the selected token."""
        story = self.story
        story.inspect = not story.inspect
        self.query_one(InspectorPanel).display = story.inspect
        if story.inspect and story.cursor < 0 and (indices := story.token_indices):
            story.cursor = indices[0]
        self.notify(
            "Token inspector on: click a token or use ← → in the story"
            if story.inspect
            else "Token inspector off",
            timeout=2,
        )

    def action_compare(self) -> None:
        """Tell the prompt 2–4 times side by side with the current settings (see screens/compare.py)."""
        from helium_tui.screens.compare import CompareScreen

        session = self.shared.session
        if session is None:
            self.notify("No model is loaded yet.", severity="warning")
            return
        self.action_stop()
        fixed = self.query_one(SeedRow).fixed is not None
        compare = CompareScreen(self.prompt_text, self.sampling_params(), session, seed_fixed=fixed)
        self.app.push_screen(compare)

    def action_look_inside(self) -> None:
        """Look inside the model on the story (see screens/look_inside.py)."""
        from helium_tui.screens.look_inside import LookInsideScreen

        self.publish()
        self.app.push_screen(LookInsideScreen())

    # ---- generation ----------------------------------------------------------------------------------

    def start(self, prompt: str, keep: bool, params: SamplingParams | None = None) -> Run | None:
        """Begin a run from prompt; keep=True appends to the current story instead of starting anew."""
        session = self.shared.session
        if session is None:
            self.notify("No model is loaded yet.", severity="warning")
            return None
        self.action_stop()
        run = Run(prompt, params or self.sampling_params(), session.name)
        self.telling_with = session
        self.run = run
        if not keep:
            self.query_one(StoryPane).restart(prompt)
            self.query_one(InspectorPanel).show(None)
        self.generating = True
        self.status.show(state="generating", tokens=self._tokens_shown(), tokens_per_s=None, ttft_s=None)
        start_daemon("story", lambda: self._tell(run, session.generator))
        return run

    def _tokens_shown(self) -> int:
        return sum(1 for p in self.story.pieces if p.token is not None)

    def _tell(self, run: Run, generator: Generator) -> None:
        """Stream one story (daemon thread); results reach the UI as Flush/Done/Failed messages."""
        try:  # the generator tells one story at a time: this waits while an earlier one winds down
            stream = generator.stream(run.prompt, run.params, cancel=run.cancel, inspect_top=INSPECT_TOP)
            for delta in stream:
                if run.buffer.push(delta):
                    self.post_message(self.Flush(run))
            assert stream.result is not None
            self.post_message(self.Done(run, stream.result))
        except Exception as exc:  # noqa: BLE001 - any failure becomes a notification; the app keeps running
            line = str(exc).strip().splitlines()
            self.post_message(self.Failed(run, f"{type(exc).__name__}: {line[0] if line else ''}"))

    def _show(self, run: Run) -> None:
        """Move buffered deltas of run into the story pane and update the live numbers."""
        deltas = run.buffer.drain()
        if not deltas or run is not self.run:
            return
        now = time.perf_counter()
        if run.first_token is None:
            run.first_token = now
        self.query_one(StoryPane).append([Piece(d.text, d.token) for d in deltas])
        self.publish()
        tokens = self._tokens_shown()
        span = now - run.first_token
        self.status.show(
            tokens=tokens,
            ttft_s=run.first_token - run.started,
            tokens_per_s=(tokens - 1) / span if span > 0 and tokens > 1 else None,
        )

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
        self.status.show(
            state="stopped" if result.finish_reason == "cancelled" else "ready",
            tokens=self._tokens_shown(),
            tokens_per_s=result.tokens_per_s,
            ttft_s=result.ttft_s,
        )
        if result.generated_tokens:
            story, tokens = self.story, self._tokens_shown()
            error = self.shared.save_story(
                story.prompt, story.text, run.params, run.model, tokens, result.finish_reason
            )
            if error is not None:
                self.notify(terminal_safe(error), severity="warning", markup=False)

    @on(Failed)
    def _on_failed(self, message: Failed) -> None:
        if message.run is not self.run:
            return
        self.generating = False
        self.status.show(state="error")
        self.notify(
            terminal_safe(message.error), title="Generation failed", severity="error", timeout=8, markup=False
        )

    @on(ShowStory)
    def _show_story(self, message: ShowStory) -> None:
        """Show a saved story (prompt + text) and its parameters, ready to continue or retell."""
        self.action_stop()
        self.run = None
        self.generating = False
        self.query_one(StoryPane).restart(message.prompt)
        self.story.extend([Piece(message.text)] if message.text else [])
        self.prompt_text = message.prompt
        self.publish()
        notes = self.apply_params(message.params, message.seed)
        self.status.show(tokens=0, tokens_per_s=None, ttft_s=None)
        if notes:
            self.notify(
                "Some saved settings did not fit the sliders: " + "; ".join(notes),
                timeout=8,
                severity="warning",
                markup=False,
            )

    @on(StoryView.TokenSelected)
    def _on_token(self, message: StoryView.TokenSelected) -> None:
        self.query_one(InspectorPanel).show(message.token, message.index)
