"""Decode speed of one preset's random weights built four ways in one process (docs/BENCHMARKS.md, "Inside the
model, interleaved in one process"): Helium's or PyTorch's kernels, int8 or bf16 weights, rounds alternating.

    python benchmarks/decode_ab.py --preset nano --threads 2 --compile --rounds 5 --json
    python benchmarks/decode_ab.py --preset nano --threads 1 --compile --rounds 5 --no-attention

One process for all four, so the machine's load falls on each alike: read the ratios per round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model.config import get_preset
from engine.model.cpu_kernels import kernel_status, use_cpu_kernels
from engine.model.cpu_linear import pack_linears
from engine.model.quant import quantize_model
from engine.model.tinyslm import Attention, TinySLM

WAYS = {  # name: (int8 weights, Helium's kernels)
    "helium int8": (True, True),
    "torch int8": (True, False),
    "helium bf16": (False, True),
    "torch bf16": (False, False),
}


class PromptIds:
    """Stands in for a tokenizer: the benchmark feeds token ids, never text."""

    def __init__(self, ids: list[int]) -> None:
        self.prompt_ids, self.bos_id, self.eos_id = ids, None, None

    def encode(self, text: str) -> list[int]:
        return self.prompt_ids


def build(preset: str, int8: bool, helium: bool, attention: bool, compile: bool, prompt: list[int]) -> Generator:
    """The preset's random weights (seed 0, the same for every way), bf16, on the kernels asked for."""
    torch.manual_seed(0)
    model = TinySLM(get_preset(preset))
    if int8:
        quantize_model(model)
    model = model.to(torch.bfloat16).eval()
    if helium:
        use_cpu_kernels(model, min_params=0)
        if not attention:
            for module in model.modules():
                if isinstance(module, Attention):
                    module.cpu_decode_attention = False
    elif not compile:
        pack_linears(model)  # PyTorch's eager bf16 path as `helium tell` runs it
    return Generator(model, PromptIds(prompt), compile=compile)


def decode_rate(gen: Generator, prompt: list[int], params: SamplingParams) -> float:
    """Tokens per second after the first token."""
    tokens = gen.tokens(prompt, params, 1)
    next(tokens)
    start, n = time.perf_counter(), 0
    for _ in tokens:
        n += 1
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-attention", action="store_true", help="Helium's matmuls only, SDPA for attention")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    vocab = get_preset(args.preset).vocab_size
    prompt = torch.randint(0, vocab, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0, repetition_penalty=1.0, stop_at_eos=False)
    gens = {way: build(args.preset, *flags, not args.no_attention, args.compile, prompt) for way, flags in WAYS.items()}
    for gen in gens.values():
        decode_rate(gen, prompt, params)  # warm-up (and compilation)
    rounds = [{way: decode_rate(gen, prompt, params) for way, gen in gens.items()} for _ in range(args.rounds)]
    result = {
        "preset": args.preset, "threads": args.threads, "compiled": args.compile, "kernels": kernel_status(),
        "median_tokens_per_s": {way: statistics.median(r[way] for r in rounds) for way in WAYS},
        "rounds": rounds,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.preset}, {args.threads} thread(s), {'compiled' if args.compile else 'eager'}; {result['kernels']}")
        for way, rate in result["median_tokens_per_s"].items():
            print(f"  {way:12s} {rate:8.1f} tok/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
