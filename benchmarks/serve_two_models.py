"""Two models served at once: `python -m benchmarks.serve_two_models [--streams 8] [--tokens 200] [--json]`.

A `helium serve` process (its own HELIUM_HOME, holding an int4 copy of the shipped model as a second installed
model) is asked by N streams for the shipped model alone, then by N streams for each model at the same time.
Each model has its own decode thread and they run in parallel: with both busy, neither should stall, and
together they should serve at least what one served alone. Prints a table, then one JSON line with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from benchmarks.serve import ROOT, free_port, one_stream, percentile, start_server

FIRST, SECOND = "helium-default", "default-int4"


def streams(client: httpx.Client, url: str, models: list[str], n: int, tokens: int) -> dict[str, dict]:
    """n streams per model, all at once: each model's tokens/s over the wall time and its gaps p50/p99 (ms)."""
    asks = [(m, i) for m in models for i in range(n)]
    start = time.perf_counter()
    with ThreadPoolExecutor(len(asks)) as pool:
        runs = list(pool.map(lambda a: (a[0], one_stream(client, url, a[0], tokens, a[1])), asks))
    wall = time.perf_counter() - start
    out = {}
    for m in models:
        mine = [r for name, r in runs if name == m]
        gaps = [g for _, gs, _, _ in mine for g in gs]
        out[m] = {"tokens_per_s": round(sum(c for _, _, c, _ in mine) / wall, 1),
                  "per_stream_tokens_per_s": round(statistics.median(c / s for _, _, c, s in mine), 1),
                  "gap_p50_ms": round(1000 * percentile(gaps, 0.5), 2), "gap_p99_ms": round(1000 * percentile(gaps, 0.99), 2)}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="the server's --threads (default: its own choice)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["HELIUM_HOME"] = home
        subprocess.run([sys.executable, "-m", "helium_tui.cli", "models", "install", str(ROOT / "assets" / FIRST),
                        "--name", SECOND, "--dtype", "int4"], check=True, capture_output=True)  # fmt: skip
        port = free_port()
        proc = start_server(FIRST, port, args.streams, ["--threads", str(args.threads)] if args.threads else [])
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(limits=httpx.Limits(max_connections=64)) as client:
                streams(client, url, [FIRST, SECOND], 1, 8)  # both loaded and warm
                alone = streams(client, url, [FIRST], args.streams, args.tokens)
                second_alone = streams(client, url, [SECOND], args.streams, args.tokens)
                both = streams(client, url, [FIRST, SECOND], args.streams, args.tokens)
        finally:
            proc.terminate()
            proc.wait(30)
    result = {"streams": args.streams, "tokens": args.tokens, "threads": args.threads, "alone": alone | second_alone, "both": both,
              "load_average": os.getloadavg()}  # fmt: skip
    print(f"{args.streams} streams per model, {args.tokens} tokens each: tok/s (gap p50 / p99 ms)")
    for m in (FIRST, SECOND):
        a, b = result["alone"][m], both[m]
        print(f"  {m:15} alone {a['tokens_per_s']:7.1f} ({a['gap_p50_ms']} / {a['gap_p99_ms']})   "
              f"both at once {b['tokens_per_s']:7.1f} ({b['gap_p50_ms']} / {b['gap_p99_ms']})")
    print(f"  load average {' '.join(f'{x:.2f}' for x in result['load_average'])}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
