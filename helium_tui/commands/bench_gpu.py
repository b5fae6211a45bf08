"""`helium bench gpu`: the prepared GPU check (gpu tests, training and decode speed, a timed real run).

A plain Typer command function; `helium_tui/commands/bench.py` registers it. The steps live in `benchmarks.gpu_check`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helium_tui.errors import fail
from helium_tui.help_format import note
from helium_tui.safe_text import terminal_safe


def bench_gpu(
    out: Annotated[
        Path, typer.Option(envvar="OUT", help="Folder for the result files ($OUT when set).")
    ] = Path("gpu-results"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Rehearse every step on the CPU with the tiny preset (seconds).")
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(help=f"Sequences per training step, bench and real run. {note('by GPU memory: 128 from 100 GiB')}"),
    ] = None,
    train_minutes: Annotated[
        float, typer.Option(help="Wall time of the real training run (shrunk to fit the budget).")
    ] = 2.5,
    budget_minutes: Annotated[float, typer.Option(help="Wall time of the whole check.")] = 7.5,
    data: Annotated[
        Path | None,
        typer.Option(help="TinyStories excerpt (train.txt, valid.txt) or a prepared dir. [.gpu/tinystories, ...]"),
    ] = None,
    skip: Annotated[
        list[str] | None, typer.Option(help="A step not to run (repeatable): gpu-tests, train-bench, decode, train-run.")
    ] = None,
) -> None:
    """Run the GPU check: each step's result file under OUT as it ends, then a summary table, JSON and Markdown."""
    from benchmarks.gpu_check import STEPS, Plan, run_check, summary_rows
    from benchmarks.gpu_check.plan import check_out
    from engine.checks import number, whole

    try:
        check_out(out)
        number("--train-minutes", train_minutes, 0.1, 600)
        number("--budget-minutes", budget_minutes, 1, 600)
        if batch_size is not None:
            whole("--batch-size", batch_size, high=1 << 16)
    except ValueError as exc:
        raise fail(str(exc)) from None
    unknown = sorted(set(skip or ()) - set(STEPS[1:]))
    if unknown:
        raise fail(f"unknown step {', '.join(unknown)} (steps: {', '.join(STEPS[1:])})")
    if data is not None and not data.is_dir():
        raise fail(f"{data}: not a directory (give the folder holding train.txt and valid.txt)")
    plan = Plan(
        out=out, dry_run=dry_run, batch_size=batch_size, train_minutes=train_minutes,
        budget_minutes=budget_minutes, data=data.resolve() if data else None, skip=tuple(skip or ()),
    )  # fmt: skip
    check = run_check(plan, echo=lambda line: print(line, flush=True))

    from rich.console import Console
    from rich.table import Table

    table = Table(title="helium bench gpu" + (" (dry run: CPU, tiny preset)" if dry_run else ""))
    for name in ("step", "status", "time", "result"):
        table.add_column(name, overflow="fold")
    for row in summary_rows(check.results):
        style = {"ok": "green", "failed": "red"}.get(row[1], "yellow")
        table.add_row(row[0], f"[{style}]{row[1]}[/]", *row[2:])
    print(terminal_safe(f"results: {out / 'summary.md'}, {out / 'summary.json'}, one file per step and log.txt in {out}"))
    Console(width=max(120, Console().width)).print(table)  # the summary table comes last
    env = next((r for r in check.results if r.step == "env"), None)
    if env is not None and env.status == "failed" and not dry_run:
        raise fail(env.error or "the env step failed")
    if any(r.status == "failed" for r in check.results):
        raise typer.Exit(1)
