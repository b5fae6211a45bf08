"""Every script docs/BENCHMARKS.md cites is committed under benchmarks/ and starts (`--help`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITED = sorted(set(re.findall(r"benchmarks/[\w./-]+\.py", (ROOT / "docs" / "BENCHMARKS.md").read_text("utf-8"))))


def test_the_benchmarks_doc_cites_only_committed_scripts():
    assert CITED, "docs/BENCHMARKS.md names no benchmarks/ script"
    assert [path for path in CITED if not (ROOT / path).is_file()] == []
    assert "/tmp/h1" not in (ROOT / "docs" / "BENCHMARKS.md").read_text("utf-8")  # scripts that were never committed


@pytest.mark.parametrize("script", CITED)
@pytest.mark.slow
def test_each_cited_script_starts(script):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "usage" in done.stdout, done.stderr
