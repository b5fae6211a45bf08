"""`helium quantize-report --plot FILE.svg`: the table's trade as a picture (size against bits per byte, each format
with its tokens/s), refused with one line before any measuring when the path cannot be written."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from typer.testing import CliRunner

from helium_tui.cli import app
from helium_tui.commands import quantize


def test_the_report_draws_each_format_as_a_point(tiny_bundle, tmp_path, one_thread):
    data = tmp_path / "valid.txt"
    data.write_text("Once upon a time there was a little cat. She liked to play in the sun.\n" * 4)
    out = tmp_path / "trade.svg"
    r = CliRunner().invoke(app, ["quantize-report", str(tiny_bundle), "--data", str(data), "--plot", str(out)])
    assert r.exit_code == 0, r.output
    root = ET.fromstring(out.read_text())  # a well-formed SVG
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for name in quantize.FORMATS:
        assert any(t.startswith(f"{name}: ") and t.endswith(" tok/s") for t in texts), texts
    assert "bits per byte (lower is better)" in texts and "weights (MiB)" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}circle"))) == len(quantize.FORMATS)


def test_without_data_it_plots_tokens_per_second():
    rows = [quantize.FormatRow(name, "float32", 1000 * (i + 1), None, 100.0 * (i + 1)) for i, name in
            enumerate(quantize.FORMATS)]  # fmt: skip
    texts = [t.text for t in ET.fromstring(quantize.plot_svg(rows, "<m>")).iter("{http://www.w3.org/2000/svg}text")]
    assert "decode tokens/s" in texts and "quantize-report: <m>" in texts  # the name is text, never markup


def test_a_bad_plot_path_is_one_line_before_any_measuring(tiny_bundle, tmp_path, monkeypatch):
    def no_measuring(*args):
        raise AssertionError("measured before checking --plot")

    monkeypatch.setattr(quantize, "measure", no_measuring)
    for bad, why in ((tmp_path / "t.png", "write a .svg file"), (tmp_path / "no" / "t.svg", "no such folder"),
                     (tmp_path, "write a .svg file")):  # fmt: skip
        r = CliRunner().invoke(app, ["quantize-report", str(tiny_bundle), "--plot", str(bad)])
        assert r.exit_code == 2 and why in r.stderr and "Traceback" not in r.output, r.output
    (tmp_path / "dir.svg").mkdir()
    r = CliRunner().invoke(app, ["quantize-report", str(tiny_bundle), "--plot", str(tmp_path / "dir.svg")])
    assert r.exit_code == 2 and "not a regular file" in r.stderr
