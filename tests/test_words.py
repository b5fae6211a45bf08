"""Counts in messages take the right plural ("1 document", "2 threads")."""

from __future__ import annotations

from typer.testing import CliRunner

from engine.humanize import plural
from helium_tui.cli import app


def test_plural():
    assert [plural(n, "token") for n in (0, 1, 2)] == ["0 tokens", "1 token", "2 tokens"]
    assert plural(1234, "byte", thousands=True) == "1,234 bytes" and plural(1, "story", "stories") == "1 story"
    assert plural(3, "story", "stories") == "3 stories"


def test_eval_of_one_story_says_one_document(tiny_bundle, tmp_path):
    data = tmp_path / "one.txt"
    data.write_text("Lily had a ball.\n<|endoftext|>\n")
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_bundle), "--data", str(data), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "1 document)" in result.output and "documents" not in result.output
