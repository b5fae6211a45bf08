"""A run without ../shared ends with one line that counts the tests skipped for it and says what they cover."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_without_shared_counts_its_skips_in_one_line(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "from tests.shared_skips import SHARED, needs_shared\n"
        "@needs_shared(SHARED / 'no-such-dir' / 'a.bin', covers='golden stories')\n"
        "def test_a(): pass\n"
        "@needs_shared(SHARED / 'no-such-dir' / 'b.txt', covers='bits per byte')\n"
        "def test_b(): pass\n"
        "def test_c(): pass\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.shared_skips",
         "--rootdir", str(tmp_path), str(tmp_path / "test_x.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    lines = run.stdout.strip().splitlines()
    assert lines[-1].startswith("1 passed, 2 skipped"), run.stdout
    assert lines[-2] == "2 tests skipped because ../shared is absent; they cover: bits per byte; golden stories"
