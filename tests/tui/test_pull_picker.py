"""The model picker pulls catalog models from a (fake, local) Hub in the background, then loads them.

The catalog holds one synthetic llama2.c model served by tests/fake_hub.py through HF_ENDPOINT.
"""

from __future__ import annotations

import socket
import time

import pytest

from engine.hub import catalog
from engine.hub.catalog import human_bytes
from helium_tui.screens.models import PULLS, ModelPicker
from tests.fake_hub import FakeHub, Faults, isolate_hub
from tests.test_pull import REPO, synthetic_entry, synthetic_files, synthetic_tokenizer
from tests.tui.conftest import loaded, make_app

SIZE = (100, 32)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A FakeHub serving one synthetic model, which is the whole catalog."""
    isolate_hub(monkeypatch, tmp_path / "hf-home")
    files = synthetic_files(tmp_path)
    server = FakeHub({REPO: files})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    entry = synthetic_entry("synth", "synth/synth.bin", "synth/tok.bin", files, len(synthetic_tokenizer()[0]))
    monkeypatch.setattr("engine.hub.catalog.CATALOG", {"synth": entry})
    yield server
    server.stop()


async def until(pilot, condition, timeout: float = 30.0) -> None:
    """Let the app run until condition() holds (fails after timeout seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.02)


async def open_picker_on_synth(app, pilot) -> ModelPicker:
    await pilot.press("ctrl+o")
    await pilot.pause()
    picker = app.screen
    assert isinstance(picker, ModelPicker)
    assert [m.name for m in picker.models] == ["tiny-bundle"] and [e.name for e in picker.catalog] == [
        "synth"
    ]
    return picker


@pytest.mark.slow
async def test_picker_pulls_in_the_background_then_loads_the_model(tiny_bundle, hub, helium_home):
    hub.faults = Faults(stall_s=1.5)  # the download stops half-way for a while
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        picker = await open_picker_on_synth(app, pilot)
        options = picker.query_one("#picker-list")
        size = human_bytes(catalog.CATALOG["synth"].download_bytes)
        assert str(options.get_option("pull-synth").prompt).endswith(f"↓ {size}")
        await pilot.press("down", "enter")
        await until(pilot, lambda: app in PULLS and picker.query_one("#picker-pull").display)
        assert "downloading…" in str(options.get_option("pull-synth").prompt)
        assert "Downloading synth" in str(picker.query_one("#picker-pull-label").render())
        # mid-download the screen still answers keys
        await pilot.press("up")
        await pilot.pause()
        assert options.highlighted == 0 and app in PULLS
        await until(pilot, lambda: app.session is not None and app.session.name == "synth")
        assert app.screen is app.studio and app not in PULLS
        assert (helium_home / "models" / "synth" / "model.safetensors").is_file()
        assert [r for r in hub.gets() if r[1].endswith("synth.bin")]


@pytest.mark.slow
async def test_escape_leaves_the_download_running_and_it_says_when_done(tiny_bundle, hub, helium_home):
    hub.faults = Faults(stall_s=0.5)
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        await open_picker_on_synth(app, pilot)
        await pilot.press("down", "enter")
        await until(pilot, lambda: app in PULLS)
        await pilot.press("escape")
        await until(pilot, lambda: app not in PULLS)
        messages = [n.message for n in app._notifications]
        assert any("in the background" in m for m in messages)
        assert any(m.startswith("synth is downloaded and installed") for m in messages)
        assert app.session.name == "tiny-bundle"  # not switched behind the user's back
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert [m.name for m in app.screen.models] == ["tiny-bundle", "synth"] and app.screen.catalog == []


async def test_x_stops_the_download_and_nothing_is_installed(tiny_bundle, hub, helium_home):
    hub.faults = Faults(stall_s=1.0)
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        picker = await open_picker_on_synth(app, pilot)
        await pilot.press("down", "enter")
        await until(pilot, lambda: app in PULLS)
        worker = PULLS[app].worker
        await pilot.press("x")
        await pilot.pause()
        assert app not in PULLS and not picker.query_one("#picker-pull").display
        await until(pilot, lambda: worker.is_finished)
        assert not (helium_home / "models" / "synth").exists()
        assert any(n.message == "Stopped downloading synth" for n in app._notifications)


async def test_a_dead_endpoint_is_a_notification_naming_hf_endpoint(
    tiny_bundle, hub, helium_home, monkeypatch
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        picker = await open_picker_on_synth(app, pilot)
        await pilot.press("down", "enter")
        await until(
            pilot, lambda: app not in PULLS and any(n.severity == "error" for n in app._notifications)
        )
        error = next(n for n in app._notifications if n.severity == "error")
        assert error.title == "Could not download synth"
        assert error.message.startswith(
            f"cannot reach the Hugging Face Hub at http://127.0.0.1:{port} (HF_ENDPOINT)"
        )
        assert "\n" not in error.message
        assert app.screen is picker and not picker.query_one("#picker-pull").display
        assert not (helium_home / "models" / "synth").exists()


@pytest.mark.slow
async def test_quitting_mid_download_does_not_wait_for_it(tiny_bundle, hub, helium_home):
    hub.faults = Faults(stall_s=2.0)
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        await open_picker_on_synth(app, pilot)
        await pilot.press("down", "enter")
        await until(pilot, lambda: app in PULLS)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 2


@pytest.mark.slow
async def test_with_no_model_at_all_the_picker_pulls_one_and_the_studio_opens(hub, helium_home):
    from helium_tui.screens.no_model import NoModelScreen

    app = make_app(None)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert isinstance(app.screen, NoModelScreen)
        await pilot.press("ctrl+o")
        await pilot.pause()
        picker = app.screen
        assert (
            isinstance(picker, ModelPicker)
            and picker.models == []
            and [e.name for e in picker.catalog] == ["synth"]
        )
        await pilot.press("enter")
        await until(pilot, lambda: app.session is not None)
        assert app.session.name == "synth" and app.screen is app.studio
