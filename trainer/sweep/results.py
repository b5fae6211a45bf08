"""A sweep's results: one row per point read from its run dir, and the laws fitted to the finished ones.

Torch-free. The loss of a point is its FINAL val loss (at the end of its cosine schedule, as Chinchilla uses);
the best val loss is shown beside it. N is counted both ways: non-embedding (Kaplan) and total (Chinchilla).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from engine.runs.rundir import is_run_dir, read_events
from engine.runs.summary import fold, summarize
from trainer.manifest import read_manifest
from trainer.sweep.fit import Fit, FitError, fit_power_law, fit_two_variable
from trainer.sweep.plan import Point, SweepPlan, params, short_count

COUNTS = ("non_embedding", "total")  # the two ways of counting N; the first is the headline


@dataclass
class Row:
    """One point as the table shows it."""

    name: str  # its run dir's name
    size: str  # preset or WIDTHxDEPTH
    group: str  # its budget: '2M tokens' or '20 tokens/param' (points of one group share an L(N) fit)
    non_embedding: int  # parameters without the token embedding (Kaplan's N)
    total: int  # all parameters, tied embedding once (Chinchilla's N)
    budget: int  # tokens planned
    tokens: int  # tokens trained so far
    epochs: float  # tokens trained / the data's training tokens: above 1, text was seen again
    status: str  # finished | stopped | failed | interrupted | running | not started
    steps: int  # steps done
    val_loss: float | None  # the final val loss (the last one measured)
    best_val_loss: float | None  # the lowest val loss measured
    elapsed_s: float | None  # training wall time


def train_tokens(data: str) -> int:
    """Tokens in the data's training split (0 when the data dir cannot be read)."""
    try:
        return int(read_manifest(data)["splits"]["train"]["tokens"])
    except (ValueError, KeyError, OSError):
        return 0


def rows(plan: SweepPlan, out: Path) -> list[Row]:
    """Every point of the plan with what its run dir says."""
    available = train_tokens(plan.data)
    return [_row(plan, out, p, available) for p in plan.points()]


def repeats(plan: SweepPlan) -> str | None:
    """A line naming the points whose budget is more than the data's training text (they see it again), or None."""
    available = train_tokens(plan.data)
    over = [(p.name, p.tokens / available) for p in plan.points() if available and p.tokens > available]
    if not over:
        return None
    listed = ", ".join(f"{name} {times:.1f}x" for name, times in over)
    return (f"note: {len(over)} point(s) train on more tokens than the data's {available:,} training tokens, so they see "
            f"the same text again ({listed}): their losses fall partly from memorising it")  # fmt: skip


def _group(plan: SweepPlan, point: Point) -> str:
    if plan.tokens:
        return f"{short_count(point.tokens)} tokens"
    ratio = plan.tokens_per_param[plan.budgets(point.size).index(point.tokens)]
    return f"{ratio:g} tokens/param"


def _row(plan: SweepPlan, out: Path, point: Point, available: int) -> Row:
    total, non_embedding = params(plan.shape(point.size))
    run_dir = out / point.name
    status, steps, tokens, val, best, elapsed = "not started", 0, 0, None, None, None
    if is_run_dir(run_dir):
        summary = summarize(run_dir)
        state = fold(read_events(run_dir), run_dir)
        status, steps, tokens, elapsed = summary.status, summary.step, summary.tokens, summary.elapsed_s
        val, best = state.last_val_loss, summary.best_val_loss
    epochs = (tokens or point.tokens) / available if available else 0.0
    return Row(point.name, point.size, _group(plan, point), non_embedding, total, point.tokens, tokens, epochs,
               status, steps, val, best, elapsed)  # fmt: skip


def fits(table: list[Row]) -> tuple[list[dict], list[str]]:
    """The laws the finished points allow: L(N) per budget group and, with 2+ groups, L(N, D); each with N counted
    both ways. Returns (fits as dicts, one-line reasons for the fits that could not be made)."""
    done = [r for r in table if r.status == "finished" and r.val_loss is not None]
    found: list[dict] = []
    problems: list[str] = []
    groups = list(dict.fromkeys(r.group for r in table))
    for group in groups:
        members = [r for r in done if r.group == group]
        law = f"L(N) at {group} ({len(members)} of {sum(r.group == group for r in table)} points finished)"
        for count in COUNTS:
            _attempt(found, problems, law, count,
                     lambda m=members, c=count: fit_power_law([getattr(r, c) for r in m], [r.val_loss for r in m]))  # fmt: skip
    if len(groups) > 1:
        for count in COUNTS:
            _attempt(found, problems, f"L(N, D) ({len(done)} of {len(table)} points finished)", count, lambda c=count: fit_two_variable(
                [getattr(r, c) for r in done], [r.tokens for r in done], [r.val_loss for r in done]))  # fmt: skip
    return found, problems


def _attempt(found: list[dict], problems: list[str], law: str, count: str, make) -> None:
    try:
        fit: Fit = make()
    except FitError as exc:
        if count == COUNTS[0]:  # the same reason holds for both counts: say it once
            problems.append(f"no fit of {law}: {exc}")
        return
    found.append({"law": law.split(" (")[0], "params": count, **fit.to_dict()})


def fit_file(plan: SweepPlan, table: list[Row], found: list[dict], problems: list[str]) -> dict:
    """fit.json's content: the laws, what they were fitted to, and the table."""
    return {
        "loss": "final val loss of each finished point",
        "params": {"non_embedding": "without the token embedding (Kaplan et al. 2020)",
                   "total": "all parameters, the tied embedding once (Hoffmann et al. 2022)"},  # fmt: skip
        "fits": found, "problems": problems, "plan": plan.to_dict(), "points": [asdict(r) for r in table],
    }  # fmt: skip
