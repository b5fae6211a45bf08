"""`helium eval`: a model's cross-entropy on a text file (nats/token and bits per UTF-8 byte)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from helium_tui.errors import user_errors


def eval_cmd(
    model: Annotated[str, typer.Option(help="Model bundle: a path or an installed name (default model if empty).")] = "",
    data: Annotated[Path, typer.Option(help="Text file: <|endoftext|>-separated stories, or one stream.")] = ...,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 (default, exact) or bfloat16.")] = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a model on a text file: nats per token and bits per UTF-8 byte (tokenizer-independent)."""
    with user_errors():
        text = data.read_text(encoding="utf-8")
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from engine.evaluate import evaluate_text
        from engine.session import open_session

        session = open_session(model or None, device=device, dtype=dtype)
        columns = [TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"), TimeRemainingColumn()]
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("eval", total=None)
            result = evaluate_text(
                session.bundle.model,
                session.bundle.tokenizer,
                text,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    out = {"model": session.name, "data": str(data), **result.to_dict()}
    if as_json:
        print(json.dumps(out))
        return
    print(
        f"{session.name} on {data.name}: {result.nats_per_token:.4f} nats/token, "
        f"{result.bits_per_byte:.4f} bits/byte ({result.tokens:,} tokens, {result.bytes:,} bytes, "
        f"{result.documents:,} documents)"
    )
