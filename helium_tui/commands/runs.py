"""`helium runs [DIR]`: list training runs; `helium runs compare RUN RUN…`: overlay their curves in the terminal
and, with --out, in a picture (SVG, HTML, or PNG when matplotlib is installed). Torch-free.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from engine.humanize import format_duration
from engine.runs.summary import METRICS, X_AXES, RunSummary, list_runs, series, summarize
from helium_tui.errors import fail, user_errors
from helium_tui.names import cut_apart, run_labels
from helium_tui.safe_text import terminal_safe

if TYPE_CHECKING:
    from rich.text import Text

COLORS = ["blue", "red", "green", "orange", "magenta", "cyan"]  # one per run in the terminal plot
MARKERS = ["•", "x", "+", "o", "*", "#"]  # one per run when the output is not a terminal (no colours)
X_LABELS = {"step": "step", "tokens": "tokens", "time": "training time (s)"}
PICTURES = (".svg", ".html", ".png")
COLUMNS = ("run", "model", "data", "status", "steps", "tokens", "best val", "time")  # `helium runs`
DROPPED_FIRST = ("model", "data", "time", "best val", "steps")  # what a terminal too narrow for every column leaves out
RUN_WIDTH = 12  # the fewest characters of a run's name `helium runs` shows (longer ones cut apart with '…')


class RunsGroup(TyperGroup):
    """`helium runs` and `helium runs DIR` list runs; a known subcommand (compare) runs that instead."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(
    cls=RunsGroup,
    help="Training runs: list them (`helium runs [DIR]`), compare their curves (`helium runs compare RUN RUN…`).",
)


@runs_app.command("list")
def list_cmd(
    directory: Annotated[
        Path | None, typer.Argument(help="A folder of run dirs (default: the user's runs dir).", show_default=False)
    ] = None,
) -> None:
    """List the runs in DIR: preset, parameters, data, status, steps, tokens, best val loss, wall time."""
    from rich.console import Console
    from rich.text import Text

    from engine.paths import user_runs_dir

    root = directory or user_runs_dir()
    if directory is None and not root.is_dir():  # no run started yet: nothing to list, not an error
        print(terminal_safe(f"no training runs in {root} (start one: helium train --data DIR --out RUN_DIR)"))
        return
    with user_errors():
        runs = list_runs(root)
    if not runs:
        print(terminal_safe(f"no training runs in {root} (start one: helium train --data DIR --out RUN_DIR)"))
        return
    console = Console()
    rows = [[terminal_safe(cell) for cell in _row(run)] for run in runs]
    title = Text(terminal_safe(f"training runs in {root}"))
    unbounded = console.options.update(width=10_000)  # measure each table's own width, not the terminal's

    def fits(width: int, columns: list[str], folded: bool) -> bool:
        """Whether the table fits the terminal (folded: with the model column folded onto more lines)."""
        measured = console.measure(_table(title, rows, width, columns), options=unbounded)
        return (measured.minimum if folded else measured.maximum) <= console.width

    width, columns = max(len(row[0]) for row in rows), list(COLUMNS)  # names cut apart with '…' to what fits
    while width > RUN_WIDTH and not fits(width, columns, folded=False):
        width -= 1
    for dropped in DROPPED_FIRST:  # still too wide: leave out the columns a narrow terminal can spare
        if fits(width, columns, folded=True):
            break
        columns.remove(dropped)
    console.print(_table(title, rows, width, columns))
    if len(columns) < len(COLUMNS):
        left_out = ", ".join(c for c in COLUMNS if c not in columns)
        console.print(f"[dim]({left_out} left out: the terminal is {console.width} columns)[/]")


def _table(title: Text, rows: list[list[str]], width: int, columns: list[str]) -> Any:
    """The listing's columns, run names cut apart to width; no number is ever cut, the model column folds."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    names = cut_apart((row[0] for row in rows), width)
    keep = [COLUMNS.index(col) for col in columns]
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True)  # as `helium sweep`'s: 80 columns hold it
    for i in keep:
        col = COLUMNS[i]
        right = col in ("steps", "tokens", "best val", "time")
        cells = [names[row[0]] if i == 0 else row[i] for row in rows]
        table.add_column(col, justify="right" if right else "left", overflow="fold", no_wrap=col != "model",
                         min_width=None if col == "model" else max(map(len, cells)))  # fmt: skip
    for row in rows:
        cells = [names[row[0]], *row[1:]]
        table.add_row(*(Text(cells[i]) for i in keep))
    return table


def _row(run: RunSummary) -> list[str]:
    """A run's cells in the listing."""
    model = run.preset or "?"
    if run.params:
        model += f" · {run.params / 1e6:.2f}M"
    steps = f"{run.step:,}" + (f"/{run.max_steps:,}" if run.max_steps else "")
    best = f"{run.best_val_loss:.4f}" if run.best_val_loss is not None else "–"
    data = Path(run.data).name if run.data else "–"
    wall = format_duration(run.elapsed_s) if run.elapsed_s is not None else "–"
    return [run.name, model, data, run.status, steps, f"{run.tokens:,}", best, wall]


@runs_app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run dirs to overlay.", show_default=False)],
    metric: Annotated[str, typer.Option(help=f"What to plot: {', '.join(METRICS)}.")] = "loss",
    x: Annotated[str, typer.Option("--x", help=f"Against: {', '.join(X_AXES)} (time: training seconds).")] = "step",
    out: Annotated[
        Path | None, typer.Option(help="Also write the picture: FILE.svg, FILE.html, or FILE.png (needs matplotlib).")
    ] = None,
) -> None:
    """Overlay a metric of several runs in the terminal, and optionally write it as a picture."""
    if metric not in METRICS:
        raise fail(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    if x not in X_AXES:
        raise fail(f"--x {x!r}: choose one of {', '.join(X_AXES)}")
    if out is not None:
        _check_out(out)
    curves = []
    runs = list({run.resolve(): run for run in runs}.values())  # each run once, in the order first given
    labels = run_labels(runs)
    with user_errors():
        for run, label in zip(runs, labels, strict=True):
            summarize(run)  # a bad dir: one line, exit 2
            xs, ys = series(run, metric, x)
            if xs:
                curves.append((label, xs, ys))
            else:
                print(terminal_safe(f"{label}: no {metric} against {x} in this run; left out"), file=sys.stderr)
    if not curves:
        raise fail(f"none of the runs has {metric} against {x} to plot")
    _terminal_plot(curves, metric, x)
    if out is not None:
        with user_errors():
            _write_picture(out, curves, metric, x)
        print(terminal_safe(f"wrote {out}"))


def _check_out(out: Path) -> None:
    """Refuse a picture path Helium cannot or should not write, before any work."""
    if out.suffix.lower() not in PICTURES:
        raise fail(f"--out {out}: write a .svg, .html or .png file")
    if out.suffix.lower() == ".png" and importlib.util.find_spec("matplotlib") is None:
        raise fail("--out FILE.png needs matplotlib, which is not installed; write FILE.svg or FILE.html instead")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise fail(f"--out {out}: exists and is not a regular file")
    if not out.parent.is_dir():
        raise fail(f"--out {out}: no such folder {out.parent}")


def _terminal_plot(curves: list[tuple[str, list[float], list[float]]], metric: str, x: str) -> None:
    """The curves overlaid in braille, sized to the terminal."""
    import shutil

    import plotext

    from helium_tui import runs_plot

    tty = sys.stdout.isatty()
    cols, rows = shutil.get_terminal_size((100, 30))
    plotext.clear_figure()
    plotext.plotsize(min(cols, 140), max(12, min(rows - 4, 30)))
    plotext.theme("clear")
    for i, (name, xs, ys) in enumerate(curves):
        marker = "braille" if tty else MARKERS[i % len(MARKERS)]
        plotext.plot(xs, ys, label=terminal_safe(name), marker=marker, color=COLORS[i % len(COLORS)])
    plotext.title(metric)
    plotext.xlabel(X_LABELS[x])
    marks = runs_plot.ticks(min(min(xs) for _, xs, _ in curves), max(max(xs) for _, xs, _ in curves))
    if x != "time":  # steps and tokens are whole: never "12.5"
        marks = [m for m in marks if m == int(m)]
    plotext.xticks(marks, [f"{m:,.0f}" if m == int(m) else f"{m:g}" for m in marks])
    chart = plotext.build()
    plotext.clear_figure()
    print(chart if tty else re.sub(r"\x1b\[[0-9;]*m", "", chart))


def _write_picture(out: Path, curves: list[tuple[str, list[float], list[float]]], metric: str, x: str) -> None:
    """out as SVG, HTML or PNG, written atomically."""
    from engine.files import atomic_write, atomic_write_text
    from helium_tui import runs_plot

    title = f"{metric} against {X_LABELS[x]}"
    suffix = out.suffix.lower()
    if suffix == ".svg":
        atomic_write_text(out, runs_plot.svg(curves, title, X_LABELS[x], metric))
    elif suffix == ".html":
        atomic_write_text(out, runs_plot.html(curves, title, X_LABELS[x], metric))
    else:
        atomic_write(out, lambda tmp: _png(tmp, curves, title, X_LABELS[x], metric))


def _png(path: Path, curves: list[tuple[str, list[float], list[float]]], title: str, xlabel: str, ylabel: str) -> None:
    """The curves drawn by matplotlib (only when it is installed) into path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    for name, xs, ys in curves:
        ax.plot(xs, ys, label=name)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    fig.savefig(path, format="png")
    plt.close(fig)
