"""Turn expected failures into one-line messages and exit code 2, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

USAGE_ERROR = 2


def fail(message: str, code: int = USAGE_ERROR) -> typer.Exit:
    """Print `helium: error: message` to stderr and return the Exit to raise."""
    print(f"helium: error: {message}", file=sys.stderr)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Map ValueError, OSError and BundleError raised inside to a one-line error and exit 2."""
    from engine.errors import BundleError  # torch-free, so cheap

    try:
        yield
    except (BundleError, ValueError, OSError) as exc:
        raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
