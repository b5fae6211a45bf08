"""One builder for a new run's config: `helium train` and the training monitor's forms give the same TrainConfig
for the same choices, and the monitor's help states the fine-tune budget the trainer uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import trainer.train
from helium_tui.cli import app
from helium_tui.screens.training.form_values import RunForm
from helium_tui.screens.training.view import HELP
from trainer.config import FINETUNE_DEFAULTS, FINETUNE_EPOCHS, MIN_FINETUNE_STEPS, TrainConfig
from trainer.finetune import MIN_STORIES, read_base, run_config

runner = CliRunner()


def cli_config(monkeypatch, *args: str) -> TrainConfig:
    """The TrainConfig `helium train ARGS` would train with (the training itself is not run)."""
    seen: list[TrainConfig] = []
    monkeypatch.setattr(trainer.train, "run_training", lambda cfg, **_: seen.append(cfg) or 0)
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    return seen[0]


def without_command(cfg: TrainConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k != "command"}


def test_the_cli_and_the_monitor_build_the_same_new_run(monkeypatch, tmp_path, prepared_dir):
    out = tmp_path / "run"
    cli = cli_config(monkeypatch, "--data", str(prepared_dir), "--out", str(out), "--preset", "micro",
                     "--max-steps", "50", "--batch-size", "4", "--lr", "0.01")  # fmt: skip
    form, run_dir = RunForm("micro", str(prepared_dir), "50", "4", "0.01", str(out)).new_run({})
    assert run_dir == out and without_command(form) == without_command(cli)
    defaults = TrainConfig()
    assert cli.warmup_steps == defaults.warmup_steps and cli.seed == defaults.seed  # untouched: the defaults


def test_the_cli_fine_tune_is_the_shared_builders(monkeypatch, tmp_path, prepared_dir, tiny_bundle):
    out = tmp_path / "tuned"
    cli = cli_config(monkeypatch, "--init-from", str(tiny_bundle), "--data", str(prepared_dir), "--out", str(out))
    built = run_config(prepared_dir, out, read_base(tiny_bundle))
    assert without_command(cli) == without_command(built)
    assert all(getattr(cli, key) == value for key, value in FINETUNE_DEFAULTS.items())
    assert cli.max_steps >= MIN_FINETUNE_STEPS and cli.init_from == str(tiny_bundle.absolute())


def test_unknown_choices_are_one_line_errors(tmp_path, prepared_dir):
    with pytest.raises(ValueError, match="unknown training config keys: colour"):
        run_config(prepared_dir, tmp_path / "run", colour="red")
    with pytest.raises(ValueError, match="batch_size"):
        run_config(prepared_dir, tmp_path / "run", batch_size=0)
    assert run_config(prepared_dir, Path("~/x"), seed=None).out == str(Path("~/x").expanduser().resolve())


def test_the_monitor_help_states_the_fine_tune_budget():
    text = " ".join(HELP.split())
    assert f"{FINETUNE_EPOCHS} passes over the stories, at least {MIN_FINETUNE_STEPS})" in text
    assert f"Fewer than {MIN_STORIES} stories" in text


def test_the_monitor_preselects_the_trainers_default_preset(tmp_path):
    from helium_tui.screens.training.form_values import RunForm
    from trainer.config import TrainConfig

    assert RunForm().preset == TrainConfig().preset
    (tmp_path / "train_config.json").write_text('{"preset": "no-such-preset"}')
    assert RunForm.of_run(tmp_path, ("micro", "tiny")).preset == TrainConfig().preset
