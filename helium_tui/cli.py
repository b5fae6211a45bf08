"""The `helium` command: no subcommand opens the story studio; subcommands tell, train, import, bench...

Each command lives in `helium_tui.commands`; heavy imports (torch, textual) happen inside commands.
"""

from __future__ import annotations

from typing import Annotated

import typer

from engine.devices import DEVICE_CHOICES, DTYPE_CHOICES
from engine.generation.threads import THREADS_HELP, prepare_openmp
from helium_tui.commands.bench import bench_app
from helium_tui.commands.data import data_app
from helium_tui.commands.evaluate import eval_cmd
from helium_tui.commands.export import export_app
from helium_tui.commands.importer import import_app
from helium_tui.commands.inspect import inspect_cmd
from helium_tui.commands.models import models_app
from helium_tui.commands.quantize import quantize_report
from helium_tui.commands.runs import runs_app
from helium_tui.commands.serve import serve
from helium_tui.commands.sweep import SWEEP_HELP, sweep
from helium_tui.commands.tell import tell
from helium_tui.commands.train import train
from helium_tui.errors import OneLineErrors, user_errors
from helium_tui.help_format import hide_flag_types

hide_flag_types()  # `--json`, not `--json <bool>`

app = typer.Typer(
    name="helium",
    help="Helium: a terminal story studio around small story-telling transformers.",
    cls=OneLineErrors,
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(help="Tell a story: stream the continuation of PROMPT.")(tell)
app.add_typer(bench_app, name="bench")
app.command("eval", help="Score a model on a text file (nats/token, bits/byte).")(eval_cmd)
app.command("quantize-report", help="f32 / bf16 / int8 / int4: weight size, bits/byte, decode tok/s.")(quantize_report)
app.add_typer(import_app, name="import")
app.command("inspect", help="Look inside the model on a text: logit lens, attention, head knock-outs.")(inspect_cmd)
app.add_typer(export_app, name="export")
app.add_typer(models_app, name="models")
app.command(help="Train a model on a prepared data dir (--watch: live dashboard).")(train)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.command(help=SWEEP_HELP, short_help="Train a ladder of model sizes and fit a scaling law.")(sweep)
app.command(help="Serve models over HTTP: OpenAI- and Ollama-compatible APIs, many clients in one batch, every installed model by name (loaded on first use).")(serve)


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Studio: model bundle, a path or an installed name.")] = "",
    device: Annotated[str, typer.Option(help=f"Studio: {DEVICE_CHOICES}.")] = "auto",
    dtype: Annotated[str, typer.Option(help=f"Studio: {DTYPE_CHOICES}.")] = "auto",
    stories_dir: Annotated[
        str, typer.Option(help="Studio: where the story library keeps stories (default: the user data dir).")
    ] = "",
    compile: Annotated[
        bool,
        typer.Option(
            "--compile/--no-compile",
            help="Studio: torch.compile the decode step (faster sampling; compiles for ~15 s on CPU while the model loads).",
        ),
    ] = False,
    quantize: Annotated[
        str,
        typer.Option(
            help="Studio: weights int8, int4, none, or auto (as the bundle stores them); the picker switches int8."
        ),
    ] = "auto",
    threads: Annotated[int | None, typer.Option(help="Studio: " + THREADS_HELP)] = None,
) -> None:
    """Open the story studio when no subcommand is given."""
    if ctx.invoked_subcommand is None:
        from engine.generation.threads import requested_threads
        from engine.model.quant import quantize_option
        from helium_tui.app import run_app

        with user_errors():  # bad values: one line now, not a failed load inside the app
            quantize_option(quantize)
            threads = requested_threads(threads)
        run_app(
            model=model or None, device=device, dtype=dtype, stories_dir=stories_dir or None, compile=compile,
            quantize=quantize, threads=threads,
        )  # fmt: skip


def main() -> None:
    """Console-script entry point."""
    prepare_openmp()  # before any command loads torch: idle OpenMP threads sleep (engine.generation.threads)
    app()


if __name__ == "__main__":
    main()
