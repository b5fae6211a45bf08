"""int8 and int4 weights in the studio: `helium --quantize int8|int4` loads them, and the model picker's `i` goes round
full precision, int8 and int4."""

from __future__ import annotations

import pytest
import torch

from helium_tui.screens.models import ModelPicker
from tests.tui.conftest import loaded, make_app, tell, until

SIZE = (100, 32)


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


async def open_picker(app, pilot) -> None:
    await pilot.press("ctrl+o")
    await until(pilot, lambda: isinstance(app.screen, ModelPicker), "the model picker")


async def test_the_picker_switches_int8_weights_and_reloads(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert app.session.quantize == "none"
        first = app.session
        await open_picker(app, pilot)
        assert app.screen.weights == "none"
        await pilot.press("i")
        assert app.screen.weights == "int8" and "int8" in str(app.screen.query_one("#picker-weights").render())
        await pilot.press("enter")  # the loaded model again: it reloads with int8 weights
        await until(pilot, lambda: app.session is not first, "the int8 reload")
        await loaded(app, pilot)
        assert app.session.quantize == "int8" and app.session.name == "tiny-bundle"
        app.studio.param("temperature").value = 0
        app.studio.param("max_tokens").value = 16
        assert (await tell(pilot)).generated_tokens > 0
        second = app.session
        await open_picker(app, pilot)
        assert app.screen.weights == "int8"  # it shows what is loaded
        await pilot.press("escape")  # closing changes nothing
        await until(pilot, lambda: app.screen is app.studio, "the studio")
        assert app.session is second
        await open_picker(app, pilot)
        await pilot.press("i")
        assert app.screen.weights == "int4" and "int4" in str(app.screen.query_one("#picker-weights").render())
        await pilot.press("enter")  # int4 now
        await until(pilot, lambda: app.session is not second, "the int4 reload")
        await loaded(app, pilot)
        assert app.session.quantize == "int4" and (await tell(pilot)).generated_tokens > 0
        await open_picker(app, pilot)
        await pilot.press("i")  # round to full precision
        assert app.screen.weights == "none"


async def test_quantize_int8_from_the_command_line(tiny_bundle):
    app = make_app(tiny_bundle, quantize="int8", threads=1)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert app.session.quantize == "int8" and app.session.threads == 1


async def test_quantize_int4_from_the_command_line_and_the_picker_keeps_it(tiny_bundle):
    app = make_app(tiny_bundle, quantize="int4", threads=1)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        assert app.session.quantize == "int4"
        first = app.session
        await open_picker(app, pilot)
        assert app.screen.weights == "int4"
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.studio, "the studio")
        assert app.session is first and app.session.quantize == "int4"
