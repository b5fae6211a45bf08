"""Decode benchmark: prefill and batch-1 decode speed against the memory roofline, on a model bundle (the one
`helium tell` would use by default) or a preset's shape with random weights.

Batch-1 decoding reads every weight once per token, so tokens/s is bounded by memory bandwidth ÷ weight
bytes; `measure_bandwidth` reads a large buffer to estimate what this machine actually sustains.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import torch

from engine.checks import whole
from engine.generation.generate import Generator
from engine.generation.runtime import dtype_name, pick_device, pick_dtype
from engine.generation.sampling import SamplingParams
from engine.generation.threads import apply_threads, requested_threads
from engine.hub.catalog import bench_config
from engine.model.cpu_kernels import kernels_in_use, use_cpu_kernels
from engine.model.cpu_linear import pack_linears
from engine.model.native import native_status
from engine.model.quant import check_quantize, quantize_model
from engine.model.tinyslm import TinySLM


@dataclass
class DecodeBench:
    """Results of one decode benchmark (speeds are medians over the timed runs)."""

    preset: str
    params: int
    device: str
    dtype: str  # the activations' dtype
    quantize: str  # "none", "int8" or "int4" (weight-only)
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
    decode_runs: list[float] = field(default_factory=list)  # tokens/s of each timed run, in order
    background_load: int = 0  # busy processes run during the loaded runs
    loaded_tokens_per_s: float | None = None  # median decode speed while they ran
    loaded_runs: list[float] = field(default_factory=list)
    loaded_fraction: float | None = None  # loaded / idle, from runs interleaved in this benchmark
    llama_cpp: dict | None = None  # --vs-llama-cpp: llama.cpp's runs on the same shape (benchmarks.llama_cpp)
    cpu_kernel: str | None = None  # what CPU decode steps run (the native runtime, else kernels_in_use)
    native_decode: str | None = None  # CPU: "on" (engine.model.native), else why the torch path ran
    model: str | None = None  # the bundle measured (None: the preset's shape with random weights)
    shortened: str | None = None  # why the default prompt / new token counts were shortened to fit the context

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


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of weights a batch-1 decode step reads: parameters plus int8 weights and their scales, once each."""
    tensors = {id(p): p for p in model.parameters()}
    tensors |= {id(b): b for name, b in model.named_buffers() if name.endswith(("weight", "weight_scale"))}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """n processes that spin on a CPU each until the block ends (a stand-in for other work on the machine)."""
    procs = [
        subprocess.Popen([sys.executable, "-S", "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]
    try:
        time.sleep(0.3 if n else 0)  # let them start spinning
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


class _RandomTokenizer:
    """Stands in for a tokenizer: the benchmark feeds token ids, never text."""

    def __init__(self, prompt_ids: list[int]) -> None:
        self.prompt_ids, self.bos_id, self.eos_id = prompt_ids, None, None

    def encode(self, text: str) -> list[int]:
        return self.prompt_ids


def bench_model(
    preset: str, dev: torch.device, dt: torch.dtype, window: int | None = None, quantize: str = "none"
) -> TinySLM:
    """The benchmark's model: the preset's shape (window: override its sliding window, 0 = full causal) with
    random weights (seed 0), in dt on dev, quantized if asked."""
    cfg = bench_config(preset)  # a preset, or a catalog model's shape (stories15M, ...)
    if window is not None:
        cfg = replace(cfg, sliding_window=window or None)
    torch.manual_seed(0)
    model = TinySLM(cfg)
    if quantize == "int8":
        quantize_model(model)  # from the float32 weights, as `helium models install --dtype int8` does
    elif quantize == "int4":
        from engine.model.quant4 import quantize_model_int4

        quantize_model_int4(model)  # Q4_0 blocks from the float32 weights, as GGUF's q4_0 export
    return model.to(device=dev, dtype=dt).eval()


DEFAULT_PROMPT, DEFAULT_NEW = 128, 200  # tokens; shortened to fit a smaller context


def fit_lengths(prompt_tokens: int | None, new_tokens: int | None, context: int, what: str
                ) -> tuple[int, int, str | None]:
    """(prompt tokens, new tokens, a note when a default was shortened): the defaults shortened to fit context;
    ValueError naming the option to lower when values the user gave cannot fit."""
    prompt = DEFAULT_PROMPT if prompt_tokens is None else prompt_tokens
    new = DEFAULT_NEW if new_tokens is None else new_tokens
    whole("--prompt-tokens", prompt)
    whole("--new-tokens", new)
    if prompt + new <= context:
        return prompt, new, None
    if prompt_tokens is not None and new_tokens is not None:
        raise ValueError(f"--prompt-tokens {prompt} + --new-tokens {new} must fit {what}'s context ({context}): "
                         f"lower one (e.g. --new-tokens {max(context - prompt, 1)})")  # fmt: skip
    if new_tokens is None:
        prompt = prompt if prompt_tokens is not None else min(prompt, context // 4)
        if prompt >= context:
            raise ValueError(f"--prompt-tokens {prompt} must be under {what}'s context ({context})")
        new = min(new, context - prompt)
    else:
        if new >= context:
            raise ValueError(f"--new-tokens {new} must be under {what}'s context ({context})")
        prompt = min(prompt, context - new)
    cut = [f"--prompt-tokens {prompt} (default {DEFAULT_PROMPT})" if prompt_tokens is None and prompt != DEFAULT_PROMPT
           else "", f"--new-tokens {new} (default {DEFAULT_NEW})" if new_tokens is None and new != DEFAULT_NEW else ""]  # fmt: skip
    return prompt, new, f"shortened to fit {what}'s context of {context} tokens: {', '.join(filter(None, cut))}"


def load_model(
    model: str | None, preset: str | None, dev: torch.device, dt: torch.dtype, window: int | None, quantize: str
) -> tuple[TinySLM, str, str | None, str]:
    """(model, its label, its bundle's name or None, quantization): the preset's shape with random weights
    when a preset is given, else the bundle (None: the model `helium tell` uses)."""
    if preset:
        quantize = "none" if quantize == "auto" else quantize
        return bench_model(preset, dev, dt, window, quantize), preset, None, quantize
    from engine.bundles.bundle import load_bundle, stored_quantization
    from engine.bundles.registry import resolve_model

    path = resolve_model(model)
    quantize = stored_quantization(path) if quantize == "auto" else quantize
    loaded = load_bundle(path, device=dev, dtype=dt, quantize=quantize).model
    if window is not None:
        raise ValueError("--window changes a preset's shape: give --preset with it (a bundle keeps its own)")
    return loaded.eval(), path.name, path.name, quantize


def bench_decode(
    preset: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    compile: bool = False,
    packed: bool = True,
    prompt_tokens: int | None = None,
    new_tokens: int | None = None,
    batch_size: int = 1,
    repeats: int = 3,
    window: int | None = None,
    quantize: str = "auto",
    threads: int | None = None,
    background_load: int = 0,
    vs_llama_cpp: bool = False,
    model: str | None = None,
) -> DecodeBench:
    """Benchmark prefill and decode of a model bundle (model: a name or path; None: the default model), or with
    preset of that shape with random weights (window: override its sliding window, 0 = full causal attention).
    Default prompt and new token counts are shortened to fit the context (`DecodeBench.shortened` says so).
    With background_load, each idle run is followed by one while that many busy processes run; with
    vs_llama_cpp (presets only), by one of llama.cpp on the same weights (benchmarks.llama_cpp)."""
    if preset and model:
        raise ValueError("give --model (a bundle's weights) or --preset (random weights of a shape), not both")
    whole("--batch-size", batch_size, high=4096)
    whole("--repeats", repeats, high=1000)
    whole("--background-load", background_load, low=0, high=256)
    if quantize != "auto":
        check_quantize(quantize)
    if window is not None:
        whole("--window", window, low=0, high=1 << 20)
    requested_threads(threads)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    if preset:
        cfg = bench_config(preset)
        prompt_tokens, new_tokens, shortened = fit_lengths(prompt_tokens, new_tokens, cfg.context_length, preset)
    elif vs_llama_cpp:
        raise ValueError("--vs-llama-cpp times random weights of a shape: give --preset with it")
    llama_skipped = None
    if vs_llama_cpp:
        from benchmarks.llama_cpp import check_comparable, llama_cpp_missing

        check_comparable(dev, batch_size, cfg.sliding_window if window is None else window or None, cfg.context_length)
        llama_skipped = llama_cpp_missing()
    net, label, bundle_name, quantize = load_model(model, preset, dev, dt, window, quantize)
    cfg = net.config
    if not preset:
        prompt_tokens, new_tokens, shortened = fit_lengths(prompt_tokens, new_tokens, cfg.context_length, label)
    model = net
    n_threads = apply_threads(threads, params=cfg.parameters)  # what `helium tell` would use for this model
    packed = packed and not compile and dev.type == "cpu" and dt == torch.bfloat16 and pack_linears(model) > 0
    if dev.type == "cpu":
        use_cpu_kernels(model)  # as `helium tell` runs it (HELIUM_CPU_KERNELS=torch: PyTorch's kernels only)
    torch.manual_seed(0)
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
    runs, loaded = [], []
    with _llama_rounds(vs_llama_cpp and not llama_skipped, preset, window, quantize, dt, n_threads, prompt,
                       new_tokens) as llama:  # fmt: skip
        for _ in range(repeats):
            runs.append(run_once())
            if background_load:
                with busy_processes(background_load):
                    loaded.append(run_once()[1])
            if llama is not None:
                llama.run_round()
    decode_runs = [r[1] for r in runs]
    decode = statistics.median(decode_runs)
    nbytes = weight_bytes(model)
    kv_bytes = sum(b.numel() * b.element_size() for layer in model.layers for b in layer.attn.cache.buffers())
    bandwidth = measure_bandwidth(dev)
    roofline = bandwidth / nbytes
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev)
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    loaded_median = statistics.median(loaded) if loaded else None
    return DecodeBench(
        preset=label,
        params=model.num_params(),
        device=str(dev),
        dtype=dtype_name(dt),
        quantize=quantize,
        compiled=compile and gen.native is None and gen.compile_failed is None,  # the native runtime compiles nothing
        packed=bool(packed),
        sliding_window=cfg.sliding_window,
        kv_cache_bytes=kv_bytes,
        batch_size=batch_size,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        prefill_tokens_per_s=statistics.median(r[2] for r in runs),
        decode_tokens_per_s=decode,
        ttft_s=statistics.median(r[0] for r in runs),
        peak_mem_bytes=int(peak),
        weight_bytes=nbytes,
        bandwidth_bytes_per_s=bandwidth,
        roofline_tokens_per_s=roofline,
        roofline_fraction=decode / roofline,
        threads=n_threads,
        decode_runs=decode_runs,
        background_load=background_load,
        loaded_tokens_per_s=loaded_median,
        loaded_runs=loaded,
        loaded_fraction=loaded_median / decode if loaded_median is not None else None,
        llama_cpp=llama.report(decode) if llama else {"skipped": llama_skipped} if llama_skipped else None,
        cpu_kernel=_cpu_kernel(gen, model) if dev.type == "cpu" else None,
        native_decode=("on" if gen.native else native_status(model)) if dev.type == "cpu" else None,
        model=bundle_name,
        shortened=shortened,
    )


def _cpu_kernel(gen: Generator, model: TinySLM) -> str:
    """What the decode steps ran: the native runtime and its kernels, else the torch path's kernels."""
    return gen.native.describe() if gen.native is not None else kernels_in_use(model)


@contextmanager
def _llama_rounds(wanted: bool, preset: str, window: int | None, quantize: str, dt: torch.dtype, threads: int,
                  prompt: list[int], new_tokens: int) -> Iterator:  # fmt: skip
    """benchmarks.llama_cpp's worker on the benchmark's weights (rebuilt in float32 from the same seed), or None."""
    if not wanted:
        yield None
        return
    from benchmarks.llama_cpp import llama_rounds

    float_model = bench_model(preset, torch.device("cpu"), torch.float32, window)
    weights = quantize if quantize != "none" else dt
    with llama_rounds(float_model, weights, threads, prompt, new_tokens) as rounds:
        yield rounds


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
