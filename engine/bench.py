"""Decode benchmark on random weights: prefill and batch-1 decode speed against the memory roofline.

Batch-1 decoding reads every weight once per token, so tokens/s is bounded by memory bandwidth ÷ weight
bytes; `measure_bandwidth` reads a large buffer to estimate what this machine actually sustains.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import torch

from engine.catalog import bench_config
from engine.checks import whole
from engine.cpu_linear import pack_linears
from engine.generate import Generator
from engine.model import TinySLM
from engine.runtime import dtype_name, pick_device, pick_dtype
from engine.sampling import SamplingParams


@dataclass
class DecodeBench:
    """Results of one decode benchmark."""

    preset: str
    params: int
    device: str
    dtype: str
    compiled: bool
    packed: bool  # CPU bf16 linears prepacked for oneDNN
    sliding_window: int | None  # attention window (None: full causal)
    kv_cache_bytes: int  # the static KV cache (a ring of `window` slots with a sliding window)
    batch_size: int
    prompt_tokens: int
    new_tokens: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float  # per sequence; batch throughput = this × batch_size
    ttft_s: float
    peak_mem_bytes: int
    weight_bytes: int
    bandwidth_bytes_per_s: float
    roofline_tokens_per_s: float
    roofline_fraction: float
    threads: int

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def sync(device: torch.device) -> None:
    """Wait for queued device work so clocks measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_bandwidth(device: torch.device, nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Sustained read bandwidth in bytes/s: best of several full reductions over a large buffer."""
    x = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    x.sum()
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return nbytes / best


class _RandomTokenizer:
    """Stands in for a tokenizer: the benchmark feeds token ids, never text."""

    def __init__(self, prompt_ids: list[int]) -> None:
        self.prompt_ids, self.bos_id, self.eos_id = prompt_ids, None, None

    def encode(self, text: str) -> list[int]:
        return self.prompt_ids


def bench_decode(
    preset: str = "nano",
    device: str = "auto",
    dtype: str = "auto",
    compile: bool = False,
    packed: bool = True,
    prompt_tokens: int = 128,
    new_tokens: int = 200,
    batch_size: int = 1,
    repeats: int = 3,
    window: int | None = None,
) -> DecodeBench:
    """Benchmark prefill and decode of a randomly initialised preset (window: override its sliding window,
    0 = full causal attention)."""
    whole("--prompt-tokens", prompt_tokens)
    whole("--new-tokens", new_tokens)
    whole("--batch-size", batch_size, high=4096)
    whole("--repeats", repeats, high=1000)
    if window is not None:
        whole("--window", window, low=0, high=1 << 20)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    cfg = bench_config(preset)  # a preset, or a catalog model's shape (stories15M, ...)
    if window is not None:
        cfg = replace(cfg, sliding_window=window or None)
    if prompt_tokens + new_tokens > cfg.context_length:
        raise ValueError(f"prompt + new tokens must fit the context ({cfg.context_length})")
    torch.manual_seed(0)
    model = TinySLM(cfg).to(device=dev, dtype=dt).eval()
    packed = packed and not compile and dev.type == "cpu" and dt == torch.bfloat16 and pack_linears(model) > 0
    prompt = torch.randint(0, cfg.vocab_size, (prompt_tokens,)).tolist()
    gen = Generator(model, _RandomTokenizer(prompt), compile=compile)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, repetition_penalty=1.0, stop_at_eos=False)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def run_once() -> tuple[float, float, float]:
        sync(dev)
        t0 = time.perf_counter()
        it = gen.tokens(prompt, params, batch_size)
        next(it)
        sync(dev)
        t1 = time.perf_counter()
        n = 1
        for _ in it:
            n += 1
        sync(dev)
        t2 = time.perf_counter()
        return t1 - t0, (n - 1) / (t2 - t1), prompt_tokens * batch_size / (t1 - t0)

    run_once()  # warm-up (and compilation)
    runs = [run_once() for _ in range(repeats)]
    ttft = min(r[0] for r in runs)
    decode = max(r[1] for r in runs)
    prefill = max(r[2] for r in runs)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_bytes = sum(b.numel() * b.element_size() for layer in model.layers for b in layer.attn.cache.buffers())
    bandwidth = measure_bandwidth(dev)
    roofline = bandwidth / weight_bytes
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return DecodeBench(
        preset=preset,
        params=model.num_params(),
        device=str(dev),
        dtype=dtype_name(dt),
        compiled=compile and gen.compile_failed is None,
        packed=bool(packed),
        sliding_window=cfg.sliding_window,
        kv_cache_bytes=kv_bytes,
        batch_size=batch_size,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        prefill_tokens_per_s=prefill,
        decode_tokens_per_s=decode,
        ttft_s=ttft,
        peak_mem_bytes=int(peak),
        weight_bytes=weight_bytes,
        bandwidth_bytes_per_s=bandwidth,
        roofline_tokens_per_s=roofline,
        roofline_fraction=decode / roofline,
        threads=torch.get_num_threads(),
    )


@dataclass
class StartupBench:
    """Wall time from launching `helium tell` to its first generated byte (start-up included)."""

    command: list[str]
    first_token_s: float  # best of the runs
    runs_s: list[float]
    total_s: float  # whole process, best run

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def bench_startup(command: list[str], prompt: str, repeats: int = 3) -> StartupBench:
    """Run command (which prints prompt then the story) and time the first byte after the prompt."""
    import subprocess

    whole("--repeats", repeats, high=1000)
    firsts, totals = [], []
    expected = prompt.encode("utf-8")
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = b""
        first = None
        while True:
            chunk = proc.stdout.read1(4096)  # type: ignore[union-attr]
            if not chunk:
                break
            seen += chunk
            if first is None and len(seen) > len(expected):
                first = time.perf_counter() - t0
        err = proc.stderr.read().decode(errors="replace").strip()  # type: ignore[union-attr]
        if proc.wait() != 0:
            raise ValueError(f"{' '.join(command[:3])} failed: {err.splitlines()[-1] if err else proc.returncode}")
        totals.append(time.perf_counter() - t0)
        firsts.append(first if first is not None else totals[-1])
    return StartupBench(command, min(firsts), firsts, min(totals))
