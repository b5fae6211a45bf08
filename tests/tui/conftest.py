"""Fixtures for the studio tests: a second tiny bundle, a bundle without a start token, isolated model dirs,
and waits that always end: each polls a named condition and fails after DEADLINE_S with what it waited for.

Every TUI test sees an empty HELIUM_HOME and no shipped models unless it installs some.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from textual.app import App
from textual.widgets import Input, Static

from engine.bundles.bundle import save_bundle
from engine.generation.generate import Delta, Generator, Stream
from engine.generation.sampling import SamplingParams
from engine.model.tinyslm import TinySLM
from engine.model.tokenizer import TextTokenizer
from helium_tui.app import HeliumApp
from tests.conftest import TINY
from tests.fakes import fake_trainer_kwargs

DEADLINE_S = 120.0  # the longest any wait may take (a loaded 2-core box), after which the test fails


@pytest.fixture(autouse=True)
def isolated_models(helium_home, tmp_path, monkeypatch) -> Path:
    """No shipped models and an empty user dir, so listings and the default model are deterministic."""
    empty = tmp_path / "no-shipped-assets"
    empty.mkdir()
    monkeypatch.setattr("engine.bundles.registry.assets_dir", lambda: empty)
    return helium_home


@pytest.fixture
def installed_second(helium_home, tiny_tokenizer) -> Path:
    """A second (different) tiny bundle installed by name as 'tiny-two'."""
    torch.manual_seed(1)
    model = TinySLM(
        TINY.with_(vocab_size=tiny_tokenizer.vocab_size, d_model=32, n_head=2, n_kv_head=1)
    ).eval()
    return save_bundle(helium_home / "models" / "tiny-two", model, tiny_tokenizer, {"data": "synthetic"})


@pytest.fixture
def no_bos_bundle(tmp_path, tiny_model, tiny_tokenizer) -> Path:
    """A bundle whose tokenizer has no start token: an empty prompt cannot be continued."""
    tok = TextTokenizer(tiny_tokenizer.hf, None, tiny_tokenizer.eos_id)
    return save_bundle(tmp_path / "no-bos", tiny_model, tok, {"data": "synthetic"})


@pytest.fixture
def fake_runner(tmp_path) -> dict:
    """start_run keyword arguments that run the fake trainer (tests/fakes.py, a real subprocess) slowly
    enough for the screen to watch it, with no bundle at the end."""
    kwargs = fake_trainer_kwargs(tmp_path)
    kwargs["env"].update(FAKE_STEP_S="0.05", FAKE_BUNDLE="")
    return kwargs


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A directory that passes the form's 'prepared data dir' check (the fake trainer never reads it)."""
    d = tmp_path / "prepared"
    d.mkdir()
    (d / "manifest.json").write_text('{"format": "helium-data/1"}')
    return d


def make_app(model: Path | str | None, **kwargs) -> HeliumApp:
    """The studio on CPU in float32 (exact, deterministic numbers)."""
    return HeliumApp(model=str(model) if model else None, device="cpu", dtype="float32", **kwargs)


def greedy(studio, max_tokens: int) -> None:
    """Sliders for a deterministic story: temperature 0, max_tokens."""
    studio.param("temperature").value = 0
    studio.param("max_tokens").value = max_tokens


async def until(pilot, condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    """Poll condition between UI updates; fail naming what was awaited if it does not hold within timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.01)


async def loaded(app: HeliumApp, pilot) -> None:
    """Wait until a model is loaded (or the no-model screen is up) and nothing is loading or being told."""
    from helium_tui.screens.no_model import NoModelScreen

    await until(pilot, lambda: app.session is not None or isinstance(app.screen, NoModelScreen), "a model")
    await until(pilot, lambda: not app.busy, "the app to be idle (no load, no story in flight)")
    await pilot.pause()


async def tell(pilot, key: str = "ctrl+g"):
    """Press key in the studio and wait for the story it starts to end; returns its GenerationResult."""
    studio = pilot.app.studio
    before = studio.run
    await pilot.press(key)
    await until(pilot, lambda: studio.run is not before, f"{key} to start a story")
    run = studio.run
    await until(pilot, lambda: not studio.generating or studio.run is not run, "the story to end")
    await pilot.pause()
    assert studio.run is run and studio.last_result is not None
    return studio.last_result


class HeldGenerator:
    """A real Generator whose stories stop after `hold_at` deltas until released (or cancelled).

    Only its public `stream` is used by the studio; everything else is the wrapped generator's.
    """

    def __init__(self, inner: Generator, hold_at: int) -> None:
        self.inner = inner  # the real generator
        self.hold_at = hold_at  # deltas streamed before holding
        self.release = threading.Event()  # set to let the story go on
        self.holding = threading.Event()  # set while a story waits at hold_at

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def stream(
        self, prompt: str, params: SamplingParams = SamplingParams(), cancel=None, inspect_top: int = 0
    ):
        return HeldStream(
            self, self.inner.stream(prompt, params, cancel=cancel, inspect_top=inspect_top), cancel
        )


class HeldStream:
    """The wrapped Stream's deltas, pausing at the generator's hold point; `result` as the real one."""

    def __init__(self, held: HeldGenerator, stream: Stream, cancel: threading.Event | None) -> None:
        self.held, self.stream, self.cancel = held, stream, cancel

    @property
    def result(self):
        return self.stream.result

    def __iter__(self) -> Iterator[Delta]:
        for i, delta in enumerate(self.stream):
            if i == self.held.hold_at:
                self.held.holding.set()
                while not self.held.release.wait(0.01) and not (self.cancel and self.cancel.is_set()):
                    pass
                self.held.holding.clear()
            yield delta


class StuckGenerator:
    """A generator whose stories first block for `stuck_s`, deaf to cancel (a long prefill, a compile)."""

    def __init__(self, inner: Generator, stuck_s: float) -> None:
        self.inner, self.stuck_s = inner, stuck_s
        self.started = threading.Event()  # set when a story is stuck

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def stream(
        self, prompt: str, params: SamplingParams = SamplingParams(), cancel=None, inspect_top: int = 0
    ):
        self.started.set()
        time.sleep(self.stuck_s)  # ignores cancel, as a torch call would
        return self.inner.stream(prompt, params, cancel=cancel, inspect_top=inspect_top)


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what must never reach a widget (\t and \n may)


def texts_shown(app: App) -> dict[str, str]:
    """Every string the app shows or holds for display, by where it is: titles, notifications, and for each
    widget of the screen its rendering, input value, placeholder, border titles and tooltip."""
    found = {"app.title": app.title, "app.sub_title": app.sub_title}
    found |= {f"notification {i}": f"{n.title} {n.message}" for i, n in enumerate(app._notifications)}
    for screen in app.screen_stack:
        found[f"{screen!r}.title"] = f"{screen.title or ''} {screen.sub_title or ''}"
        for widget in screen.walk_children(with_self=False):
            name = repr(widget)
            if isinstance(widget, Input):
                found[f"{name}.value"], found[f"{name}.placeholder"] = widget.value, widget.placeholder
            found[f"{name}.borders"] = f"{widget.border_title or ''} {widget.border_subtitle or ''}"
            found[f"{name}.tooltip"] = str(widget.tooltip or "")
            if isinstance(widget, Static):
                found[f"{name}.render"] = str(widget.render())
    return found


def terminal_output(app: App) -> str:
    """What the terminal receives to draw the whole current screen (Textual's own CSI sequences included)."""
    return app.screen._compositor.render_full_update().render_segments(app.console)


def assert_no_control_characters(app: App) -> None:
    """No widget holds a control character, and the screen's bytes hold no OSC (retitle, clipboard) or BEL."""
    bad = {where: text for where, text in texts_shown(app).items() if CONTROL.search(text)}
    assert not bad, f"control characters reach widgets: {bad}"
    output = terminal_output(app)
    for sequence in ("\x1b]", "\x07", "\x9d", "\x9b", "\x1bP", "\x1b_"):  # OSC, BEL, C1 OSC/CSI, DCS, APC
        assert sequence not in output, f"{sequence!r} reaches the terminal"
