"""`helium runs [DIR]` and `helium runs compare`: listing run dirs, curves of several runs in the terminal and in
a picture, and the one-line refusals (bad dir, missing metric, png without matplotlib)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.runs.summary import list_runs, series
from helium_tui.cli import app
from helium_tui.runs_plot import ticks

runner = CliRunner()
SVG = "{http://www.w3.org/2000/svg}"


def start(step: int = 0, max_steps: int = 40) -> dict:
    return {"event": "start", "time": 1.0, "step": step, "max_steps": max_steps, "tokens_per_step": 100,
            "params": 120_000, "preset": "tiny", "device": "cpu", "dtype": "float32", "world_size": 1, "pid": 1}  # fmt: skip


def step(n: int, loss: float) -> dict:
    return {"event": "step", "time": 2.0 + n, "step": n, "loss": loss, "lr": 1e-3 / n, "tokens_per_s": 500.0,
            "mfu": None, "grad_norm": 2.0 / n, "tokens": 100 * n, "elapsed_s": n / 10, "eta_s": 1.0}  # fmt: skip


def write_run(run_dir: Path, events: list[dict], data: str = "/data/ts4096") -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "train_config.json").write_text(json.dumps({"preset": "tiny", "data": data}))
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run_dir


def finished(run_dir: Path, last: int = 40, val: float = 2.5) -> Path:
    """A run that logged every 10 steps up to `last`, evaluated at the end and finished."""
    steps = [step(n, 5.0 - n / 20) for n in range(10, last + 1, 10)]
    end = [{"event": "eval", "time": 90.0, "step": last, "val_loss": val},
           {"event": "status", "time": 91.0, "status": "finished", "step": last, "bundle": None}]  # fmt: skip
    return write_run(run_dir, [start(max_steps=last), *steps, *end])


def test_runs_lists_each_run_dir(tmp_path):
    finished(tmp_path / "short", last=20, val=3.25)
    write_run(tmp_path / "died", [start(), step(10, 4.0)])  # no final status and no live trainer
    (tmp_path / "notes").mkdir()  # not a run: skipped
    r = runner.invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "short" in r.output and "finished" in r.output and "3.2500" in r.output and "20/20" in r.output
    assert "died" in r.output and "interrupted" in r.output and "ts4096" in r.output and "notes" not in r.output
    assert [run.name for run in list_runs(tmp_path)] == ["short", "died"]  # oldest first
    assert list_runs(tmp_path)[0].tokens == 2000 and list_runs(tmp_path)[0].elapsed_s == 2.0


def test_runs_on_an_empty_missing_or_non_run_dir(tmp_path):
    r = runner.invoke(app, ["runs", str(tmp_path)])
    assert r.exit_code == 0 and "no training runs" in r.output
    r = runner.invoke(app, ["runs", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such directory" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_compare_overlays_runs_of_different_lengths_and_writes_svg_and_html(tmp_path):
    a, b = finished(tmp_path / "a", last=40), finished(tmp_path / "b<i>", last=100)
    out = tmp_path / "loss.svg"
    r = runner.invoke(app, ["runs", "compare", str(a), str(b), "--x", "tokens", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "a" in r.output and "b<i>" in r.output and f"wrote {out}" in r.output
    root = ET.parse(out).getroot()  # well-formed: the run name's markup is escaped
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 2 and any(t.text == "b<i>" for t in root.iter(f"{SVG}text"))
    last_x = [float(line.get("points").split()[-1].split(",")[0]) for line in lines]
    assert last_x[0] < last_x[1]  # a stops at 4,000 tokens, b goes on to 10,000
    page = tmp_path / "loss.html"
    r = runner.invoke(app, ["runs", "compare", str(a), str(b), "--metric", "grad_norm", "--out", str(page)])
    assert r.exit_code == 0 and page.read_text().startswith("<!doctype html>") and "<svg" in page.read_text()


def test_compare_says_which_run_lacks_the_metric(tmp_path):
    a = finished(tmp_path / "a")
    b = write_run(tmp_path / "b", [start(), step(10, 4.0)])  # never evaluated
    r = runner.invoke(app, ["runs", "compare", str(a), str(b), "--metric", "val_loss"])
    assert r.exit_code == 0 and "b: no val_loss against step in this run; left out" in r.stderr
    r = runner.invoke(app, ["runs", "compare", str(b), "--metric", "val_loss"])
    assert r.exit_code == 2 and "none of the runs has val_loss" in r.stderr


def test_compare_refusals_are_one_line(tmp_path, monkeypatch):
    a = finished(tmp_path / "a")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain.svg").mkdir()
    cases = [
        (["runs", "compare", str(a), str(tmp_path / "plain")], "not a training run"),
        (["runs", "compare", str(a), str(tmp_path / "gone")], "no such directory"),
        (["runs", "compare", str(a / "events.jsonl")], "events.jsonl: not a directory (give the run dir)"),
        (["runs", str(a / "events.jsonl")], "events.jsonl: not a directory (give the run dir)"),
        (["runs", "compare", str(a), "--metric", "accuracy"], "choose one of loss, val_loss, lr, grad_norm"),
        (["runs", "compare", str(a), "--x", "epochs"], "choose one of step, tokens, time"),
        (["runs", "compare", str(a), "--out", str(tmp_path / "x.pdf")], "write a .svg, .html or .png"),
        (["runs", "compare", str(a), "--out", str(tmp_path / "a")], "write a .svg"),
        (["runs", "compare", str(a), "--out", str(tmp_path / "plain.svg")], "not a regular file"),
    ]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    cases.append((["runs", "compare", str(a), "--out", str(tmp_path / "x.png")], "needs matplotlib"))
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.pdf").exists()


def test_series_drops_points_a_resume_trained_again_and_maps_val_loss_to_tokens_and_time(tmp_path):
    events = [start(), step(10, 4.0), step(20, 3.0), step(30, 9.0),  # 30 was lost: resumed from 20
              start(step=20), step(30, 2.5), {"event": "eval", "time": 50.0, "step": 30, "val_loss": 2.7}]  # fmt: skip
    run = write_run(tmp_path / "r", events)
    assert series(run, "loss") == ([10.0, 20.0, 30.0], [4.0, 3.0, 2.5])
    assert series(run, "lr", "tokens")[0] == [1000.0, 2000.0, 3000.0]
    assert series(run, "val_loss", "time") == ([3.0], [2.7])


def test_ticks_are_round():
    assert ticks(0, 100) == [0, 20, 40, 60, 80, 100] and ticks(0.5, 1.7) == [0.6, 0.8, 1.0, 1.2, 1.4, 1.6]
    assert ticks(3, 3) == [3]


def test_compare_marks_whole_steps_on_the_terminal_chart(tmp_path):
    a = finished(tmp_path / "a", last=20)  # steps 10 and 20: plotext alone marks 12.5 and 17.5
    r = runner.invoke(app, ["runs", "compare", str(a)], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    axis = r.output.rstrip().splitlines()[-2]
    assert "12.5" not in axis and "10.0" not in axis and "20" in axis, axis
    b = write_run(tmp_path / "b", [start(), step(10, 4.0), step(12, 3.5)])  # two steps apart: 10.5 is no step
    r = runner.invoke(app, ["runs", "compare", str(b)], env={"COLUMNS": "80"})
    axis = r.output.rstrip().splitlines()[-2]
    assert ".5" not in axis and "11" in axis, axis


def test_long_run_names_are_cut_apart_on_one_line_at_80_columns(tmp_path):
    for name in ("tinystories-tiny-lr3e-3-2026-12-07", "tinystories-tiny-lr3e-3-2026-12-07-2"):
        finished(tmp_path / name, last=20)
    r = runner.invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(map(len, lines)) <= 80, r.output
    rows = [line.split() for line in lines if "finished" in line]
    assert len(rows) == 2 and all(row[0].startswith("tinys") and "…" in row[0] for row in rows), r.output
    assert rows[0][0] != rows[1][0] and any(row[0].endswith("-2") for row in rows), r.output  # it was folded 4 wide


@pytest.mark.parametrize("columns", [60, 44])
def test_a_narrow_terminal_leaves_columns_out_and_never_cuts_a_number(tmp_path, columns):
    run = finished(tmp_path / "tinystories-tiny-lr3e-3-2026-12-07", last=20)
    wide = runner.invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": "200"}).output
    tokens = next(cell for cell in wide.split() if "," in cell)  # e.g. '20,480'
    r = runner.invoke(app, ["runs", str(tmp_path)], env={"COLUMNS": str(columns)})
    assert r.exit_code == 0 and max(map(len, r.output.splitlines())) <= columns, r.output
    row = next(line for line in r.output.splitlines() if "finished" in line)
    assert tokens in row.split(), r.output  # at 60 columns it was cut to '1,001,47' without a mark
    assert "left out: the terminal is" in " ".join(r.output.split()), r.output
    assert run.name not in r.output  # the name is cut apart, not folded


def test_compare_tells_runs_of_the_same_name_apart(tmp_path):
    a = finished(tmp_path / "sweep-a" / "p00-32x2-1M", last=20)
    b = finished(tmp_path / "sweep-b" / "p00-32x2-1M", last=30)
    out = tmp_path / "same.svg"
    r = runner.invoke(app, ["runs", "compare", str(a), str(b), str(a), "--out", str(out)])
    assert r.exit_code == 0, r.output
    labels = [t.text for t in ET.parse(out).getroot().iter(f"{SVG}text") if t.text and "p00" in t.text]
    assert labels == ["sweep-a/p00-32x2-1M", "sweep-b/p00-32x2-1M"], labels  # both were 'p00-32x2-1M'
    assert "sweep-a/p00-32x2-1M" in r.output and "sweep-b/p00-32x2-1M" in r.output
