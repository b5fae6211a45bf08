"""Nano's five matmul shapes of one decode token through every kernel Helium can call (docs/BENCHMARKS.md,
"Matmuls alone" and "Prefetching the next weight rows"): microseconds per call, or GB/s of weights read.

Hot (default): the same weight each call, best of --rounds rounds of --calls calls, one process, kernels
interleaved. Cold (--cold): enough copies of the head (32000 x 512) to pass the caches, cycled, in GB/s.

    python benchmarks/matmuls.py --threads 1 --rounds 30 --calls 20 --json
    python benchmarks/matmuls.py --threads 1 --cold --copies 20 --json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from engine.model import cpu_kernels
from engine.model.quant import quantize_rows

SHAPES = {"qkv": (1536, 512), "wo": (512, 512), "w13": (2304, 512), "w2": (512, 1152), "head": (32000, 512)}  # N x K
Call = Callable[[], torch.Tensor]


def candidates(n: int, k: int, seed: int = 0) -> dict[str, Call]:
    """One row of bf16 activations times an (n, k) weight, each way Helium or PyTorch can multiply it."""
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, k, generator=gen) * 0.02).to(torch.bfloat16)
    x = torch.randn(1, k, generator=gen).to(torch.bfloat16)
    q, scale = quantize_rows(w)
    scale_f32, row_sum = scale.float().contiguous(), q.sum(dim=1, dtype=torch.int32)
    ways: dict[str, Call] = {
        "torch int8 (_weight_int8pack_mm)": lambda: torch.ops.aten._weight_int8pack_mm(x, q, scale.to(torch.bfloat16)),
        "F.linear bf16": lambda: F.linear(x, w),
    }
    if torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
        ways["oneDNN bf16 prepacked"] = lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    kernels = cpu_kernels.kernels()
    if kernels.int8_path:
        ways["helium int8 (ctypes)"] = lambda: cpu_kernels.int8_mm(x, q, scale_f32, row_sum)
        ways["helium int8 (op)"] = lambda: torch.ops.helium.int8_mm(x, q, scale_f32, row_sum)
    if kernels.bf16:
        ways["helium bf16 (op)"] = lambda: torch.ops.helium.bf16_mm(x, w)
    return ways


def best_us(call: Call, calls: int) -> float:
    """Microseconds per call of one timed batch of `calls` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def hot(rounds: int, calls: int) -> dict[str, dict[str, float]]:
    """{shape: {kernel: best µs per call}} with the kernels interleaved round by round."""
    results: dict[str, dict[str, float]] = {}
    for name, (n, k) in SHAPES.items():
        ways = candidates(n, k)
        best = {way: float("inf") for way in ways}
        for _ in range(rounds):
            for way, call in ways.items():
                best[way] = min(best[way], best_us(call, calls))
        results[f"{name} {n}x{k}"] = best
    return results


def cold(copies: int, rounds: int) -> dict[str, float]:
    """{kernel: GB/s of weights read} cycling `copies` copies of the head's weight (median of rounds)."""
    n, k = SHAPES["head"]
    sets = [candidates(n, k, seed=i) for i in range(copies)]
    weight_bytes = {"int8": n * k, "bf16": 2 * n * k}
    rates: dict[str, list[float]] = {way: [] for way in sets[0]}
    for _ in range(rounds):
        for way in rates:
            start = time.perf_counter()
            for ways in sets:
                ways[way]()
            seconds = time.perf_counter() - start
            rates[way].append(copies * weight_bytes["int8" if "int8" in way else "bf16"] / seconds / 1e9)
    return {way: sorted(values)[len(values) // 2] for way, values in rates.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--cold", action="store_true", help="cycle copies of the head: GB/s instead of µs")
    parser.add_argument("--copies", type=int, default=20, help="with --cold: copies of the head's weight")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "kernels": cpu_kernels.kernel_status()}
    if args.cold:
        result["cold_gb_per_s"] = cold(args.copies, args.rounds)
    else:
        result["hot_us_per_call"] = hot(args.rounds, args.calls)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.threads} thread(s); {result['kernels']}")
    for shape, ways in result.get("hot_us_per_call", {"cold, GB/s": result.get("cold_gb_per_s")}).items():
        print(shape)
        for way, value in ways.items():
            print(f"  {way:34s} {value:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
