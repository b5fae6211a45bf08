"""`helium sweep` from the command line: a real 3-point sweep of tiny shapes (one of them resumed from a killed
run's checkpoint), its table, fit.json and SVG; --print-slurm's job array; bad input as one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from engine.runs.rundir import has_checkpoints
from helium_tui.cli import app
from trainer.sweep.plan import read_plan
from trainer.sweep.run import train_args

runner = CliRunner()
SIZES = "32x1,64x1,64x2"
TINY = ["--tokens", "6K", "--context", "32", "--batch-size", "8", "--eval-batches", "2", "--lr", "3e-3",
        "--device", "cpu", "--dtype", "float32"]  # fmt: skip


def sweep(*args: str):
    return runner.invoke(app, ["sweep", *args], env={"COLUMNS": "200"})


@pytest.mark.slow
def test_a_three_point_sweep_resumes_a_killed_point_and_fits(prepared_dir, tmp_path, one_thread, helium_home):
    out = tmp_path / "sweep"
    args = ["--data", str(prepared_dir), "--sizes", SIZES, *TINY, "--out", str(out)]
    r = sweep(*args, "--point", "0")  # as a Slurm task would: one point, no fit
    assert r.exit_code == 0, r.output
    assert "[1/3] p00-32x1-6K: training 32x1 on 6,000 tokens" in r.output and "fit.json" not in r.output
    plan = read_plan(out)
    second = plan.points()[1]
    killed = subprocess.Popen(train_args(plan, out, second, "new", ["--device", "cpu"]), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:  # kill it hard once it has saved a checkpoint (a checkpoint every 4 of its 24 steps)
        deadline = time.monotonic() + 120
        while not has_checkpoints(out / second.name) and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        killed.kill()
        killed.wait()
    assert has_checkpoints(out / second.name)

    r = sweep(*args)
    assert r.exit_code == 0, r.output
    assert "p00-32x1-6K: already finished; skipped" in r.output
    assert "p01-64x1-6K: resuming 64x1" in r.output and "p02-64x2-6K: training 64x2" in r.output
    starts = [json.loads(line) for line in (out / second.name / "events.jsonl").read_text().splitlines()]
    first_start, resumed = [e["step"] for e in starts if e["event"] == "start"]
    assert first_start == 0 and 0 < resumed < 24  # continued from its checkpoint
    fit = json.loads((out / "fit.json").read_text())
    assert [p["status"] for p in fit["points"]] == ["finished"] * 3 and fit["loss"].startswith("final val loss")
    assert all(p["val_loss"] for p in fit["points"]) and fit["points"][0]["non_embedding"] < fit["points"][2]["non_embedding"]
    assert fit["fits"] or fit["problems"]  # 3 barely-trained points may or may not fall as a power law: either is said
    for line in fit["problems"]:
        assert line in r.output
    ET.parse(out / "scaling.svg")  # well-formed
    assert "p02-64x2-6K" in r.output and "finished" in r.output

    again = sweep(*args, "--json")  # a finished sweep: nothing trains, the same results
    assert again.exit_code == 0 and "already finished" not in again.stdout
    assert json.loads(again.stdout[again.stdout.index("{"):])["points"] == fit["points"]
    changed = sweep("--data", str(prepared_dir), "--sizes", "32x1,64x1", *TINY, "--out", str(out))
    assert changed.exit_code == 2 and "holds another sweep" in changed.output and len(changed.output.splitlines()) == 1


def test_print_slurm_writes_the_plan_and_a_job_array(prepared_dir, tmp_path):
    out = tmp_path / "sweep"
    r = sweep("--data", str(prepared_dir), "--sizes", SIZES, "--tokens", "6K,12K", "--batch-size", "8", "--out", str(out),
              "--print-slurm")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "#SBATCH --array=0-5" in r.output and (out / "sweep.json").is_file()
    task = next(line for line in r.stdout.splitlines() if line.startswith("helium sweep"))
    assert task.endswith('--point "$SLURM_ARRAY_TASK_ID"') and "--print-slurm" not in task
    assert f"--data {prepared_dir}" in task and "--sizes 32x1,64x1,64x2" in task and "--tokens 6K,12K" in task
    assert "--fit-only" in r.output and not list(out.glob("p0*"))  # nothing trained
    check = subprocess.run(["bash", "-n"], input=r.stdout, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def test_fit_only_on_a_sweep_with_nothing_trained_says_why(prepared_dir, tmp_path):
    out = tmp_path / "sweep"
    assert sweep("--data", str(prepared_dir), "--sizes", SIZES, *TINY, "--out", str(out), "--print-slurm").exit_code == 0
    r = sweep("--out", str(out), "--fit-only")
    assert r.exit_code == 2 and "no fit of L(N) at 6K tokens (0 of 3 points finished): no finished points" in r.output
    assert "not started" in r.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--sizes", "tiny"], "--out SWEEP_DIR is required"),
        (["--sizes", "tiny", "--tokens", "1M"], "--data DIR and --sizes are required"),
        (["--sizes", "tiny,huge", "--tokens", "1M", "DATA"], "--sizes huge: unknown preset 'huge'"),
        (["--sizes", "100x2", "--tokens", "1M", "DATA"], "width must be a multiple of 32"),
        (["--sizes", "tiny", "--tokens", "lots", "DATA"], "--tokens 'lots': give a whole number of tokens"),
        (["--sizes", "tiny", "DATA"], "give --tokens N[,N...] or --tokens-per-param R[,R...]"),
        (["--sizes", "tiny", "--tokens", "1M", "--tokens-per-param", "20", "DATA"], "(one of them)"),
        (["--sizes", "tiny", "--tokens-per-param", "-3", "DATA"], "--tokens-per-param '-3': give positive numbers"),
        (["--sizes", "tiny,micro", "--tokens", "1M", "--point", "2", "DATA"], "--point 2: this plan has points 0 to 1"),
        (["--sizes", "tiny", "--tokens", "1M", "--data", "/nonexistent/data"], "not a prepared data dir"),
        (["--sizes", "tiny", "--tokens", "1M", "--point", "0", "--fit-only", "DATA"], "--point trains one point"),
        (["--sizes", "tiny", "--tokens", "1M", "--print-slurm", "--fit-only", "DATA"], "not both"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(prepared_dir, tmp_path, args, says):
    args = [a for a in args if a != "DATA"] + (["--data", str(prepared_dir)] if "DATA" in args else [])
    if "--sizes" in args and "--out" not in args and says != "--out SWEEP_DIR is required":
        args += ["--out", str(tmp_path / "sweep")]
    r = sweep(*args)
    assert r.exit_code == 2, r.output
    assert says in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not list((tmp_path / "sweep").glob("p0*"))


def test_sweep_help_explains_itself():
    r = subprocess.run([sys.executable, "-m", "helium_tui.cli", "sweep", "--help"], capture_output=True, text=True,
                       env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})  # fmt: skip
    assert r.returncode == 0
    for words in ("--tokens-per-param", "--print-slurm", "--fit-only", "Kaplan", "Chinchilla", "docs/sweeps.md"):
        assert words in r.stdout


def test_a_budget_smaller_than_one_step_is_refused_before_anything_is_written(prepared_dir, tmp_path):
    out = tmp_path / "sweep"
    r = sweep("--data", str(prepared_dir), "--sizes", "32x1", "--tokens", "20K", "--context", "100000", "--out", str(out))
    assert r.exit_code == 2 and not out.exists()
    assert r.output.strip() == ("helium: error: point p00-32x1-20K: its budget (20,000 tokens) is less than one training "
                                "step (32 x 100,000 = 3,200,000 tokens): lower --batch-size or --context, or raise the budget")


def test_a_point_that_sees_the_data_again_is_named_before_training(prepared_dir):
    from trainer.sweep.plan import SweepPlan
    from trainer.sweep.results import repeats, train_tokens

    available = train_tokens(str(prepared_dir))
    plan = SweepPlan(data=str(prepared_dir), sizes=["32x1"], tokens=[available // 2, 3 * available], vocab_size=300)
    note = repeats(plan)
    assert note.startswith(f"note: 1 point(s) train on more tokens than the data's {available:,} training tokens")
    assert "p01-32x1-" in note and "3.0x" in note and "p00" not in note
    assert repeats(SweepPlan(data=str(prepared_dir), sizes=["32x1"], tokens=[available], vocab_size=300)) is None
