"""`helium quantize-report MODEL [--data FILE] [--plot FILE.svg]`: one table of what each weight format costs and buys:
f32 / bf16 / int8 / int4 (Q4_0), with the bytes of its weights, bits per byte on FILE and greedy decode tokens/s; and
the same as a picture (size against bits per byte, each point with its tokens/s)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from engine.files import atomic_write_text
from engine.generation.threads import THREADS_HELP
from helium_tui.errors import user_errors

# name -> (--quantize, activations' dtype): each runs as `helium tell --quantize Q` would, f32 and bf16 pinned
FORMATS = {"f32": ("none", "float32"), "bf16": ("none", "bfloat16"), "int8": ("int8", "auto"), "int4": ("int4", "auto")}
DECODE_TOKENS = 128


@dataclass
class FormatRow:
    """One weight format of the report."""

    format: str
    activations: str
    weight_bytes: int  # its weights as stored: tied matrices once, scales and norms included
    bits_per_byte: float | None  # on --data (None without it)
    decode_tokens_per_s: float  # batch-1 greedy, eager, after a warm-up


def weight_bytes(model) -> int:
    """Bytes of a model's weights: parameters and quantized buffers (weight, weight_scale), each tensor once."""
    tensors = {t.data_ptr(): t for t in model.parameters()}
    tensors |= {b.data_ptr(): b for name, b in model.named_buffers() if name.endswith(("weight", "weight_scale"))}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def decode_speed(session, tokens: int = DECODE_TOKENS) -> float:
    """Greedy tokens/s after "Once upon a time" (the first token, prefill, not counted)."""
    from engine.generation.sampling import SamplingParams

    prompt = session.bundle.tokenizer.encode("Once upon a time")
    params = SamplingParams(max_new_tokens=tokens, temperature=0, repetition_penalty=1.0, stop_at_eos=False)
    for _ in session.generator.tokens(prompt, SamplingParams(max_new_tokens=8, temperature=0, stop_at_eos=False)):
        pass  # warm-up
    times = [time.perf_counter() for _ in session.generator.tokens(prompt, params)]
    return (len(times) - 1) / (times[-1] - times[0])


def measure(model: str | None, name: str, data: Path | None, threads: int | None) -> FormatRow:
    """One row: load model in that format, score data, time decoding."""
    from engine.generation.evaluate import evaluate_file
    from engine.generation.session import open_session

    quantize, dtype = FORMATS[name]
    session = open_session(model, device="cpu", dtype=dtype, quantize=quantize, threads=threads)
    bpb = evaluate_file(session.bundle.model, session.bundle.tokenizer, data).bits_per_byte if data else None
    return FormatRow(name, session.dtype_name, weight_bytes(session.bundle.model), bpb, decode_speed(session))


def quantize_report(
    model: Annotated[str, typer.Argument(help="Model bundle: a path or an installed name.")] = "",
    data: Annotated[
        Path | None, typer.Option(help="Text file to score (bits per byte); without it that column stays empty.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object after the table.")] = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="Also draw the trade as an SVG: weights' size against bits per byte (with --data; else "
                     "against tokens/s), each format a point labelled with its decode tokens/s."),
    ] = None,
) -> None:
    """What each weight format costs and buys on the CPU: f32, bf16, int8 and int4 (Q4_0)."""
    from engine.bundles.registry import resolve_model

    with user_errors():
        if data is not None and not data.is_file():
            raise ValueError(f"{data}: no such file" if not data.exists() else f"{data}: not a regular file")
        if plot is not None:
            check_plot(plot)
        label = resolve_model(model or None).name  # the bundle's name, as `tell` and `eval` report it
        rows = [measure(model or None, name, data, threads) for name in FORMATS]
        if plot is not None:
            atomic_write_text(plot, plot_svg(rows, label))
    print_table(rows, as_json, label)
    if plot is not None:
        typer.echo(f"wrote {plot}", err=as_json)
    if as_json:
        print(json.dumps({"model": label, "data": str(data) if data else None,
                          "formats": [asdict(r) for r in rows]}))  # fmt: skip


def print_table(rows: list[FormatRow], to_stderr: bool, model: str) -> None:
    """The report's table (on stderr when JSON follows on stdout)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from helium_tui.safe_text import terminal_safe

    base = rows[0]
    table = Table(title=Text(terminal_safe(f"helium quantize-report — {model}, CPU, batch-1 greedy decode")))
    for column in ("weights", "activations", "size", "x f32", "bits/byte", "vs f32", "decode tok/s"):
        table.add_column(column, justify="left" if column in ("weights", "activations") else "right")
    for r in rows:
        bpb = f"{r.bits_per_byte:.5f}" if r.bits_per_byte is not None else "–"
        cost = "–" if r.bits_per_byte is None or base.bits_per_byte is None else (
            f"{(r.bits_per_byte / base.bits_per_byte - 1) * 100:+.2f}%")  # fmt: skip
        size = f"{r.weight_bytes / 2**20:,.2f} MiB"
        table.add_row(r.format, r.activations, size, f"{r.weight_bytes / base.weight_bytes:.2f}", bpb, cost,
                      f"{r.decode_tokens_per_s:,.0f}")  # fmt: skip
    Console(stderr=to_stderr).print(table)


def check_plot(path: Path) -> None:
    """ValueError (one line) for a --plot path that cannot be written, before anything is measured."""
    if path.suffix.lower() != ".svg":
        raise ValueError(f"--plot {path}: write a .svg file")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ValueError(f"--plot {path}: exists and is not a regular file")
    if not path.parent.is_dir():
        raise ValueError(f"--plot {path}: no such folder {path.parent}")


def plot_svg(rows: list[FormatRow], model: str) -> str:
    """The report as an SVG: one point per format, weights' MiB across, bits per byte up (tokens/s without them)."""
    from helium_tui import runs_plot

    scored = all(r.bits_per_byte is not None for r in rows)
    points = [
        (f"{r.format}: {r.decode_tokens_per_s:,.0f} tok/s", [r.weight_bytes / 2**20],
         [r.bits_per_byte if scored else r.decode_tokens_per_s])
        for r in rows
    ]  # fmt: skip
    ylabel = "bits per byte (lower is better)" if scored else "decode tokens/s"
    return runs_plot.svg(points, f"quantize-report: {model}", "weights (MiB)", ylabel)
