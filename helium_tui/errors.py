"""Turn expected failures into one-line messages and exit code 2, never a traceback.

`fail` and `user_errors` serve the commands; `OneLineErrors` makes Typer's own usage errors (a bad option
value, an unknown option) the same single `helium: error: ...` line instead of a boxed panel.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperGroup

from helium_tui.safe_text import terminal_safe

try:  # Typer ≥ 0.2x carries its own copy of Click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older Typer on the real Click
    from click.exceptions import ClickException

USAGE_ERROR = 2
PREFIX = "helium: error: "


def one_line(text: str) -> str:
    """The text as one line: its lines joined, runs of spaces collapsed."""
    return " ".join(text.split())


def fail(message: str, code: int = USAGE_ERROR) -> typer.Exit:
    """Print `helium: error: message` to stderr (control characters made visible) and return the Exit to raise."""
    print(f"{PREFIX}{terminal_safe(one_line(message))}", file=sys.stderr)
    return typer.Exit(code)


def describe(exc: BaseException) -> str:
    """A user-facing one-liner for an expected failure (disk full and friends in plain words)."""
    from engine.files import WriteError  # torch-free

    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    if isinstance(exc, WriteError):
        return message  # it names the file, the reason and the room left already
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left" in message:
        return f"no space left on the device ({message})"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in message:
        return f"out of memory ({message or 'MemoryError'}); try a smaller model, batch or context"
    return message


@contextmanager
def user_errors() -> Iterator[None]:
    """Map ValueError, OSError, BundleError and safetensors' errors raised inside to one line and exit 2."""
    from engine.errors import BundleError  # torch-free, so cheap

    try:
        yield
    except (BundleError, ValueError, OSError) as exc:
        raise fail(describe(exc)) from None
    except MemoryError as exc:
        raise fail(describe(exc)) from None
    except Exception as exc:
        if type(exc).__name__ == "SafetensorError":  # e.g. a disk that filled up while writing weights
            raise fail(describe(exc)) from None
        if isinstance(exc, RuntimeError) and describe(exc).startswith("out of memory"):
            raise fail(describe(exc)) from None
        raise


class OneLineErrors(TyperGroup):
    """The root command group: usage errors print one `helium: error:` line (with a --help hint) and exit 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has already printed the help
                ctx = getattr(exc, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                print(f"{PREFIX}{terminal_safe(one_line(exc.format_message()))}{hint}", file=sys.stderr)
            if not standalone_mode:
                raise
            sys.exit(exc.exit_code)
        except typer.Abort:
            print(f"{PREFIX}aborted", file=sys.stderr)
            if not standalone_mode:
                raise
            sys.exit(1)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result
