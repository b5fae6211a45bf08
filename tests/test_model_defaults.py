"""Per-model sampling defaults: a bundle's metadata.json "sampling", checked; `tell` starts there, the user's
options win; a bad entry is dropped (the model still loads)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from engine.bundles.info import read_metadata
from engine.generation.sampling import SamplingParams, model_defaults, settle
from helium_tui.cli import app


def test_settle_layers_engine_model_and_user():
    model = {"temperature": 0.5, "penalize_prompt": False}
    params = settle(model, temperature=None, top_p=0.8)
    assert (params.temperature, params.top_p, params.penalize_prompt) == (0.5, 0.8, False)
    assert params.repetition_penalty == SamplingParams().repetition_penalty
    assert settle(model, temperature=0.0).temperature == 0.0  # 0 is a choice, None is not


@pytest.mark.parametrize(
    "sampling, message",
    [
        ([1, 2], "sampling must be a JSON object"),
        ({"temperature": "hot"}, "sampling.temperature must be a number"),
        ({"top_p": 0}, "top-p must be in (0, 1]"),
        ({"seed": 3}, "sampling.seed is not a setting"),
        ({"penalize_prompt": 0}, "sampling.penalize_prompt must be true or false"),
    ],
)
def test_bad_recommendations_are_one_line_and_dropped_on_load(tmp_path, sampling, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        model_defaults({"sampling": sampling})
    (tmp_path / "metadata.json").write_text(json.dumps({"sampling": sampling, "steps": 3}))
    assert read_metadata(tmp_path) == {"steps": 3}  # metadata only informs: the model stays usable


def test_tell_uses_the_models_settings_unless_given(tiny_bundle, one_thread):
    meta = json.loads((tiny_bundle / "metadata.json").read_text())
    meta["sampling"] = {"temperature": 0.0, "repetition_penalty": 1.3, "repeat_last_n": 16, "penalize_prompt": False}
    (tiny_bundle / "metadata.json").write_text(json.dumps(meta))
    args = ["tell", "Once upon", "--model", str(tiny_bundle), "--max-tokens", "8", "--json", "--device", "cpu"]
    out = json.loads(CliRunner().invoke(app, args).output)
    assert out["sampling"]["temperature"] == 0.0 and out["sampling"]["repeat_last_n"] == 16
    assert out["sampling"]["penalize_prompt"] is False and out["sampling"]["top_p"] == SamplingParams().top_p
    mine = json.loads(CliRunner().invoke(app, [*args, "--repeat-last-n", "-1", "--penalize-prompt"]).output)
    assert mine["sampling"]["repeat_last_n"] == -1 and mine["sampling"]["penalize_prompt"] is True


def test_the_shipped_model_recommends_measured_settings():
    from engine.bundles.registry import resolve_model

    settings = model_defaults(read_metadata(resolve_model(None)))
    assert settings and SamplingParams(**settings).validate()
