"""The Helium story studio app: loads a model in the background and hosts the screens.

`HeliumApp` owns the loaded `Session` and the story store; `run_app()` is what `helium` (no subcommand) runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from engine.errors import BundleError
from engine.registry import ModelInfo
from helium_tui.screens.help import HelpScreen
from helium_tui.screens.models import ModelPicker
from helium_tui.screens.no_model import NoModelScreen
from helium_tui.screens.studio import StudioScreen

if TYPE_CHECKING:
    from engine.session import Session


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


class HeliumApp(App[None]):
    """A terminal story studio around small story-telling transformers."""

    TITLE = "Helium"
    CSS_PATH = "helium.tcss"
    BINDINGS = [
        Binding("ctrl+o", "models", "Models", id="models"),
        Binding("ctrl+l", "library", "Library", id="library", show=False),
        Binding("ctrl+t", "training", "Training", id="training", show=False),
        Binding("f1", "help", "Help", id="help"),
    ]

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        stories_dir: str | Path | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.model_spec = model  # what --model asked for (None: the default model)
        self.device_spec = device  # auto, cpu, cuda, mps
        self.dtype_spec = dtype  # auto, float32, bfloat16
        self.compile = compile  # torch.compile the decode step (compiled while the model loads)
        self.stories_dir = Path(stories_dir) if stories_dir else None  # None: the store's default
        self.session: Session | None = None  # the loaded model
        self.studio = StudioScreen()  # the main screen (always at the bottom of the stack)
        self._store: Any | None = None
        self.last_run_dir: Path | None = None  # the run the training monitor last watched (it re-attaches)

    # ---- screens -------------------------------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return self.studio

    def on_mount(self) -> None:
        self.load_model(self.model_spec)

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
        self.studio.load_story(story.prompt, story.text, dict(story.params), story.seed)

    # ---- models --------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="load", exit_on_error=False)
    def load_model(self, spec: str | None) -> None:
        """Open a model in a background thread; the studio shows a loading indicator meanwhile."""
        from engine.session import open_session

        name = Path(spec).name if spec else "default model"
        self.call_from_thread(self.studio.set_loading, name)
        try:
            session = open_session(spec, device=self.device_spec, dtype=self.dtype_spec, compile=self.compile)
            if self.compile:
                self.call_from_thread(self.studio.set_loading, f"{name} · compiling")
                session.generator.warm_up()
        except (BundleError, ValueError, OSError) as exc:
            self.call_from_thread(self._load_failed, one_line(exc))
        except Exception as exc:  # noqa: BLE001 - a broken bundle must not take the app down
            self.call_from_thread(self._load_failed, f"{type(exc).__name__}: {one_line(exc)}")
        else:
            self.call_from_thread(self._loaded, session)

    def _loaded(self, session: Session) -> None:
        switched = self.session is not None
        self.session = session
        if isinstance(self.screen, NoModelScreen):
            self.pop_screen()
        self.studio.set_session(session)
        if switched:
            self.notify(f"Loaded {session.name}", timeout=3)

    def _load_failed(self, error: str) -> None:
        self.studio.set_session(None)
        if self.session is not None:
            self.notify(error, title="Could not load the model", severity="error", timeout=8)
        elif isinstance(self.screen, NoModelScreen):
            self.notify(error, title="Still no model", severity="error", timeout=8)
        else:
            self.push_screen(NoModelScreen(error))

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

        def chosen(path: str | None) -> None:
            if path is not None and (info is None or Path(path).resolve() != info.path.resolve()):
                self.load_model(path)

        self.push_screen(ModelPicker(info.path if info else None, info), chosen)

    # ---- other screens -------------------------------------------------------------------------------

    def action_help(self) -> None:
        """Keys and a short guide."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_library(self) -> None:
        """The story library (saved stories)."""
        module = optional_module("helium_tui.screens.library")
        if module is None:
            self.notify("The story library is not part of this build yet.", severity="warning")
        elif not isinstance(self.screen, module.LibraryScreen):
            self.push_screen(module.LibraryScreen())

    def action_training(self) -> None:
        """The training monitor."""
        module = optional_module("helium_tui.screens.training")
        if module is None:
            self.notify("The training monitor is not part of this build yet.", severity="warning")
        elif not isinstance(self.screen, module.TrainingScreen):
            self.push_screen(module.TrainingScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every studio action by name in the command palette (ctrl+p)."""
        yield from super().get_system_commands(screen)
        studio = self.studio
        yield SystemCommand("Generate", "Tell a story from the prompt (ctrl+g)", studio.action_generate)
        yield SystemCommand("Stop", "Stop the story being told (escape)", studio.action_stop)
        yield SystemCommand("Retell", "Same prompt again, new seed unless fixed (ctrl+r)", studio.action_regenerate)
        yield SystemCommand("Continue story", "The story so far becomes the prompt (ctrl+n)",
                            studio.action_continue_story)
        yield SystemCommand("Clear", "Empty prompt and story (f8)", studio.action_clear)
        yield SystemCommand("Token inspector", "Colour tokens by probability (f2)", studio.action_toggle_inspector)
        yield SystemCommand("Models", "Choose and load a model (ctrl+o)", self.action_models)
        yield SystemCommand("Library", "Saved stories (ctrl+l)", self.action_library)
        yield SystemCommand("Training", "Training monitor (ctrl+t)", self.action_training)
        yield SystemCommand("Help", "Keys and a short guide (f1)", self.action_help)


def run_app(**kwargs: Any) -> None:
    """Run the studio until the user quits (kwargs: see HeliumApp)."""
    HeliumApp(**kwargs).run()
