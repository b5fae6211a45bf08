"""`helium bench ...`: benchmarks that print a table and, with --json, one JSON object."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from engine.devices import DEVICE_CHOICES, DTYPE_CHOICES
from engine.generation.threads import THREADS_HELP
from engine.humanize import plural
from helium_tui.commands.bench_gpu import bench_gpu
from helium_tui.commands.bench_train import bench_train
from helium_tui.errors import user_errors

bench_app = typer.Typer(
    help="Benchmarks: decoding, start-up, studio streaming, looking inside, training speed and the GPU check.",
    no_args_is_help=True,
)


def print_report(title: str, rows: list[tuple[str, str]], report: dict, as_json: bool) -> None:
    """A benchmark's metric/value table (on stderr with --json), then with --json one JSON object on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console(stderr=as_json).print(table)
    if as_json:
        print(json.dumps(report))


@bench_app.command("decode")
def bench_decode_cmd(
    model: Annotated[
        str,
        typer.Option(help="Model bundle: a path or an installed name (default: the model `helium tell` uses)."),
    ] = "",
    preset: Annotated[
        str,
        typer.Option(help="Instead of --model: a preset, or a `helium models pull` name, for its shape (random weights)."),
    ] = "",
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES}.")] = "auto",
    dtype: Annotated[str, typer.Option(help=f"{DTYPE_CHOICES}.")] = "auto",
    compile: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile the decode step.")
    ] = False,
    packed: Annotated[
        bool, typer.Option("--packed/--no-packed", help="CPU bf16: prepacked oneDNN linears.")
    ] = True,
    prompt_tokens: Annotated[
        int | None, typer.Option(help="Prompt length for prefill (default 128, less for a small context).")
    ] = None,
    new_tokens: Annotated[
        int | None, typer.Option(help="Tokens to decode per run (default 200, less for a small context).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences decoded together.")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed runs (the median is reported).")] = 3,
    window: Annotated[
        int | None, typer.Option(help="Override the preset's sliding attention window (0 = full causal).")
    ] = None,
    quantize: Annotated[
        str,
        typer.Option(
            help="Weights: none, int8 (on CPUs with VNNI, int8 x int8 dot products), int4 (Q4_0), or auto (as the bundle "
            "stores them; none for a preset)."
        ),
    ] = "auto",
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    background_load: Annotated[
        int, typer.Option(help="Also decode while N busy processes of its own run; reports loaded / idle.")
    ] = 0,
    vs_llama_cpp: Annotated[
        bool,
        typer.Option(
            "--vs-llama-cpp",
            help="Also time llama.cpp (llama-cpp-python) on the same random weights: needs --preset.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object after the table.")] = False,
) -> None:
    """Prefill and batch-1 decode speed, time to first token, peak memory and the memory roofline."""
    with user_errors():
        from benchmarks.decode import bench_decode

        r = bench_decode(
            preset or None, device, dtype, compile, packed, prompt_tokens, new_tokens, batch_size, repeats, window,
            quantize=quantize, threads=threads, background_load=background_load, vs_llama_cpp=vs_llama_cpp,
            model=model or None,
        )  # fmt: skip
    if r.shortened:
        print(f"helium: note: {r.shortened}", file=sys.stderr)
    weights = f"{r.quantize} weights, " if r.quantize != "none" else ""
    rows = [
        ("device / dtype", f"{r.device} / {weights}{r.dtype} activations ({plural(r.threads, 'thread')})"),
        ("compiled / packed", f"{r.compiled} / {r.packed}"),
        (
            "attention window / KV cache",
            f"{r.sliding_window or 'full'} / {r.kv_cache_bytes / 2**20:,.1f} MiB",
        ),
        ("prefill", f"{r.prefill_tokens_per_s:,.0f} tok/s ({r.prompt_tokens} tokens)"),
        (f"decode (batch {r.batch_size})", f"{r.decode_tokens_per_s:,.1f} tok/s per sequence (median)"),
        ("decode runs", ", ".join(f"{t:,.0f}" for t in r.decode_runs)),
        ("time to first token", f"{r.ttft_s * 1000:.1f} ms"),
        ("peak memory", f"{r.peak_mem_bytes / 2**20:,.0f} MiB"),
        ("weights read per token", f"{r.weight_bytes / 2**20:,.1f} MiB"),
        ("measured bandwidth", f"{r.bandwidth_bytes_per_s / 1e9:,.1f} GB/s"),
        ("roofline", f"{r.roofline_tokens_per_s:,.0f} tok/s"),
        ("achieved", f"{r.roofline_fraction:.0%} of roofline"
         + (" (over 100%: the weights fit in caches faster than the memory the roofline assumes)"
            if r.roofline_fraction > 1 else "")),
    ]
    if r.cpu_kernel:
        rows.insert(1, ("CPU kernels", r.cpu_kernel))
    if r.background_load:
        rows += [
            (
                f"decode with {plural(r.background_load, 'busy process', 'busy processes')}",
                f"{r.loaded_tokens_per_s:,.1f} tok/s (median)",
            ),
            ("loaded runs", ", ".join(f"{t:,.0f}" for t in r.loaded_runs)),
            ("loaded / idle", f"{r.loaded_fraction:.0%}"),
        ]
    if r.llama_cpp and "skipped" in r.llama_cpp:
        print(f"helium: note: {r.llama_cpp['skipped']}", file=sys.stderr)
    elif r.llama_cpp:
        rows += llama_cpp_rows(r.decode_tokens_per_s, r.llama_cpp)
    print_report(
        f"helium bench decode — {r.preset} ({r.params / 1e6:.1f}M params, "
        f"{'its weights' if r.model else 'random weights'})", rows, r.to_dict(), as_json
    )


def llama_cpp_rows(helium_tokens_per_s: float, ll: dict) -> list[tuple[str, str]]:
    """The table rows of bench decode's llama.cpp comparison; a loud warning on stderr (and in the table)
    when the llama.cpp measured is not a native build."""
    from benchmarks.llama_cpp import enabled_features

    rows = [
        (f"llama.cpp {ll['type']} decode", f"{ll['tokens_per_s']:,.1f} tok/s (median)"),
        ("llama.cpp runs", ", ".join(f"{t:,.0f}" for t in ll["runs"])),
        ("Helium / llama.cpp", f"{helium_tokens_per_s / ll['tokens_per_s']:.2f}x"),
        ("llama.cpp build", enabled_features(ll["system_info"]) or ll["system_info"] or "unknown"),
    ]
    if ll.get("not_native"):
        print(f"helium: WARNING: NOT A NATIVE llama.cpp: {ll['not_native']}", file=sys.stderr)
        rows.append(("WARNING", "llama.cpp is NOT a native build: the ratio above flatters Helium"))
    return rows


@bench_app.command("startup")
def bench_startup_cmd(
    model: Annotated[str, typer.Option(help="Model for `helium tell` (default model if empty).")] = "",
    prompt: Annotated[str, typer.Option(help="Prompt to tell.")] = "Once upon a time",
    repeats: Annotated[int, typer.Option(help="Runs (best is reported).")] = 3,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile/--no-compile",
            help="Time `helium tell --compile` with Inductor's cache empty (cold, once) and filled (warm), next to "
            "`helium tell` uncompiled, in a temporary cache (yours is untouched).",
        ),
    ] = False,
    quantize: Annotated[str, typer.Option(help="`helium tell --quantize`: auto, none, int8 or int4.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object after the table.")] = False,
) -> None:
    """Time to first token of a fresh `helium tell` process, Python and torch start-up included."""
    import shutil

    from benchmarks.decode import bench_startup

    helium = shutil.which("helium")
    base = [helium] if helium else [sys.executable, "-m", "helium_tui.cli"]
    command = [*base, "tell", prompt, "--max-tokens", "16", *(["--model", model] if model else [])]
    command += ["--quantize", quantize]
    if compile:
        from benchmarks.startup import bench_compile_startup

        with user_errors():
            note = compile_note(model, quantize)
            c = bench_compile_startup(command, prompt, repeats)
        rows = [("--compile here", note or "compiles the decode step"),
                ("uncompiled: first token (best)", f"{c.uncompiled.first_token_s:.2f} s"),
            ("--compile, cold cache: first token", ", ".join(f"{t:.2f} s" for t in c.cold.runs_s)),
            ("--compile, warm cache: first token (best)", f"{c.warm.first_token_s:.2f} s"),
            ("warm runs", ", ".join(f"{t:.2f}" for t in c.warm.runs_s)),
            ("warm / uncompiled", f"{c.warm_over_uncompiled:.2f}x"),
        ]
        print_report(
            "helium bench startup --compile — fresh `helium tell` processes", rows,
            c.to_dict() | {"compile_note": note}, as_json,
        )  # fmt: skip
        return
    with user_errors():
        r = bench_startup(command, prompt, repeats)
    rows = [
        ("time to first token (best)", f"{r.first_token_s:.2f} s"),
        ("runs", ", ".join(f"{t:.2f}" for t in r.runs_s)),
        ("whole process (16 tokens)", f"{r.total_s:.2f} s"),
    ]
    print_report("helium bench startup — fresh `helium tell` process", rows, r.to_dict(), as_json)


def compile_note(model: str, quantize: str) -> str | None:
    """Why `helium tell --compile` compiles nothing for this model here (the native runtime decodes it), or None."""
    from engine.generation.session import open_session
    from engine.model.quant import quantize_option

    return open_session(model or None, compile=True, quantize=quantize_option(quantize)).compile_note


@bench_app.command("studio")
def bench_studio_cmd(
    model: Annotated[str, typer.Option(help="Model to tell with (default model if empty).")] = "",
    prompt: Annotated[str, typer.Option(help="Story opening.")] = "Once upon a time",
    max_tokens: Annotated[int, typer.Option(help="Tokens per story (a multiple of 16).")] = 208,
    width: Annotated[int, typer.Option(help="Terminal columns of the headless app.")] = 80,
    height: Annotated[int, typer.Option(help="Terminal rows of the headless app.")] = 24,
    repeats: Annotated[int, typer.Option(help="Timed stories each way (best is reported).")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object after the table.")] = False,
) -> None:
    """Streaming speed in the studio (headless) against the same generator with no UI."""
    with user_errors():
        from benchmarks.studio import bench_studio

        r = bench_studio(model or None, prompt, max_tokens, width, height, repeats)
    rows = [
        ("raw generator (no UI)", f"{r.raw_tokens_per_s:,.1f} tok/s"),
        ("studio (headless)", f"{r.studio_tokens_per_s:,.1f} tok/s"),
        ("studio / raw", f"{r.studio_fraction:.0%}"),
        ("studio runs", ", ".join(f"{t:.0f}" for t in r.studio_runs)),
    ]
    title = f"helium bench studio — {r.model}, greedy, {r.max_tokens} tokens, {r.width}x{r.height}"
    print_report(title, rows, r.to_dict(), as_json)


bench_app.command("train", help="Training speed on random tokens: tokens/s, MFU, peak memory.")(bench_train)
bench_app.command("gpu", help="The prepared GPU check: gpu tests, training and decode speed, a timed run.")(
    bench_gpu
)


@bench_app.command("inspect")
def bench_inspect_cmd(
    models: Annotated[
        list[str] | None,
        typer.Option("--model", help="'default' (the shipped model) or a preset (random weights); repeat."),
    ] = None,
    tokens: Annotated[int, typer.Option(help="Story length (cut to each model's context).")] = 400,
    repeats: Annotated[int, typer.Option(help="Timed runs after one warm-up (best is reported).")] = 3,
    threads: Annotated[int | None, typer.Option(help="Torch threads (default: torch's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object after the table.")] = False,
) -> None:
    """Opening the "look inside" view on a story, and `helium inspect`'s steps: run_with_cache, the whole logit
    lens and one token's attribution."""
    with user_errors():
        from engine.checks import whole
        from engine.generation.threads import requested_threads

        whole("--tokens", tokens, 2, 65_536)  # a story of at least two tokens: one to look at, one before
        whole("--repeats", repeats, 1, 1_000)
        requested_threads(threads)
        from benchmarks.inspect_view import bench_inspect, rows

        report = bench_inspect(models or ["default", "nano"], tokens, repeats, threads)
    print_report(f"helium bench inspect — a {tokens}-token story", rows(report), report, as_json)


@bench_app.command("serve")
def bench_serve_cmd(
    model: Annotated[str, typer.Option(help="Model to serve (default model if empty).")] = "",
    streams: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,2,4,8,16",
    tokens: Annotated[int, typer.Option(help="Tokens per stream.")] = 64,
    soak: Annotated[float, typer.Option(help="Then 16 clients in a loop for this many seconds (0: none).")] = 0,
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    quantize: Annotated[str, typer.Option(help="The server's weights: auto, none or int8.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object after the table.")] = False,
) -> None:
    """Throughput and latency of `helium serve` with 1, 2, 4... concurrent streams (a server on a free port)."""
    from engine.checks import is_number, whole
    from engine.generation.threads import requested_threads

    with user_errors():
        levels = [whole("--streams", int(s), 1, 64) for s in streams.split(",") if s.strip()]
        whole("--tokens", tokens, 1, 32_768)
        if not (is_number(soak) and 0 <= soak <= 86_400):
            raise ValueError(f"--soak must be a number of seconds from 0 to 86,400, got {soak!r}")
        requested_threads(threads)
        if model:
            from engine.bundles.registry import resolve_model

            resolve_model(model)  # a missing model is one line now, not a server that fails to start
        from benchmarks.serve import bench_serve

        extra = ["--quantize", quantize] + (["--threads", str(threads)] if threads else [])
        r = bench_serve(model or None, levels, tokens, soak, extra)
    rows = [
        (plural(lv.streams, "stream"),
         f"{lv.tokens_per_s:,.0f} tok/s · per stream {lv.per_stream_tokens_per_s:,.0f} · TTFT p50 "
         f"{lv.ttft_p50_ms:.0f} ms · gap p50 {lv.gap_p50_ms:.1f} / p99 {lv.gap_p99_ms:.1f} ms · server CPU "
         f"{lv.server_cpu_ms_per_token:.2f} ms/token")
        for lv in r.levels
    ]  # fmt: skip
    if r.soak_s:
        rows.append(("soak (16 clients)", f"{r.soak_requests} stories in {r.soak_s:.0f} s · RSS "
                                          f"{r.rss_start_mb:.0f} → {r.rss_end_mb:.0f} MiB"))  # fmt: skip
    rows.append(("load average", " ".join(f"{x:.2f}" for x in r.load_average)))
    print_report(f"helium bench serve — {r.model}, {r.tokens} tokens a stream", rows, r.to_dict(), as_json)
