"""Every `helium` command's help: flags are shown bare (no `<bool>`), options that take values keep their type."""

from __future__ import annotations

import pytest
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
    assert "auto, float32 or bfloat16. [auto]" in text  # a bracketed word is printed, not taken for a style
    assert "[lr / 10]" in text


@pytest.mark.slow
def test_no_bracketed_text_in_any_help_is_taken_for_a_style():
    """Rich reads `[on for CUDA only]` as a style tag and drops it: every bracketed part of every command's and
    option's help must appear in the rendered --help."""
    import re

    runner = CliRunner()
    root = typer.main.get_command(app)
    checked = 0
    for path in command_paths(root):
        command = root
        for name in path:
            command = command.commands[name]
        texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "1000", "TERMINAL_WIDTH": "1000"})
        shown = " ".join(result.output.split())
        for text in texts:
            for part in re.findall(r"\\?\[([^\[\]\\]+)\]", " ".join(text.split())):
                checked += 1
                assert f"[{part}]" in shown, f"helium {' '.join(path)} --help hides [{part}]"
    assert checked > 10


def test_every_device_and_dtype_option_states_what_the_runtime_takes():
    """One source (engine.devices) for the words of every --device/--dtype help and the runtime's errors."""
    import pytest

    from engine.devices import DEVICE_CHOICES, DTYPE_CHOICES
    from engine.generation.runtime import pick_device, pick_dtype

    root = typer.main.get_command(app)
    compute_dtype = {(), ("tell",), ("train",), ("bench", "train"), ("bench", "decode")}  # others store weights
    seen = set()
    for path in command_paths(root):
        command = root
        for name in path:
            command = command.commands[name]
        for param in command.params:
            if param.name == "device" or (param.name == "dtype" and path in compute_dtype):
                seen.add((path, param.name))
                words = DEVICE_CHOICES if param.name == "device" else DTYPE_CHOICES
                assert words in (param.help or ""), (path, param.name, param.help)
    assert {(path, "dtype") for path in compute_dtype} <= seen and len(seen) > 8
    with pytest.raises(ValueError, match=DEVICE_CHOICES):
        pick_device("tpu")
    with pytest.raises(ValueError, match=DTYPE_CHOICES):
        pick_dtype(pick_device("cpu"), "int3")
