"""`helium sweep`: train a ladder of model sizes (and token budgets), one normal run dir each, then fit a scaling
law to their val losses and write a table, fit.json and a log-log plot into the sweep dir.

The training is `helium train` subprocesses (trainer.sweep.run); the plan, fit and results are trainer.sweep's.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from engine.devices import DEVICE_CHOICES, DTYPE_CHOICES
from helium_tui.errors import fail, user_errors
from helium_tui.help_format import note
from helium_tui.safe_text import terminal_safe

SWEEP_HELP = (
    "Train a scaling ladder: one normal run dir per (size, token budget) under --out, then fit L(N) = E + A*N^-alpha "
    "to the final val losses (with 3+ budgets also L(N, D) = E + A/N^alpha + B/D^beta), with standard errors "
    "from the fit's covariance; writes a table, fit.json and scaling.svg.\n\n"
    "Run the same command again to continue a stopped or killed sweep: finished points are skipped, a point with a "
    "checkpoint resumes. N is counted without the token embedding (Kaplan) and with it (Chinchilla); both fits are "
    "shown. With several GPUs the points train one per GPU at a time; --print-slurm writes a Slurm job array "
    "instead. See docs/sweeps.md."
)


def sweep(
    data: Annotated[Path | None, typer.Option(help="Prepared data dir (`helium data prepare`).")] = None,
    sizes: Annotated[
        str | None, typer.Option(help="Model sizes, comma-separated: presets (tiny, micro, mini...) or WIDTHxDEPTH "
                                      "(e.g. 64x2,96x3,128x4: heads of 32, micro's context).")  # fmt: skip
    ] = None,
    tokens: Annotated[
        str | None, typer.Option(help="Token budget(s) every size trains on, comma-separated: 2M, 500K, 2e6. "
                                      "Three or more budgets (and sizes) also fit L(N, D).")  # fmt: skip
    ] = None,
    tokens_per_param: Annotated[
        str | None, typer.Option(help="Instead of --tokens: each size trains on R x its total parameters "
                                      "(Chinchilla's compute-optimal R is about 20); comma-separated for several.")  # fmt: skip
    ] = None,
    out: Annotated[Path | None, typer.Option(help="The sweep dir: sweep.json, one run dir per point, fit.json, scaling.svg.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Sequences per step, every point. " + note("32"))] = None,
    context: Annotated[int | None, typer.Option(help="Tokens per sequence. " + note("each size's context"))] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate, every point. " + note("0.001"))] = None,
    warmup: Annotated[int | None, typer.Option(help="Warmup steps. " + note("a tenth of each point's steps"))] = None,
    eval_interval: Annotated[int | None, typer.Option(help="Steps between val evals; 0 = at the end only. " + note("0"))] = None,
    eval_batches: Annotated[int | None, typer.Option(help="Val batches per eval (more: a steadier loss). " + note("20"))] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every point. " + note("1337"))] = None,
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES} (may change between runs of one sweep). " + note("auto"), show_default=False)] = "auto",
    dtype: Annotated[str | None, typer.Option(help=f"{DTYPE_CHOICES} (may change between runs of one sweep). " + note("auto"))] = None,
    point: Annotated[int | None, typer.Option(help="Train only point INDEX (what a Slurm array task runs); no fit.")] = None,
    print_slurm: Annotated[bool, typer.Option("--print-slurm", help="Write the plan, print a Slurm job-array script that trains its points, and exit.")] = False,
    fit_only: Annotated[bool, typer.Option("--fit-only", help="Train nothing: fit the finished points and write the results.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table and the fits as JSON (progress goes to stderr).")] = False,
) -> None:
    """Train a scaling ladder and fit a scaling law (the help is SWEEP_HELP)."""
    if out is None:
        raise fail("--out SWEEP_DIR is required")
    if point is not None and (fit_only or print_slurm):
        raise fail("--point trains one point: it goes with neither --fit-only nor --print-slurm")
    if fit_only and print_slurm:
        raise fail("give --fit-only or --print-slurm, not both")
    out = out.resolve()
    train = dict(batch_size=batch_size, context=context, lr=lr, warmup=warmup, eval_interval=eval_interval or 0,
                 eval_batches=eval_batches, seed=seed)  # fmt: skip
    with user_errors():
        from trainer.config import TrainConfig
        from trainer.sweep import plan as plans

        # the numbers first (nan, inf, a negative lr: one line naming the option), as `helium train` checks them
        names = {"warmup": "warmup_steps"}
        TrainConfig().with_(**{names.get(k, k): v for k, v in train.items() if v is not None}).validate()
        plan = _plan(data, sizes, tokens, tokens_per_param, out, train)
        points = plan.points()
        if point is not None and not 0 <= point < len(points):
            raise ValueError(f"--point {point}: this plan has points 0 to {len(points) - 1}")
        plans.open_plan(out, plan)
    if print_slurm:
        print(slurm_script(out, len(points), _args(data, sizes, tokens, tokens_per_param, out, device, dtype, train)))
        return
    code = 0
    if not fit_only:
        code = _train(plan, out, [points[point]] if point is not None else points, device, dtype, as_json)
    if point is None:
        code = _report(plan, out, as_json, fit_only) or code
    raise typer.Exit(code)


def _plan(data, sizes, tokens, ratios, out: Path, train: dict):
    """The plan these options give, or the one saved in out when only --out (and --fit-only) is given."""
    from trainer.manifest import read_manifest
    from trainer.sweep import plan as plans

    if data is None and sizes is None and tokens is None and ratios is None:
        return plans.read_plan(out)  # `helium sweep --out DIR [--fit-only]`: the saved plan
    if data is None or sizes is None:
        raise ValueError("--data DIR and --sizes are required (or only --out SWEEP_DIR to continue a sweep)")
    if (tokens is None) == (ratios is None):
        raise ValueError("give --tokens N[,N...] or --tokens-per-param R[,R...] (one of them)")
    data = data.resolve()
    vocab = int(read_manifest(data)["vocab_size"])
    budgets = [plans.parse_count(t, "--tokens") for t in tokens.split(",") if t.strip()] if tokens else []
    if tokens is not None and not budgets:
        raise ValueError("--tokens: give at least one token budget")
    plan = plans.SweepPlan(
        data=str(data), sizes=plans.parse_sizes(sizes), tokens=budgets,
        tokens_per_param=plans.parse_ratios(ratios) if ratios else [], vocab_size=vocab,
        train={k: v for k, v in train.items() if v is not None},
    )  # fmt: skip
    plans.check_size(plan)
    return plan


def _train(plan, out: Path, points: list, device: str, dtype: str | None, as_json: bool) -> int:
    """Train the points; 0 when they all finished, 1 when one failed, 130 when stopped."""
    from trainer.sweep.run import run_points

    def say(line: str) -> None:
        print(terminal_safe(line), file=sys.stderr if as_json else sys.stdout, flush=True)

    from trainer.sweep.results import repeats

    say(f"sweep: {plan.describe()}; {len(points)} point(s) to check in {out}")
    if note := repeats(plan):
        say(note)
    runtime = ["--device", device] + (["--dtype", dtype] if dtype else [])
    try:
        outcomes = run_points(plan, out, points, runtime, say)
    except KeyboardInterrupt:
        say("sweep stopped; run the same command again to continue")
        return 130
    failed = [o.point.name for o in outcomes if o.code != 0]
    stopped = [o.point.name for o in outcomes if o.code == 0 and o.status != "finished"]
    if stopped:
        say(f"sweep stopped at {', '.join(stopped)}; run the same command again to continue")
        return 130
    if failed:
        say(f"failed: {', '.join(failed)} (their output is above; run the same command again to retry them)")
        return 1
    return 0


def _report(plan, out: Path, as_json: bool, fit_only: bool) -> int:
    """Collect the points, fit, write fit.json and the plot, print the table; 2 when --fit-only finds no fit."""
    from engine.files import atomic_write_text
    from trainer.sweep.plan import FIT_FILE, PLOT_FILE
    from trainer.sweep.results import fit_file, fits, rows

    with user_errors():
        table = rows(plan, out)
        found, problems = fits(table)
        result = fit_file(plan, table, found, problems)
        atomic_write_text(out / FIT_FILE, json.dumps(result, indent=2) + "\n")
        pictures = _pictures(out / PLOT_FILE, table, found)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(table, found, out)
        for line in problems:
            print(terminal_safe(line))
        print(terminal_safe(f"wrote {out / FIT_FILE}" + "".join(f", {p}" for p in pictures)))
    if fit_only and not found:
        raise fail(problems[0] if problems else "no finished points to fit")
    return 0


def _print_table(table: list, found: list[dict], out: Path) -> None:
    """The points and the fits, as `helium runs` prints its table."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from engine.humanize import format_duration

    title = Text(terminal_safe(f"sweep {out}: final val loss against model size"))
    grid = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True)
    for col in ("point", "N", "tokens", "epochs", "status", "val", "best", "time"):
        grid.add_column(col, justify="left" if col in ("point", "status") else "right", no_wrap=True)
    for r in table:
        val = f"{r.val_loss:.3f}" if r.val_loss is not None else "–"
        best = f"{r.best_val_loss:.3f}" if r.best_val_loss is not None else "–"
        wall = format_duration(r.elapsed_s) if r.elapsed_s is not None else "–"
        cells = [r.name, _count(r.non_embedding), _count(r.tokens or r.budget),
                 f"{r.epochs:.2f}", r.status, val, best, wall]  # fmt: skip
        grid.add_row(*(Text(terminal_safe(c)) for c in cells))
    grid.caption = "N: parameters without the token embedding (fit.json has both counts); val: the final val loss"
    console = Console()
    console.print(grid)
    for f in found:
        console.print(Text(terminal_safe(describe_fit(f))))


def _count(n: int) -> str:
    """A parameter count in a few characters: 13.4K, 1.33M."""
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}K"


def describe_fit(f: dict) -> str:
    """One fit in a line: 'L(N) at 2M tokens, N non-embedding: E = 1.52 ± 0.08, A = 41 ± 9, alpha = 0.27 ± 0.03 (5 points, rmse 0.004)'."""
    errors = f["errors"] or {}
    terms = ", ".join(
        f"{k} = {v:.4g}" + (f" ± {errors[k]:.2g}" if k in errors and errors[k] > 0 else "") for k, v in f["values"].items()
    )
    count = "non-embedding" if f["params"] == "non_embedding" else "total"
    extra = f"; {'; '.join(f['notes'])}" if f["notes"] else ""
    return f"{f['law']}, N {count}: {terms} ({f['points']} points, rmse {f['rmse']:.3g}{extra})"


def _pictures(path: Path, table: list, found: list[dict]) -> list[Path]:
    """scaling.svg (and scaling.png when matplotlib is installed): log10 val loss against log10 non-embedding N,
    the measured points of each budget and its fitted L(N)."""
    import importlib.util

    from engine.files import atomic_write, atomic_write_text
    from helium_tui import runs_plot

    curves = []
    for group in dict.fromkeys(r.group for r in table):
        done = sorted((r.non_embedding, r.val_loss) for r in table if r.group == group and r.val_loss is not None
                      and r.status == "finished")  # fmt: skip
        if not done:
            continue
        curves.append((f"{group}: measured", [math.log10(n) for n, _ in done], [math.log10(v) for _, v in done]))
        law = next((f for f in found if f["law"] == f"L(N) at {group}" and f["params"] == "non_embedding"), None)
        if law and len(done) > 1:
            v, lo, hi = law["values"], math.log10(done[0][0]), math.log10(done[-1][0])
            xs = [lo + (hi - lo) * i / 40 for i in range(41)]
            ys = [math.log10(v["E"] + v["A"] * (10**x) ** -v["alpha"]) for x in xs]
            curves.append((f"{group}: fit, alpha {v['alpha']:.2f}", xs, ys))
    if not curves:
        return []
    labels = ("scaling: val loss against parameters (log-log)", "log10 non-embedding parameters", "log10 final val loss")
    atomic_write_text(path, runs_plot.svg(curves, *labels))
    written = [path]
    if importlib.util.find_spec("matplotlib") is not None:
        from helium_tui.commands.runs import _png

        png = path.with_suffix(".png")
        atomic_write(png, lambda tmp: _png(tmp, curves, *labels))
        written.append(png)
    return written


def _args(data, sizes, tokens, ratios, out: Path, device: str, dtype: str | None, given: dict) -> list[str]:
    """The sweep's own options as a command line (for the Slurm script)."""
    args = ["--out", str(out), "--device", device]
    for flag, value in (("--data", data and data.resolve()), ("--sizes", sizes), ("--tokens", tokens),
                        ("--tokens-per-param", ratios), ("--dtype", dtype)):  # fmt: skip
        if value is not None:
            args += [flag, str(value)]
    for key in ("batch_size", "context", "lr", "warmup", "eval_interval", "eval_batches", "seed"):
        if given.get(key) is not None:
            args += [f"--{key.replace('_', '-')}", str(given[key])]
    return args


def slurm_script(out: Path, count: int, args: list[str]) -> str:
    """A job-array script: task i trains point i; the fit runs after all of them with --fit-only."""
    command = shlex.join(["helium", "sweep", *args])
    return "\n".join([
        "#!/bin/bash",
        "#SBATCH --job-name=helium-sweep",
        f"#SBATCH --array=0-{count - 1}",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --cpus-per-task=8",
        f"#SBATCH --output={shlex.quote(str(out))}/slurm-%A_%a.out",
        "# add your cluster's --partition/--account/--time lines; submit with: sbatch THIS_FILE",
        "# when every task has ended, fit: " + command + " --fit-only",
        "",
        f"{command} --point \"$SLURM_ARRAY_TASK_ID\"",
        "",
    ])  # fmt: skip
