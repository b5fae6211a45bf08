"""The GPU check's figures and files: the real run's speed, val loss and one-epoch extrapolation from its events,
and the closing OUT/summary.json and OUT/summary.md (the step table and each step's figures)."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path

from benchmarks.gpu_check.runner import Check, StepResult
from engine.files import atomic_write_text

FULL_TOKENS = 470_000_000  # assumed tokens in one epoch of TinyStories v2 with a 4,096-token BPE
V2_TRAIN_BYTES = 2.2e9  # TinyStoriesV2-GPT4-train.txt, ~2.2 GB (`helium data download --help`)
CARD_HOURS = 1.0  # the model card: Helium-Nano trained in under an hour on one GPU


# ---------------------------------------------------------------- the real run's figures


def summarize_run(
    events: list[dict], train_tokens: int, eval_interval: int, bytes_per_token: float = 0.0,
    full_tokens: int = FULL_TOKENS,
) -> dict:
    """Tokens/s and val loss over wall time, and the time one epoch of the full data would take.

    Steady tokens/s is the median of the logged windows after the first (which holds compilation); each
    window's rate leaves out the eval logged at its end, so its wall time beyond its tokens at its rate is
    overhead: at eval steps the eval (the first one also compiles the eval graph), elsewhere checkpoints and
    logging. An epoch = start-up (elapsed at the first log less its tokens at the steady rate) + the first
    eval's compilation + full_tokens at the steady rate plus the other overhead per token + one eval per
    eval_interval steps at the cost of the later evals.
    """
    start = next((e for e in events if e.get("event") == "start"), {})
    status = [e["status"] for e in events if e.get("event") == "status"]
    steps = [e for e in events if e.get("event") == "step"]
    vals = {e["step"]: e["val_loss"] for e in events if e.get("event") == "eval"}
    out: dict = {
        "status": status[-1] if status else None, "params": start.get("params"), "device": start.get("device"),
        "dtype": start.get("dtype"), "compiled": start.get("compiled"), "context": start.get("context"),
        "tokens_per_step": start.get("tokens_per_step"), "points": [],
    }  # fmt: skip
    for e in steps:
        out["points"].append({
            "elapsed_s": round(e["elapsed_s"], 2), "step": e["step"], "tokens": e["tokens"],
            "epochs": round(e["tokens"] / max(1, train_tokens), 2), "loss": round(e["loss"], 4),
            "val_loss": vals.get(e["step"]), "tokens_per_s": round(e["tokens_per_s"]), "mfu": e.get("mfu"),
        })  # fmt: skip
    if not steps:
        return out
    rate = statistics.median(e["tokens_per_s"] for e in steps[1:] or steps)
    mfus = [e["mfu"] for e in steps[1:] or steps if e.get("mfu") is not None]
    first, last = steps[0], steps[-1]
    startup = max(0.0, first["elapsed_s"] - first["tokens"] / rate)
    evals, other = [], 0.0  # overhead seconds of eval windows; of the others, summed
    for prev, e in pairwise(steps):
        extra = max(0.0, e["elapsed_s"] - prev["elapsed_s"] - (e["tokens"] - prev["tokens"]) / e["tokens_per_s"])
        if e["step"] in vals:
            evals.append(extra)
        else:
            other += extra
    per_eval = statistics.median(evals[1:] or evals) if evals else 0.0
    first_eval_extra = max(0.0, evals[0] - per_eval) if evals else 0.0
    trained = max(1, last["tokens"] - first["tokens"])
    effective = trained / (last["elapsed_s"] - first["elapsed_s"]) if last["elapsed_s"] > first["elapsed_s"] else rate
    val_points = [p["val_loss"] for p in out["points"] if p["val_loss"] is not None]
    out.update(
        tokens_per_s=rate, mfu=statistics.median(mfus) if mfus else None, effective_tokens_per_s=effective,
        startup_s=startup, first_eval_extra_s=first_eval_extra, eval_s=per_eval, elapsed_s=last["elapsed_s"],
        tokens=last["tokens"], steps=last["step"], epochs=last["tokens"] / max(1, train_tokens),
        first_val_loss=val_points[0] if val_points else None, last_val_loss=val_points[-1] if val_points else None,
        best_val_loss=min(val_points) if val_points else None,
    )  # fmt: skip
    tokens_per_eval = (start.get("tokens_per_step") or first["tokens"] / max(1, first["step"])) * eval_interval

    def epoch_s(tokens: float) -> float:
        once = startup + first_eval_extra
        return once + tokens * (1 / rate + other / trained) + tokens / tokens_per_eval * per_eval

    out["extrapolation"] = {
        "full_tokens": full_tokens,
        "full_tokens_assumption": "TinyStories v2 with a 4,096-token BPE: the issue's figure",
        "epoch_minutes": epoch_s(full_tokens) / 60,
        "tokens_in_one_hour": full_tokens * 3600 / epoch_s(full_tokens),
    }
    if bytes_per_token:
        from_bytes = V2_TRAIN_BYTES / bytes_per_token
        out["extrapolation"]["v2_tokens_from_bytes"] = from_bytes
        out["extrapolation"]["v2_epoch_minutes_from_bytes"] = epoch_s(from_bytes) / 60
    return out


def run_headline(m: dict) -> str:
    """The real run in one line: speed, val loss, and the one-epoch extrapolation."""
    x = m["extrapolation"]
    val = ""
    if m.get("first_val_loss") is not None:
        val = f", val {m['first_val_loss']:.2f} -> {m['last_val_loss']:.2f} (best {m['best_val_loss']:.2f})"
    verdict = "under" if x["epoch_minutes"] < CARD_HOURS * 60 else "over"
    return (
        f"{m['tokens_per_s']:,.0f} tok/s steady, {m['effective_tokens_per_s']:,.0f} with evals, "
        f"{m['elapsed_s']:.0f} s{val}, {m['epochs']:.1f} passes over the excerpt; "
        f"~{x['full_tokens'] / 1e6:.0f}M tokens in ~{x['epoch_minutes']:.0f} min ({verdict} 1 h)"
    )


# ---------------------------------------------------------------- summary.json and summary.md


def summary_rows(results: list[StepResult]) -> list[tuple[str, str, str, str]]:
    """(step, status, time, result) per step."""
    return [(r.step, r.status, f"{r.seconds:.0f} s", r.headline or r.error or "") for r in results]


def write_summary(check: Check) -> None:
    """OUT/summary.json (everything) and OUT/summary.md (the table and the details a reader wants)."""
    wall = time.time() - check.started
    data = {
        "dry_run": check.plan.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(check.started)),
        "wall_s": wall, "ok": all(r.status == "ok" for r in check.results), "env": check.env,
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(check.plan).items()},
        "steps": [asdict(r) for r in check.results],
    }  # fmt: skip
    atomic_write_text(check.out / "summary.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(check.out / "summary.md", summary_markdown(check, wall))


def summary_markdown(check: Check, wall: float) -> str:
    """The summary as Markdown: environment, the step table, then each step's figures."""
    env, by = check.env, {r.step: r for r in check.results}
    title = "GPU check (dry run on the CPU)" if check.plan.dry_run else "GPU check"
    lines = [f"# {title}", ""]
    if env:
        lines.append(
            f"{env.get('gpu') or 'CPU'} · torch {env.get('torch')} · CUDA {env.get('cuda') or '-'} · "
            f"Python {env.get('python')} · commit {env.get('commit') or '?'} · "
            f"{time.strftime('%Y-%m-%d', time.gmtime(check.started))} · {wall:.0f} s in all"
        )
        if env.get("nvidia_smi"):
            lines.append(f"`nvidia-smi`: {env['nvidia_smi']}")
        lines.append("")
    lines += ["| step | status | time | result |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d.replace('|', '/')} |" for a, b, c, d in summary_rows(check.results)]
    lines += _bench_md(by.get("train-bench")) + _decode_md(by.get("decode")) + _run_md(by.get("train-run"))
    return "\n".join(lines) + "\n"


def _bench_md(r: StepResult | None) -> list[str]:
    if r is None or not r.metrics.get("eager") and not r.metrics.get("compiled"):
        return []
    lines = ["", "## Training speed (`helium bench train`, random tokens)", ""]
    lines += ["| mode | batch x context | tokens/s | step | MFU | peak memory |", "| --- | --- | --- | --- | --- | --- |"]
    for mode in ("eager", "compiled"):
        x = r.metrics.get(mode)
        if x:
            lines.append(
                f"| {mode} | {x['batch_size']} x {x['context']} | {x['tokens_per_s']:,.0f} | "
                f"{x['step_time_s'] * 1000:.1f} ms | {percent(x['mfu'])} | {x['peak_mem_bytes'] / 2**30:.1f} GiB |"
            )
    if "speedup" in r.metrics:
        lines += ["", f"Compiled / eager: **{r.metrics['speedup']:.2f}x**."]
    return lines


def _decode_md(r: StepResult | None) -> list[str]:
    if r is None or not r.metrics.get("runs"):
        return []
    lines = ["", "## Decoding (`helium bench decode`, random weights, greedy)", ""]
    lines += ["| run | tok/s per sequence | total tok/s | prefill tok/s | TTFT | of roofline |"]
    lines += ["| --- | --- | --- | --- | --- | --- |"]
    for x in r.metrics["runs"]:
        lines.append(
            f"| {x['label']} | {x['decode_tokens_per_s']:,.0f} | {x['decode_tokens_per_s'] * x['batch_size']:,.0f} "
            f"| {x['prefill_tokens_per_s']:,.0f} | {x['ttft_s'] * 1000:.1f} ms | {x['roofline_fraction']:.0%} |"
        )
    return lines


def _run_md(r: StepResult | None) -> list[str]:
    if r is None or not r.metrics.get("points"):
        return []
    m = r.metrics
    lines = ["", f"## Real training run ({m['preset']}, data: {m['data']})", ""]
    lines.append(
        f"{m.get('params') or 0:,} parameters, batch {m['batch_size']} x {m.get('context')}, "
        f"{m.get('dtype')}, compiled {m.get('compiled')}, stopped after {m['seconds']:.0f} s of wall time; "
        f"the excerpt holds {m['train_tokens']:,} training tokens, so the later val losses measure memorization "
        "of a small excerpt, not what the full data set would give."
    )
    lines += ["", "| wall s | step | tokens | passes | loss | val loss | tok/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in m["points"]:
        val = f"{p['val_loss']:.3f}" if p["val_loss"] is not None else ""
        lines.append(
            f"| {p['elapsed_s']:.1f} | {p['step']} | {p['tokens']:,} | {p['epochs']:.2f} | {p['loss']:.3f} "
            f"| {val} | {p['tokens_per_s']:,} |"
        )
    x = m.get("extrapolation")
    if x:
        lines += [
            "",
            f"Steady {m['tokens_per_s']:,.0f} tok/s (MFU {percent(m.get('mfu'))}), {m['effective_tokens_per_s']:,.0f} "
            f"tok/s over the run with its evals every {m['eval_interval']} steps; start-up and compilation "
            f"{m['startup_s']:.0f} s, the first eval's compilation {m['first_eval_extra_s']:.0f} s, each eval "
            f"{m['eval_s']:.1f} s.",
            f"Assumption: one epoch = {x['full_tokens'] / 1e6:.0f}M tokens ({x['full_tokens_assumption']}). "
            f"Then one epoch (with evals every {m['eval_interval']} steps) takes ~{x['epoch_minutes']:.0f} min "
            f"and one hour trains ~{x['tokens_in_one_hour'] / 1e6:,.0f}M tokens.",
        ]
        if "v2_tokens_from_bytes" in x:
            lines.append(
                f"Cross-check: 2.2 GB of v2 text at this excerpt's {m['bytes_per_token']:.2f} bytes/token is "
                f"~{x['v2_tokens_from_bytes'] / 1e6:.0f}M tokens, ~{x['v2_epoch_minutes_from_bytes']:.0f} min."
            )
    return lines


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal (MFU), or n/a."""
    return f"{value * 100:.1f}%" if value is not None else "n/a"
