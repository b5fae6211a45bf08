"""`helium sweep`'s plan and resumption: sweep.json is written once and another plan is refused; a point's run dir
says what it needs (done, resume from its checkpoint, start over, new) and its `helium train` line follows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.model.config import get_preset
from engine.runs.rundir import EventWriter
from trainer.sweep.plan import (
    PLAN_FILE,
    Point,
    SweepPlan,
    open_plan,
    params,
    parse_count,
    parse_sizes,
    read_plan,
)
from trainer.sweep.run import run_points, state, train_args


def plan(**changes) -> SweepPlan:
    base = dict(data="/data/ts", sizes=["32x1", "64x1", "64x2"], tokens=[8000], vocab_size=300,
                train={"batch_size": 8, "context": 32, "eval_interval": 0})  # fmt: skip
    return SweepPlan(**(base | changes))


def finished_run(run_dir: Path) -> None:
    """A run dir whose events say it finished."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.json").write_text("{}")
    events = EventWriter(run_dir / "events.jsonl")
    events.write("start", step=0, max_steps=32, tokens_per_step=256, params=1, preset="32x1", device="cpu",
                 dtype="float32", world_size=1, pid=1)  # fmt: skip
    events.write("step", step=32, loss=4.4, lr=1e-4, tokens_per_s=1.0, mfu=None, grad_norm=1.0, tokens=8192,
                 elapsed_s=1.0, eta_s=0.0)  # fmt: skip
    events.write("eval", step=32, val_loss=4.5)
    events.write("status", status="finished", step=32, bundle=None)


def half_done_run(run_dir: Path) -> None:
    """A run dir killed after its step-16 checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.json").write_text("{}")
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "step_000016.pt").write_bytes(b"")


def test_widthxdepth_builds_a_shape_from_micro():
    shape = get_preset("128x4")
    assert (shape.d_model, shape.n_layer, shape.n_head, shape.hidden_dim) == (128, 4, 4, 352)
    assert shape.context_length == get_preset("micro").context_length
    total, non_embedding = params(shape.with_(vocab_size=300))
    assert total - non_embedding == 300 * 128
    with pytest.raises(ValueError, match="multiple of 32"):
        get_preset("100x2")
    with pytest.raises(ValueError, match="unknown preset 'huge'.*WIDTHxDEPTH"):
        get_preset("huge")
    for zero in ("32x0", "0x2", "032x2"):  # a shape with a zero: not 'unknown preset'
        with pytest.raises(ValueError, match=f"shape '{zero}': width and depth are whole numbers from 1"):
            get_preset(zero)


def test_sizes_and_counts_parse_or_refuse_in_one_line():
    assert parse_sizes("tiny, 64x2") == ["tiny", "64x2"]
    assert [parse_count(t, "--tokens") for t in ("2M", "500K", "2e6", "1.5m", "1000")] == [
        2_000_000, 500_000, 2_000_000, 1_500_000, 1000]  # fmt: skip
    for bad in ("", "x", "-5", "1.5", "0"):
        with pytest.raises(ValueError, match="--tokens"):
            parse_count(bad, "--tokens")
    with pytest.raises(ValueError, match="given twice"):
        parse_sizes("tiny,tiny")
    with pytest.raises(ValueError, match="--sizes huge"):
        parse_sizes("tiny,huge")


def test_points_cover_sizes_and_budgets_and_tokens_per_param_scales_with_size():
    points = plan(tokens=[8000, 16000]).points()
    assert [p.name for p in points] == ["p00-32x1-8K", "p01-32x1-16K", "p02-64x1-8K", "p03-64x1-16K",
                                        "p04-64x2-8K", "p05-64x2-16K"]  # fmt: skip
    ratio = plan(tokens=[], tokens_per_param=[20.0])
    assert [p.tokens for p in ratio.points()] == [round(20 * params(ratio.shape(s))[0]) for s in ratio.sizes]


def test_the_plan_is_written_once_and_another_plan_is_refused(tmp_path):
    out = tmp_path / "sweep"
    open_plan(out, plan())
    saved = json.loads((out / PLAN_FILE).read_text())
    assert saved["points"] == ["p00-32x1-8K", "p01-64x1-8K", "p02-64x2-8K"]
    open_plan(out, plan())  # the same plan again: continues
    assert read_plan(out).to_dict() == plan().to_dict()
    with pytest.raises(ValueError, match="holds another sweep .3 sizes .32x1, 64x1, 64x2. x 8K tokens"):
        open_plan(out, plan(tokens=[16000]))
    with pytest.raises(ValueError, match="holds another sweep"):
        open_plan(out, plan(train={"batch_size": 16}))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a sweep dir"):
        open_plan(other, plan())


def test_a_killed_sweep_continues_each_point_where_it_stopped(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    p = plan()
    open_plan(out, p)
    first, second, third = p.points()
    finished_run(out / first.name)
    half_done_run(out / second.name)
    assert [state(out, x) for x in (first, second, third)] == ["done", "resume", "new"]
    (out / third.name).mkdir()  # a point that died before its first checkpoint starts over
    assert state(out, third) == "restart"
    cut_short = Point(3, "32x1", 16000)  # finished, but on fewer tokens than its budget (a hand-run --max-steps)
    finished_run(out / cut_short.name)
    half_done_run(out / cut_short.name)
    assert state(out, cut_short) == "resume"

    started: list[list[str]] = []

    class FakeTrain:  # stands in for the `helium train` subprocess: records its command line, finishes the run
        def __init__(self, args, **kwargs):
            started.append(args)
            finished_run(Path(args[args.index("--out") + 1]))
            self.stdout = iter(["step 1/32\n"])

        def wait(self):
            return 0

    monkeypatch.setattr("trainer.sweep.run.subprocess.Popen", FakeTrain)
    lines: list[str] = []
    outcomes = run_points(p, out, p.points(), ["--device", "cpu"], lines.append, slots=[None])
    assert [o.point.name for o in outcomes] == [second.name, third.name]  # the finished one is skipped
    assert started[0][-1] == "--resume" and started[1][-1] == "--restart"
    assert any("p00-32x1-8K: already finished; skipped" in line for line in lines)
    assert any(line == "  p01-64x1-8K | step 1/32" for line in lines)


def test_train_args_are_a_normal_helium_train_run(tmp_path):
    p = plan()
    point = p.points()[2]
    args = train_args(p, tmp_path, point, "new", ["--device", "cpu"])
    assert args[1:4] == ["-m", "helium_tui.cli", "train"]
    given = dict(zip(args[4::2], args[5::2], strict=False))
    assert given["--preset"] == "64x2" and given["--max-tokens"] == "8000" and given["--out"] == str(tmp_path / point.name)
    assert given["--warmup"] == "3" and given["--ckpt-interval"] == "6"  # 32 steps: a tenth warm up, 5 checkpoints
    assert "--resume" not in args and "--restart" not in args


def fake_train(monkeypatch, ends: dict[str, tuple[int, str]]) -> list[str]:
    """`helium train` replaced: each point's run ends as `ends[point name]` says (exit code, final status)."""
    started: list[str] = []

    class FakeTrain:
        def __init__(self, args, **kwargs):
            run_dir = Path(args[args.index("--out") + 1])
            started.append(run_dir.name)
            self.code, status = ends[run_dir.name]
            finished_run(run_dir) if status == "finished" else half_done_run(run_dir)
            if status == "stopped":
                EventWriter(run_dir / "events.jsonl").write("status", status="stopped", step=16)
            self.stdout = iter([])

        def wait(self):
            return self.code

    monkeypatch.setattr("trainer.sweep.run.subprocess.Popen", FakeTrain)
    return started


def test_a_failed_point_is_named_and_the_others_go_on(tmp_path, monkeypatch):
    p = plan()
    names = [x.name for x in p.points()]
    started = fake_train(monkeypatch, {names[0]: (1, "failed"), names[1]: (0, "finished"), names[2]: (0, "finished")})
    lines: list[str] = []
    outcomes = run_points(p, tmp_path, p.points(), ["--device", "cpu"], lines.append, slots=[None])
    assert started == names and [o.code for o in outcomes] == [1, 0, 0]
    assert f"{names[0]}: failed (exit 1); the other points go on" in lines


def test_a_stopped_point_stops_the_sweep(tmp_path, monkeypatch):
    p = plan()
    names = [x.name for x in p.points()]
    started = fake_train(monkeypatch, {names[0]: (0, "finished"), names[1]: (0, "stopped")})
    outcomes = run_points(p, tmp_path, p.points(), ["--device", "cpu"], lambda line: None, slots=[None])
    assert started == names[:2] and [o.status for o in outcomes] == ["finished", "stopped"]
    assert state(tmp_path, p.points()[1]) == "resume"


def test_points_share_the_gpus_one_each(tmp_path, monkeypatch):
    p = plan()
    seen: list[str | None] = []

    class FakeTrain:
        def __init__(self, args, env, **kwargs):
            seen.append(env.get("CUDA_VISIBLE_DEVICES"))
            finished_run(Path(args[args.index("--out") + 1]))
            self.stdout = iter([])

        def wait(self):
            return 0

    monkeypatch.setattr("trainer.sweep.run.subprocess.Popen", FakeTrain)
    run_points(p, tmp_path, p.points(), ["--device", "cuda"], lambda line: None, slots=["0", "1"])
    assert len(seen) == 3 and set(seen) <= {"0", "1"}
