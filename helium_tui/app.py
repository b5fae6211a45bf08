"""The Helium story studio app: loads a model in the background and hosts the screens.

`HeliumApp` owns the `AppState` its screens share (helium_tui/app_state.py) and is the one place that moves
between screens: screens post their events as messages, the app answers them. `run_app()` is what `helium` (no
subcommand) runs. The command palette and f1 list the bindings of the screen they are opened on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen

from engine.bundles.registry import ModelInfo
from engine.errors import BundleError
from helium_tui.app_state import AppState, ModelChanged, ShowStory
from helium_tui.guarded_app import GuardedApp
from helium_tui.library import Story, StoryStore
from helium_tui.safe_text import terminal_safe
from helium_tui.screens.compare import CompareScreen
from helium_tui.screens.help import HelpScreen
from helium_tui.screens.library import LibraryScreen
from helium_tui.screens.models import ModelPicker
from helium_tui.screens.no_model import NoModelScreen
from helium_tui.screens.studio import StudioScreen
from helium_tui.screens.training.screen import TrainingScreen
from helium_tui.streaming import exit_now_if_busy, start_daemon

if TYPE_CHECKING:
    from engine.generation.session import Session


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class HeliumApp(GuardedApp):
    """A terminal story studio around small story-telling transformers (ctrl+q and text safety: GuardedApp)."""

    TITLE = "Helium"
    CSS_PATH = "helium.tcss"
    BINDINGS = [  # shown in every footer: f1 only (the studio shows its own way to the other screens)
        Binding("ctrl+o", "models", "Models", id="models", show=False, tooltip="Choose a model"),
        Binding("ctrl+l", "library", "Library", id="library", show=False, tooltip="The story library"),
        Binding("ctrl+t", "training", "Training", id="training", show=False, tooltip="The training monitor"),
        Binding("f1", "help", "Help", id="help", tooltip="The keys and a guide to this screen"),
    ]

    @dataclass
    class ModelLoaded(Message):
        """A model load finished (posted by its thread)."""

        seq: int  # which load (only the newest one counts)
        session: Session

    @dataclass
    class ModelFailed(Message):
        """A model load failed (posted by its thread)."""

        seq: int  # which load
        error: str  # one line for the user

    @dataclass
    class ModelCompiling(Message):
        """A loaded model is compiling its decode step (posted by the load thread)."""

        seq: int  # which load
        name: str  # the model's name

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        stories_dir: str | Path | None = None,
        compile: bool = False,
        quantize: str = "auto",
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.model_spec = model  # what --model asked for (None: the default model)
        self.device_spec = device  # auto, cpu, cuda, mps
        self.dtype_spec = dtype  # auto, float32, bfloat16
        self.compile = compile  # torch.compile the decode step (compiled while the model loads)
        self.quantize_spec = quantize  # auto (as the bundle stores it), none, int8, int4; the model picker switches it
        self.threads = threads  # torch's CPU threads (None: HELIUM_THREADS, else torch's default)
        stories = StoryStore(Path(stories_dir) if stories_dir else None)  # None: the store's default folder
        self.state = AppState(stories)  # what the screens share
        self.studio = StudioScreen()  # the main screen (always at the bottom of the stack)
        self.load_error: str | None = None  # a failed load not shown yet (another screen was up)
        self.load_seq = 0  # counts loads; a thread's result counts only if no newer load began

    # ---- screens -------------------------------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return self.studio

    def on_ready(self) -> None:
        self.screen_change_signal.subscribe(self, self._screen_changed)
        self.load_model(self.model_spec)  # once the studio is composed: it shows the load

    @property
    def session(self) -> Session | None:
        """The loaded model (the shared state's)."""
        return self.state.session

    def open_story(self, story: Story) -> None:
        """Load a saved story (prompt + text + parameters) back into the studio, on top again."""
        params = story.params if isinstance(story.params, dict) else {}
        self.show_in_studio(ShowStory(story.prompt, story.text, params, story.seed))

    def show_in_studio(self, story: ShowStory) -> None:
        """Close every screen above the studio and show it story."""
        while self.screen is not self.studio and len(self.screen_stack) > 1:
            self.pop_screen()
        self.studio.post_message(story)

    @on(LibraryScreen.Opened)
    def _story_opened(self, message: LibraryScreen.Opened) -> None:
        self.open_story(message.story)

    @on(CompareScreen.Kept)
    def _variant_kept(self, message: CompareScreen.Kept) -> None:
        params = asdict(message.params)  # the studio keeps its own seed: retelling tells a new story alike
        self.show_in_studio(ShowStory(message.prompt, message.text, params, None))

    @property
    def busy(self) -> bool:
        """A model is loading, or a story (or a comparison) is being told."""
        telling = any(getattr(s, "generating", False) for s in self.screen_stack)
        return self.state.loading is not None or telling

    # ---- models --------------------------------------------------------------------------------------

    def load_model(self, spec: str | None) -> None:
        """Open a model on a daemon thread; the studio shows a loading indicator meanwhile."""
        from engine.generation.session import open_session

        self.load_seq += 1
        seq, name = self.load_seq, Path(spec).name if spec else "default model"
        self.load_error = None
        self._show_loading(name)
        device, dtype, compile, threads = self.device_spec, self.dtype_spec, self.compile, self.threads
        quantize = None if self.quantize_spec == "auto" else self.quantize_spec

        def load() -> None:
            try:
                session = open_session(
                    spec, device=device, dtype=dtype, compile=compile, quantize=quantize, threads=threads
                )
                if session.compile:  # not where the native runtime decodes (session.compile_note)
                    self.post_message(self.ModelCompiling(seq, name))
                    session.generator.warm_up()
            except (BundleError, ValueError, OSError) as exc:
                self.post_message(self.ModelFailed(seq, one_line(exc)))
            except Exception as exc:  # noqa: BLE001 - a broken bundle must not take the app down
                self.post_message(self.ModelFailed(seq, f"{type(exc).__name__}: {one_line(exc)}"))
            else:
                self.post_message(self.ModelLoaded(seq, session))

        start_daemon("load", load)

    def _show_loading(self, loading: str | None) -> None:
        """Record what is loading (None: nothing) and have the studio show it."""
        self.state.loading = loading
        self.studio.post_message(ModelChanged())

    @on(ModelCompiling)
    def _compiling(self, message: ModelCompiling) -> None:
        if message.seq == self.load_seq:
            self._show_loading(f"{message.name} · compiling")

    @on(ModelLoaded)
    def _loaded(self, message: ModelLoaded) -> None:
        if message.seq != self.load_seq:
            return  # a newer load has begun
        session = message.session
        switched = self.state.session is not None
        self.state.session = session
        self._show_loading(None)
        if isinstance(self.screen, NoModelScreen):
            self.pop_screen()
        if switched:
            weights = f" ({session.quantize} weights)" if session.quantize != "none" else ""
            self.notify(terminal_safe(f"Loaded {session.name}{weights}"), timeout=3, markup=False)

    @on(ModelFailed)
    def _load_failed(self, message: ModelFailed) -> None:
        if message.seq != self.load_seq:
            return
        self._show_loading(None)
        error = terminal_safe(message.error)
        if self.session is not None:
            self.notify(error, title="Could not load the model", severity="error", timeout=8, markup=False)
        elif isinstance(self.screen, NoModelScreen):
            self.notify(error, title="Still no model", severity="error", timeout=8, markup=False)
        elif self.screen is self.studio:
            self.push_screen(NoModelScreen(error))
        else:  # the user went elsewhere (e.g. to train a model): the guide waits for their return
            self.load_error = error

    def _screen_changed(self, screen: Screen) -> None:
        """Back on the studio: explain a load that failed while another screen was up (see _load_failed)."""
        if screen is not self.studio or self.load_error is None:
            return
        if self.session is None and self.state.loading is None:
            self.push_screen(NoModelScreen(self.load_error))
        self.load_error = None

    def action_retry_load(self) -> None:
        """Load the model given at start-up again (the no-model screen's r)."""
        self.load_model(self.model_spec)

    def current_model_info(self) -> ModelInfo | None:
        """The loaded model described like an installed one."""
        if self.session is None or self.session.bundle.path is None:
            return None
        bundle = self.session.bundle
        params = bundle.config.parameters
        return ModelInfo(bundle.name, bundle.path, params, bundle.config.vocab_size, "loaded", bundle.metadata)

    def action_models(self) -> None:
        """Open the model picker; a choice loads in the background."""
        if isinstance(self.screen, ModelPicker):
            return
        info = self.current_model_info()
        weights = self.session.quantize if self.session else self.quantize_spec
        weights = weights if weights in ("int8", "int4") else "none"
        picker = ModelPicker(info.path if info else None, info, weights=weights)

        def chosen(path: str | None) -> None:
            if path is None:
                return
            if picker.weights != weights:  # the weights changed: they apply to this load and the next ones
                self.quantize_spec = picker.weights
            if info is None or Path(path).resolve() != info.path.resolve() or picker.weights != weights:
                self.load_model(path)

        self.push_screen(picker, chosen)

    # ---- other screens -------------------------------------------------------------------------------

    def action_help(self) -> None:
        """The keys and the guide of the screen we are on."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_library(self) -> None:
        """The story library (saved stories)."""
        if not isinstance(self.screen, LibraryScreen):
            self.push_screen(LibraryScreen(self.state.store))

    def action_training(self) -> None:
        """The training monitor."""
        if not isinstance(self.screen, TrainingScreen):
            self.push_screen(TrainingScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p): Textual's own commands, then every enabled key of screen by name.

        A screen may add commands without a key through a `palette_commands()` method.
        """
        yield from super().get_system_commands(screen)
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            if binding.system or not binding.description or not active.enabled or binding.action in seen:
                continue
            seen.add(binding.action)
            help_text = f"{binding.tooltip or binding.description} ({self.get_key_display(binding)})"
            run = partial(self.run_action, binding.action, active.node)
            yield SystemCommand(binding.description, help_text, run)
        extra = getattr(screen, "palette_commands", None)
        if callable(extra):
            yield from extra()


def run_app(**kwargs: Any) -> None:
    """Run the studio until the user quits (kwargs: see HeliumApp); quitting never waits for torch work."""
    app = HeliumApp(**kwargs)
    app.run()
    exit_now_if_busy(app.return_code or 0)
