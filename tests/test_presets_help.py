"""Presets are shown where users choose them, with size and use, from engine.model.config (one source)."""

from __future__ import annotations

from typer.testing import CliRunner

from engine.model.config import PRESET_USES, PRESETS, describe_preset, preset_size
from helium_tui.cli import app


def test_each_preset_says_its_size_shape_and_use():
    assert set(PRESET_USES) == set(PRESETS)
    assert describe_preset("mini") == (
        "mini: 5.5M params, 6 layers × 256, context 256, vocab 4,096: the largest that trains comfortably on a "
        "laptop CPU (the shipped model)"
    )
    assert preset_size("tiny") == "tiny · 158K params"


def test_train_help_lists_presets_with_parameters(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = " ".join(CliRunner().invoke(app, ["train", "--help"]).output.replace("│", " ").split())
    for name in PRESETS:
        assert " ".join(describe_preset(name).split()) in out, name
    assert "--data's tokenizer sets the vocab" in out  # tiny trains 0.35M params on a 4,096-token data dir, not 158K


async def test_the_monitor_preset_field_shows_sizes():
    from textual.app import App, ComposeResult
    from textual.widgets import Select

    from helium_tui.screens.training.form_rows import PRESETS_HELP, RunForms, preset_label
    from trainer.config import TrainConfig

    class FormApp(App):
        def compose(self) -> ComposeResult:
            yield RunForms(TrainConfig())

    app = FormApp()
    async with app.run_test(size=(100, 12)):
        select = app.query_one("#preset", Select)
        assert [str(prompt) for prompt, _ in select._options if _ is not Select.BLANK] == [preset_label(p) for p in PRESETS]
        assert preset_label("mini") == "mini 5.5M"
        assert all(describe_preset(p) in PRESETS_HELP for p in PRESETS) and select.tooltip == PRESETS_HELP
