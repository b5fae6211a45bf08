"""Per-model sampling defaults in the studio: the sliders start at the model's recommended settings, what the
user changed stays when another model loads, "Model defaults" goes back; saved stories keep every setting."""

from __future__ import annotations

import json

from textual.widgets import Switch

from engine.generation.sampling import SamplingParams
from helium_tui.widgets.sampling import SamplingPanel
from tests.tui.conftest import loaded, make_app, until

RECOMMENDED = {"temperature": 0.5, "repetition_penalty": 1.2, "repeat_last_n": 64, "penalize_prompt": False,
               "frequency_penalty": 0.3, "name_bonus": 2.0}  # fmt: skip


def with_sampling(bundle, settings: dict):
    meta_path = bundle / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "sampling": settings}))
    return bundle


async def test_the_sliders_start_at_the_models_defaults_and_reset_to_them(tiny_bundle, one_thread):
    app = make_app(with_sampling(tiny_bundle, RECOMMENDED))
    async with app.run_test(size=(120, 50)) as pilot:
        await loaded(app, pilot)
        panel = app.studio.query_one(SamplingPanel)
        params = panel.params()
        assert (params.temperature, params.repetition_penalty, params.repeat_last_n) == (0.5, 1.2, 64)
        assert params.penalize_prompt is False and params.frequency_penalty == 0.3 and params.name_bonus == 2.0
        assert params.top_p == SamplingParams().top_p  # what the model does not set: the engine's default
        panel.slider("temperature").value = 1.5
        panel.query_one("#penalize-prompt", Switch).value = True
        await pilot.pause()
        assert panel.params().temperature == 1.5
        panel.query_one("#model-defaults").focus()
        await pilot.press("enter")
        await until(pilot, lambda: panel.params().temperature == 0.5, "the model's defaults again")
        assert panel.params().penalize_prompt is False


async def test_another_model_keeps_what_the_user_changed(tiny_bundle, one_thread):
    panel_app = make_app(tiny_bundle)
    async with panel_app.run_test(size=(120, 50)) as pilot:
        await loaded(panel_app, pilot)
        panel = panel_app.studio.query_one(SamplingPanel)
        assert panel.params().temperature == SamplingParams().temperature  # no recommendation: the engine's
        panel.slider("top_p").value = 0.5  # the user's choice
        panel.use_model(RECOMMENDED)
        await pilot.pause()
        params = panel.params()
        assert params.temperature == 0.5 and params.repeat_last_n == 64 and params.top_p == 0.5


async def test_an_old_story_opens_with_the_settings_it_was_made_with(tiny_bundle, one_thread):
    app = make_app(with_sampling(tiny_bundle, RECOMMENDED))
    async with app.run_test(size=(120, 50)) as pilot:
        await loaded(app, pilot)
        panel = app.studio.query_one(SamplingPanel)
        notes = panel.apply({"temperature": 0.7, "repetition_penalty": 1.1}, 5)  # saved before the new settings
        await pilot.pause()
        params = panel.params()
        assert not notes and params.repeat_last_n == -1 and params.penalize_prompt is True
        assert params.frequency_penalty == 0 and params.name_bonus == 0 and params.seed == 5
