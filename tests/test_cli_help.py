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
