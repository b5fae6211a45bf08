"""llama.cpp next to Helium on one model and thread count: batch-1 greedy decode speed of its GGUF export.

`python -m benchmarks.gguf --model helium-default --threads 2 [--json]` (needs llama-cpp-python). Every
measurement runs in a fresh process, so torch's and llama.cpp's OpenMP pools never share one; rounds alternate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from benchmarks.llama_cpp import (
    cpu_flags,
    decode_speed,
    greedy_decode,
    native_problem,
    open_llama,
    system_info,
)

SYSTEMS = ("helium float32", "helium bfloat16", "llama.cpp f32", "llama.cpp bf16", "llama.cpp q8_0")


@dataclass
class GGUFBench:
    """Decode tokens/s of each system over the rounds, and whether llama.cpp's f32 greedy tokens equal Helium's."""

    model: str
    params: int
    threads: int
    prompt_tokens: int
    new_tokens: int
    rounds: int
    tokens_per_s: dict[str, list[float]] = field(default_factory=dict)  # system -> one value per round
    same_greedy_tokens: bool = False  # llama.cpp f32 and Helium float32 picked the same new_tokens tokens
    llama_cpp_system_info: str = ""  # llama_print_system_info() of the build measured
    llama_cpp_not_native: str | None = None  # why that build is weaker than a native one (None: native)

    def median(self, system: str) -> float:
        """Median tokens/s of one system."""
        return statistics.median(self.tokens_per_s[system])

    def to_dict(self) -> dict:
        """Plain dict for JSON, medians included."""
        return asdict(self) | {"median_tokens_per_s": {s: self.median(s) for s in self.tokens_per_s}}


def measure(system: str, model: str, gguf: Path | None, threads: int, prompt: str, new_tokens: int) -> dict:
    """One greedy decode of new_tokens after prompt (end tokens ignored): {"tokens_per_s", "tokens"}."""
    import torch

    torch.set_num_threads(threads)
    from engine.generation.session import open_session

    engine, dtype = system.split()
    session = open_session(model, device="cpu", dtype="float32" if engine == "llama.cpp" else dtype)
    prompt_ids = session.bundle.tokenizer.encode(prompt)
    if engine == "helium":
        from engine.generation.sampling import SamplingParams

        params = SamplingParams(
            max_new_tokens=new_tokens, temperature=0, repetition_penalty=1.0, stop_at_eos=False
        )
        for _ in session.generator.tokens(prompt_ids, replace(params, max_new_tokens=8)):  # warm-up
            pass
        times, tokens = [], []
        for nxt, _ in session.generator.tokens(prompt_ids, params):
            times.append(time.perf_counter())
            tokens.append(int(nxt))
        return {"tokens_per_s": decode_speed(times), "tokens": tokens}
    assert gguf is not None
    llm = open_llama(gguf, session.bundle.config.context_length, threads)
    greedy_decode(llm, prompt_ids, 8)  # warm-up
    tokens_per_s, tokens = greedy_decode(llm, prompt_ids, new_tokens)
    return {"tokens_per_s": tokens_per_s, "tokens": tokens, "system_info": system_info()}


def bench_gguf(
    model: str = "helium-default", threads: int = 2, new_tokens: int = 200, rounds: int = 3,
    prompt: str = "Once upon a time",
) -> GGUFBench:  # fmt: skip
    """Export model to GGUF (f32, bf16, q8_0), then time every system in fresh processes, rounds interleaved."""
    from engine.bundles.bundle import load_bundle
    from engine.bundles.registry import resolve_model
    from engine.formats.gguf import export_gguf

    path = resolve_model(model)
    bundle = load_bundle(path)
    prompt_ids = bundle.tokenizer.encode(prompt)
    if len(prompt_ids) + new_tokens > bundle.config.context_length:
        raise ValueError(f"prompt + new tokens must fit the context ({bundle.config.context_length})")
    result = GGUFBench(bundle.name, bundle.model.num_params(), threads, len(prompt_ids), new_tokens, rounds)
    with tempfile.TemporaryDirectory(prefix="helium-bench-gguf-") as tmp:
        ggufs = {
            s: export_gguf(bundle, Path(tmp) / f"{s.split()[1]}.gguf", s.split()[1])
            for s in SYSTEMS
            if "llama" in s
        }
        tokens: dict[str, list[int]] = {}
        for _ in range(rounds):
            for system in SYSTEMS:
                out = _run_worker(system, str(path), ggufs.get(system), threads, prompt, new_tokens)
                result.tokens_per_s.setdefault(system, []).append(out["tokens_per_s"])
                tokens[system] = out["tokens"]
                result.llama_cpp_system_info = out.get("system_info", result.llama_cpp_system_info)
    result.llama_cpp_not_native = native_problem(result.llama_cpp_system_info, cpu_flags())
    result.same_greedy_tokens = tokens["llama.cpp f32"] == tokens["helium float32"]
    return result


def _run_worker(
    system: str, model: str, gguf: Path | None, threads: int, prompt: str, new_tokens: int
) -> dict:
    """measure() in a fresh Python process; its JSON answer."""
    cmd = [sys.executable, "-m", "benchmarks.gguf", "--worker", system, "--model", model, "--threads", str(threads),
           "--prompt", prompt, "--new-tokens", str(new_tokens)]  # fmt: skip
    if gguf is not None:
        cmd += ["--gguf", str(gguf)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{system} worker failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(r: GGUFBench) -> str:
    """A plain table: each system's median (min–max) tokens/s and its ratio to Helium float32."""
    base = r.median("helium float32")
    lines = [
        f"{r.model} ({r.params / 1e6:.2f}M params), {r.threads} threads, {r.prompt_tokens}-token prompt, "
        f"{r.new_tokens} greedy tokens, median of {r.rounds} rounds",
        f"{'system':<18}{'tok/s':>9}  {'range':>13}  {'x Helium f32':>12}",
    ]
    for system, values in r.tokens_per_s.items():
        spread = f"{min(values):.0f}–{max(values):.0f}"
        lines.append(f"{system:<18}{r.median(system):>9.0f}  {spread:>13}  {r.median(system) / base:>12.2f}")
    lines.append(
        f"llama.cpp f32 greedy tokens equal Helium float32's: {'yes' if r.same_greedy_tokens else 'NO'}"
    )
    lines.append(f"llama.cpp system info: {r.llama_cpp_system_info or 'unknown'}")
    if r.llama_cpp_not_native:
        lines.append(f"WARNING: NOT A NATIVE llama.cpp: {r.llama_cpp_not_native}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: the benchmark, or (--worker) one measurement printed as JSON."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gguf", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="helium-default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--json", action="store_true", help="table on stderr, one JSON object on stdout")
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--gguf", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(
            json.dumps(
                measure(args.worker, args.model, args.gguf, args.threads, args.prompt, args.new_tokens)
            )
        )
        return
    result = bench_gguf(args.model, args.threads, args.new_tokens, args.rounds, args.prompt)
    print(report(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
