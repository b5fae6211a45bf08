"""`helium bench train`: training tokens/s and MFU on random tokens (no dataset), eager and/or compiled.

A plain Typer command function; `helium_tui/commands/bench.py` registers it in the `bench` group.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from engine.devices import DEVICE_CHOICES, DTYPE_CHOICES
from helium_tui.errors import user_errors
from helium_tui.help_format import note


def bench_train(
    preset: Annotated[str, typer.Option(help="Model preset (random weights).")] = "nano",
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help=f"torch.compile the model. {note('on for CUDA only')}"),
    ] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Run both eager and compiled.")] = False,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 8,
    context: Annotated[int | None, typer.Option(help="Tokens per sequence. " + note("preset's context"))] = None,
    vocab_size: Annotated[
        int | None,
        typer.Option(help="Vocabulary; `helium train` takes the data's (data prepare: 4096). " + note("preset's")),
    ] = None,
    steps: Annotated[int, typer.Option(help="Timed training steps.")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed steps first (compilation happens here).")] = 3,
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES}.")] = "auto",
    dtype: Annotated[str, typer.Option(help=f"{DTYPE_CHOICES}.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object after the table.")] = False,
) -> None:
    """Training speed: tokens/s, MFU, step time and peak memory on random tokens."""
    with user_errors():
        from benchmarks.train import bench_train as run_bench

        modes = [False, True] if compare else [compile]
        results = [
            run_bench(preset, device, dtype, c, batch_size, steps, warmup, context, vocab_size=vocab_size)
            for c in modes
        ]
    from rich.console import Console
    from rich.table import Table

    first = results[0]
    size = f"{first.params / 1e6:.2f}M params, vocab {first.vocab_size:,}"  # as `helium train` prints them
    table = Table(title=f"helium bench train — {first.preset} ({size})")
    table.add_column("metric")
    for r in results:
        table.add_column("compiled" if r.compiled else "eager", justify="right")
    rows = [
        ("device / dtype", lambda r: f"{r.device} {r.dtype}"),
        ("batch x context", lambda r: f"{r.batch_size} x {r.context}"),
        ("tokens/s", lambda r: f"{r.tokens_per_s:,.0f}"),
        ("step time", lambda r: f"{r.step_time_s * 1000:.1f} ms"),
        ("MFU", lambda r: f"{r.mfu * 100:.1f}%" if r.mfu is not None else "n/a"),
        ("peak FLOP/s used", lambda r: f"{r.peak_flops / 1e12:.2f} T" if r.peak_flops else "unknown"),
        ("peak memory", lambda r: f"{r.peak_mem_bytes / 2**20:,.0f} MiB"),
    ]
    for name, cell in rows:
        table.add_row(name, *[cell(r) for r in results])
    Console(stderr=as_json).print(table)
    if as_json:
        dicts = [r.to_dict() for r in results]
        print(json.dumps(dicts[0] if len(dicts) == 1 else {"runs": dicts}))
