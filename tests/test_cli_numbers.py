"""Every numeric option of every command, given any float (nan, inf, subnormal, huge, negative): exit 2 with one
line, never a traceback, and the line names the option when the value is the problem."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from helium_tui.cli import app

runner = CliRunner()
NASTY = ["nan", "inf", "-inf", "1e400", "-1e308", "5e-324", "-0.0", "0", "-1", "1e23", "100000000000000000000000"]
ALWAYS_BAD = {"nan", "inf", "-inf", "1e400"}


def numeric_options() -> list[tuple[tuple[str, ...], str, str]]:
    """(command path, --option, 'int' or 'float') for every int/float option of every command."""
    found = []

    def walk(command, path: tuple[str, ...]) -> None:
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))
        if getattr(command, "commands", None):
            return
        for param in command.params:
            annotation = param.type_descriptor.annotation
            kinds = set(typing.get_args(annotation)) or {annotation}
            flag = next((o for o in param.opts if o.startswith("--")), None)
            if flag and kinds & {int, float}:
                found.append((path, flag, "int" if int in kinds else "float"))

    walk(typer.main.get_command(app), ())
    return found


def poison(path: tuple[str, ...], tmp: Path) -> list[str]:
    """Arguments that make a command fail right after its options are checked (no model, no data)."""
    missing = str(tmp / "missing")
    return {
        ("tell",): ["tell", "x", "--model", missing],
        ("train",): ["train", "--data", missing, "--out", str(tmp / "run")],
        ("bench", "decode"): ["bench", "decode", "--preset", "no-such-preset"],
        ("bench", "train"): ["bench", "train", "--preset", "no-such-preset"],
        ("bench", "startup"): ["bench", "startup", "--model", missing],
        ("bench", "studio"): ["bench", "studio", "--model", missing],
        ("bench", "gpu"): ["bench", "gpu", "--data", missing],
        ("bench", "serve"): ["bench", "serve", "--model", missing],
        ("bench", "inspect"): ["bench", "inspect", "--model", "no-such-preset"],
        ("data", "prepare"): ["data", "prepare", missing, "--out", str(tmp / "data")],
        ("sweep",): ["sweep", "--data", missing, "--sizes", "32x2", "--out", str(tmp / "sweep")],
    }.get(path, [*path])


OPTIONS = numeric_options()


def check(path, flag, value: str, tmp: Path) -> None:
    result = runner.invoke(app, [*poison(path, tmp), flag, value])
    err = result.stderr.strip()
    assert result.exit_code == 2, (path, flag, value, result.exit_code, result.output, result.exception)
    assert err.startswith("helium: error:") and len(err.splitlines()) == 1, (path, flag, value, err)
    assert "Traceback" not in result.output
    if value in ALWAYS_BAD:
        name = flag.removeprefix("--")
        assert any(n in err for n in (flag, name, name.replace("-", "_"), name.replace("-", " "))), (flag, err)


def test_every_command_has_its_numeric_options_found():
    paths = {p for p, _, _ in OPTIONS}
    assert {("tell",), ("train",), ("bench", "decode"), ("bench", "train"), ("data", "prepare")} <= paths


@pytest.mark.parametrize("path, flag, kind", OPTIONS, ids=[f"{' '.join(p)} {f}" for p, f, _ in OPTIONS])
@pytest.mark.slow
def test_nasty_values_are_one_line_errors(path, flag, kind, tmp_path):
    for value in NASTY:
        check(path, flag, value, tmp_path)


FAST = [o for o in OPTIONS if o[0] not in {("bench", "startup"), ("bench", "studio")}]  # those spawn processes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(FAST), value=st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))
@pytest.mark.slow
def test_any_float_for_any_option(option, value, tmp_path):
    path, flag, _ = option
    check(path, flag, repr(value), tmp_path)
