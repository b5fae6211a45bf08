"""The GPU check's real training run (train-run): find or make the stories, `helium data prepare` them, train the
preset for a fixed wall time with `python -m trainer.train`, stop it with SIGTERM, and read its events."""

from __future__ import annotations

import json
import random
from pathlib import Path

from benchmarks.gpu_check.plan import DATA_PLACES, ROOT, Plan
from benchmarks.gpu_check.report import run_headline, summarize_run
from benchmarks.gpu_check.runner import Check, StepFailed
from engine.runs.rundir import read_events


def find_data(plan: Plan) -> Path | None:
    """The TinyStories excerpt: --data, else the first of DATA_PLACES holding train.txt (or a manifest).

    The dry run uses --data or else made-up stories: it must not depend on data that CI lacks.
    """
    if plan.data is not None or plan.dry_run:
        return plan.data
    for place in DATA_PLACES:
        path = (ROOT / place).resolve()
        if (path / "train.txt").is_file() or (path / "manifest.json").is_file():
            return path
    return None


def synthetic_stories(n: int = 300, seed: int = 0) -> str:
    """Tiny made-up stories in TinyStories' format (for the dry run: no data needed, seconds to prepare)."""
    rng = random.Random(seed)
    names, things = ["Lily", "Tom", "Max", "Sue", "Ben", "Mia"], ["ball", "cat", "kite", "cake", "boat"]
    stories = []
    for _ in range(n):
        name, thing = rng.choice(names), rng.choice(things)
        stories.append(
            f"Once upon a time, {name} had a {thing}. One day the {thing} was lost. {name} was sad. "
            f'"Where is my {thing}?" said {name}. Then {name} found it and was happy again.'
        )
    return "".join(f"{story}\n<|endoftext|>\n" for story in stories)


def prepare_data(check: Check, m: dict) -> Path:
    """A prepared data dir for the real run: the excerpt (prepared here) or, in the dry run, made-up stories."""
    s = check.sizes
    source = find_data(check.plan)
    if source is not None and (source / "manifest.json").is_file():
        m["data"] = str(source)
        return source
    out = check.work / "data"
    if source is None and not check.plan.dry_run:
        places = ", ".join(DATA_PLACES)
        raise StepFailed(f"no TinyStories excerpt (train.txt) in {places}; pass --data or carry .gpu/tinystories")
    if source is None:
        text = check.work / "stories.txt"
        text.write_text(synthetic_stories())
        files, m["data"] = [str(text), "--val-fraction", "0.1"], "synthetic (dry run)"
    else:
        files, m["data"] = [str(source / "train.txt")], str(source)
        if (source / "valid.txt").is_file():
            files += ["--val", str(source / "valid.txt")]
    cmd = check.helium("data", "prepare", *files, "--out", str(out), "--vocab-size", str(s.vocab_size))
    check.run(cmd, s.timeouts["prepare"])
    return out


def step_train_run(check: Check, m: dict) -> str:
    """Train the preset on the excerpt for a fixed wall time, stop it, and read tokens/s and val loss over time."""
    from trainer.config import TrainConfig  # torch-free

    s = check.sizes
    data = prepare_data(check, m)
    manifest = json.loads((data / "manifest.json").read_text())
    run_dir = check.work / "run"
    budget_s = 7.0 if check.plan.dry_run else check.plan.train_minutes * 60
    seconds = min(budget_s, check.left() - s.timeouts["stop"] / 2)
    if seconds < (4 if check.plan.dry_run else 30):
        raise StepFailed(f"out of time for the training run ({check.left():.0f} s left)")
    cfg = TrainConfig(
        data=str(data), out=str(run_dir), preset=s.preset, max_steps=10**6, batch_size=check.batch,
        eval_interval=s.eval_interval, eval_batches=s.eval_batches, log_interval=s.log_interval,
        ckpt_interval=0, keep_last=1, device=s.device,
    ).validate()  # fmt: skip
    config = check.work / "train_config.json"
    config.write_text(json.dumps(cfg.to_dict(), indent=2))
    m.update(seconds=seconds, batch_size=check.batch, preset=s.preset, eval_interval=s.eval_interval)
    m["train_tokens"] = manifest["splits"]["train"]["tokens"]
    bytes_per_token = manifest["splits"]["train"].get("text_bytes", 0) / max(1, m["train_tokens"])
    m["bytes_per_token"] = bytes_per_token or None
    min_steps = 3 if check.plan.dry_run else 1

    def ready() -> bool:  # its SIGTERM handler is in place once it has logged a step
        return sum(e.event == "step" for e in read_events(run_dir)) >= min_steps

    rc = check.run_until([check.plan.python, "-m", "trainer.train", "--config", str(config)], seconds, ready)
    m["exit_code"] = rc
    events = [e.to_dict() for e in read_events(run_dir)]
    m.update(summarize_run(events, m["train_tokens"], s.eval_interval, bytes_per_token))
    if rc != 0 or m.get("status") not in ("stopped", "finished"):
        raise StepFailed(f"the training run ended with exit code {rc}, status {m.get('status')}: {check.last_error()}")
    if not m.get("points"):
        raise StepFailed("the training run logged no step")
    return run_headline(m)
