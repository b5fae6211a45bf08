"""Tests that need ../shared (real data and peer programs beside the repo): how they skip, and the one line at
the end of a run that counts them and says what they cover."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.humanize import plural

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_SKIP = "needs ../shared"  # every skip for a missing ../shared starts so; the run's summary counts them


def needs_shared(*paths: Path, covers: str) -> pytest.MarkDecorator:
    """Skip unless every path (inside ../shared) exists; `covers` says what the test checks, for the summary."""
    missing = [p for p in paths if not p.exists()]
    shown = ", ".join(str(p.relative_to(SHARED)) if p.is_relative_to(SHARED) else str(p) for p in missing)
    return pytest.mark.skipif(bool(missing), reason=f"{SHARED_SKIP} ({shown}): {covers}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After the short summary, just before pytest's closing counts: one line on how many tests skipped for a
    missing ../shared, and what they cover."""
    yield
    reasons = [rep.longrepr[2] for rep in terminalreporter.stats.get("skipped", [])
               if isinstance(rep.longrepr, tuple) and SHARED_SKIP in rep.longrepr[2]]
    if reasons:
        covers = sorted({r.split("): ", 1)[-1] for r in reasons})
        terminalreporter.write_line(
            f"{plural(len(reasons), 'test')} skipped because ../shared is absent; they cover: {'; '.join(covers)}")
