"""Every `helium` command's help: flags are shown bare (no `<bool>`), options that take values keep their type."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from helium_tui.cli import app


def command_paths(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under group, as argument paths (the root is ())."""
    paths = [prefix]
    for name, command in getattr(group, "commands", {}).items():
        paths += command_paths(command, (*prefix, name))
    return paths


def test_no_help_shows_a_flag_as_if_it_took_a_value():
    paths = command_paths(typer.main.get_command(app))
    assert ("tell",) in paths and ("bench", "train") in paths and len(paths) > 15
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, f"helium {' '.join(path)} --help: {result.output}"
    tell = runner.invoke(app, ["tell", "--help"], env={"COLUMNS": "120"}).output
    assert "<float>" in tell and "<int>" in tell  # the others keep their types
    for flag in ("--json", "--compile", "--no-compile", "--help"):
        assert flag in tell


def test_train_help_states_the_defaults_of_the_config_objects():
    from helium_tui.commands.train import flag, shown
    from trainer.config import FINETUNE_DEFAULTS, FINETUNE_EPOCHS, MIN_FINETUNE_STEPS, TrainConfig

    command = typer.main.get_command(app).commands["train"]
    options = {opt for param in command.params for opt in param.opts}
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "1000"})
    text = " ".join(result.output.split())
    fresh = TrainConfig()
    for field, tuned in FINETUNE_DEFAULTS.items():  # each option a fine-tune changes, with both defaults
        assert flag(field) in options, field
        assert f"[{shown(getattr(fresh, field))}; fine-tune {shown(tuned)}]" in text, field
        assert f"{flag(field)} {shown(tuned)}," in text, field  # and in --init-from's summary
    assert f"{FINETUNE_EPOCHS} passes over the data (at least {MIN_FINETUNE_STEPS} steps)" in text
    for field in ("weight_decay", "ckpt_interval", "keep_last", "seed"):
        assert f"{flag(field)} <" in text and f"[{shown(getattr(fresh, field))}]" in text, field
    assert "auto, bfloat16 or float32. [auto]" in text  # a bracketed word is printed, not taken for a style
    assert "[lr / 10]" in text
