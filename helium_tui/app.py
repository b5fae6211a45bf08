"""The Helium story studio app: loads a model in the background and hosts the screens.

`HeliumApp` owns the loaded `Session` and the story store; `run_app()` is what `helium` (no subcommand) runs.
The command palette and f1 list the bindings of the screen they are opened on (see `get_system_commands`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
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
from helium_tui.guarded_app import GuardedApp
from helium_tui.safe_text import terminal_safe
from helium_tui.screens.help import HelpScreen
from helium_tui.screens.models import ModelPicker
from helium_tui.screens.no_model import NoModelScreen
from helium_tui.screens.studio import StudioScreen
from helium_tui.streaming import exit_now_if_busy, start_daemon

if TYPE_CHECKING:
    from engine.generation.sampling import SamplingParams
    from engine.generation.session import Session


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def optional_module(name: str) -> Any | None:
    """Import a part of the app that may not be installed yet (None when the module itself is missing)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


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
        self.quantize_spec = quantize  # auto (as the bundle stores it), none, int8; the model picker switches it
        self.threads = threads  # torch's CPU threads (None: HELIUM_THREADS, else torch's default)
        self.stories_dir = Path(stories_dir) if stories_dir else None  # None: the store's default
        self.session: Session | None = None  # the loaded model
        self.studio = StudioScreen()  # the main screen (always at the bottom of the stack)
        self.loading: str | None = None  # the model being loaded (None: no load in flight)
        self.compare_session: Session | None = None  # the other model the compare view loaded last
        self.load_error: str | None = None  # a failed load not shown yet (another screen was up)
        self.load_seq = 0  # counts loads; a thread's result counts only if no newer load began
        self._store: Any | None = None
        self.last_run_dir: Path | None = None  # the run the training monitor last watched (it re-attaches)

    # ---- screens -------------------------------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return self.studio

    def on_ready(self) -> None:
        self.load_model(self.model_spec)  # once the studio is composed: it shows the load

    @property
    def store(self) -> Any | None:
        """The story library (`StoryStore`), or None while the library module is not installed."""
        if self._store is None:
            library = optional_module("helium_tui.library")
            if library is not None:
                self._store = library.StoryStore(self.stories_dir)
        return self._store

    def open_story(self, story: Any) -> None:
        """Load a saved story (prompt + text + parameters) back into the studio."""
        while self.screen is not self.studio and len(self.screen_stack) > 1:
            self.pop_screen()
        params = story.params if isinstance(story.params, dict) else {}
        self.studio.load_story(story.prompt, story.text, params, story.seed)

    def save_story(self, prompt: str, text: str, params: SamplingParams, model: str, tokens: int,
                   finish_reason: str, extra: dict | None = None) -> bool:
        """Keep a story in the library (when there is one); extra adds to its params. True when saved."""
        store = self.store
        if store is None:
            return False
        from helium_tui.library import Story

        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        saved = {**asdict(params), **(extra or {})}
        story = Story(prompt=prompt, text=text, params=saved, model=model, seed=params.seed, created=created,
                      tokens=tokens, finish_reason=finish_reason)  # fmt: skip
        try:
            store.save(story)
        except (OSError, ValueError) as exc:
            self.notify(terminal_safe(f"Could not save the story: {exc}"), severity="warning", markup=False)
            return False
        return True

    @property
    def busy(self) -> bool:
        """A model is loading, or a story (or a comparison) is being told."""
        return self.loading is not None or any(getattr(s, "generating", False) for s in self.screen_stack)

    # ---- models --------------------------------------------------------------------------------------

    def load_model(self, spec: str | None) -> None:
        """Open a model on a daemon thread; the studio shows a loading indicator meanwhile."""
        from engine.generation.session import open_session

        self.load_seq += 1
        seq, name = self.load_seq, Path(spec).name if spec else "default model"
        self.loading, self.load_error = name, None
        self.studio.set_loading(name)
        device, dtype, compile, threads = self.device_spec, self.dtype_spec, self.compile, self.threads
        quantize = None if self.quantize_spec == "auto" else self.quantize_spec

        def load() -> None:
            try:
                session = open_session(
                    spec, device=device, dtype=dtype, compile=compile, quantize=quantize, threads=threads
                )
                if compile:
                    self.post_message(self.ModelCompiling(seq, name))
                    session.generator.warm_up()
            except (BundleError, ValueError, OSError) as exc:
                self.post_message(self.ModelFailed(seq, one_line(exc)))
            except Exception as exc:  # noqa: BLE001 - a broken bundle must not take the app down
                self.post_message(self.ModelFailed(seq, f"{type(exc).__name__}: {one_line(exc)}"))
            else:
                self.post_message(self.ModelLoaded(seq, session))

        start_daemon("load", load)

    @on(ModelCompiling)
    def _compiling(self, message: ModelCompiling) -> None:
        if message.seq == self.load_seq:
            self.studio.set_loading(f"{message.name} · compiling")

    @on(ModelLoaded)
    def _loaded(self, message: ModelLoaded) -> None:
        if message.seq != self.load_seq:
            return  # a newer load has begun
        self.loading = None
        session = message.session
        switched = self.session is not None
        self.session = session
        if isinstance(self.screen, NoModelScreen):
            self.pop_screen()
        self.studio.set_session(session)
        if switched:
            weights = " (int8 weights)" if session.quantize == "int8" else ""
            self.notify(terminal_safe(f"Loaded {session.name}{weights}"), timeout=3, markup=False)

    @on(ModelFailed)
    def _load_failed(self, message: ModelFailed) -> None:
        if message.seq != self.load_seq:
            return
        self.loading = None
        error = terminal_safe(message.error)
        self.studio.set_session(None)
        if self.session is not None:
            self.notify(error, title="Could not load the model", severity="error", timeout=8, markup=False)
        elif isinstance(self.screen, NoModelScreen):
            self.notify(error, title="Still no model", severity="error", timeout=8, markup=False)
        elif self.screen is self.studio:
            self.push_screen(NoModelScreen(error))
        else:  # the user went elsewhere (e.g. to train a model): the guide waits for their return
            self.load_error = error

    def show_load_error(self) -> None:
        """Over the studio: explain a load that failed while another screen was up (see _load_failed)."""
        if self.load_error is not None and self.session is None and self.loading is None:
            self.push_screen(NoModelScreen(self.load_error))
        self.load_error = None

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
        int8 = self.session.quantize == "int8" if self.session else self.quantize_spec == "int8"
        picker = ModelPicker(info.path if info else None, info, int8=int8)

        def chosen(path: str | None) -> None:
            if path is None:
                return
            if picker.int8 != int8:  # the weights switch changed: it applies to this load and the next ones
                self.quantize_spec = "int8" if picker.int8 else "none"
            if info is None or Path(path).resolve() != info.path.resolve() or picker.int8 != int8:
                self.load_model(path)

        self.push_screen(picker, chosen)

    # ---- other screens -------------------------------------------------------------------------------

    def action_help(self) -> None:
        """The keys and the guide of the screen we are on."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_library(self) -> None:
        """The story library (saved stories)."""
        module = optional_module("helium_tui.screens.library")
        if module is None:
            self.notify("The story library is not part of this build yet.", severity="warning")
        elif not isinstance(self.screen, module.LibraryScreen):
            self.push_screen(module.LibraryScreen())

    def action_training(self) -> None:
        """The training monitor."""
        module = optional_module("helium_tui.screens.training.screen")
        if module is None:
            self.notify("The training monitor is not part of this build yet.", severity="warning")
        elif not isinstance(self.screen, module.TrainingScreen):
            self.push_screen(module.TrainingScreen())

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
