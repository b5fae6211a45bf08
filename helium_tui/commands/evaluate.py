"""`helium eval`: a model's cross-entropy on a text file (nats/token and bits per UTF-8 byte)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engine.devices import DEVICE_CHOICES
from engine.generation.threads import THREADS_HELP
from engine.humanize import plural
from helium_tui.errors import user_errors


def eval_cmd(
    model: Annotated[
        str, typer.Option(help="Model bundle: a path or an installed name (default model if empty).")
    ] = "",
    data: Annotated[
        Path, typer.Option(help="Text file: <|endoftext|>-separated stories, or one stream.")
    ] = ...,
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES}.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 (default, exact) or bfloat16.")] = "float32",
    quantize: Annotated[
        str, typer.Option(help="Weights: int8 (weight-only), none, or auto (as the bundle stores them).")
    ] = "auto",
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a model on a text file: nats per token and bits per UTF-8 byte (tokenizer-independent)."""
    with user_errors():
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        from engine.generation.evaluate import evaluate_file
        from engine.generation.session import open_session
        from engine.model.quant import quantize_option

        if not data.is_file():
            raise ValueError(f"{data}: no such file" if not data.exists() else f"{data}: not a regular file")
        quant = quantize_option(quantize)
        session = open_session(model or None, device=device, dtype=dtype, quantize=quant, threads=threads)
        columns = [TextColumn("scoring"), BarColumn(), DownloadColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:  # stdout stays clean
            task = bar.add_task("eval", total=data.stat().st_size)
            result = evaluate_file(
                session.bundle.model,
                session.bundle.tokenizer,
                data,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    out = {"model": session.name, "data": str(data), "quantize": session.quantize, **result.to_dict()}
    if as_json:
        print(json.dumps(out))
        return
    weights = " (int8 weights)" if session.quantize == "int8" else ""
    print(
        f"{session.name}{weights} on {data.name}: {result.nats_per_token:.4f} nats/token, "
        f"{result.bits_per_byte:.4f} bits/byte ({plural(result.tokens, 'token', thousands=True)}, "
        f"{plural(result.bytes, 'byte', thousands=True)}, {plural(result.documents, 'document', thousands=True)})"
    )
