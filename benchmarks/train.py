"""Training-speed benchmark on random tokens: tokens/s, MFU, step time and peak memory, eager or compiled.

No dataset needed. Warmup steps (which include compilation) are excluded and the device is synchronized
before each clock read.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch

from engine.checks import whole
from engine.generation.runtime import dtype_name, pick_device, pick_training_dtype
from engine.model.config import get_preset
from engine.model.tinyslm import TinySLM
from trainer.loss import NextTokenLoss
from trainer.metrics import flops_per_token, mfu, peak_flops
from trainer.optim import make_optimizer


@dataclass
class TrainBench:
    """Results of one training benchmark."""

    preset: str  # model preset
    params: int  # parameter count (tied embeddings once, as `helium train` counts them)
    vocab_size: int  # the model's vocabulary (the embedding's rows)
    device: str  # where it ran
    dtype: str  # autocast dtype
    compiled: bool  # torch.compile of the model
    batch_size: int  # sequences per step
    context: int  # tokens per sequence
    steps: int  # timed steps
    warmup_steps: int  # untimed steps first (compilation happens here)
    step_time_s: float  # mean wall time of one timed step
    tokens_per_s: float  # batch_size * context / step_time_s
    mfu: float | None  # achieved FLOP/s over the device peak (None: unknown peak)
    peak_flops: float | None  # the peak used for MFU (datasheet for GPUs, measured matmul for CPUs)
    flops_per_token: int  # 6 x matmul params + 12 x n_layer x d_model x context
    peak_mem_bytes: int  # CUDA: max allocated; CPU: peak resident set of the process

    def to_dict(self) -> dict:
        """Plain dict for --json."""
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mem(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def bench_train(
    preset: str = "nano",
    device: str = "auto",
    dtype: str = "auto",
    compile: bool | None = None,
    batch_size: int = 8,
    steps: int = 10,
    warmup_steps: int = 3,
    context: int | None = None,
    seed: int = 0,
    vocab_size: int | None = None,
) -> TrainBench:
    """Time `steps` AdamW training steps of preset on random tokens after `warmup_steps` untimed ones.

    vocab_size replaces the preset's (None: keep it); `helium train` takes it from the data's tokenizer.
    """
    whole("--batch-size", batch_size, high=1 << 16)
    whole("--steps", steps, high=100_000)
    whole("--warmup", warmup_steps, low=0, high=100_000)
    if context is not None:
        whole("--context", context, high=get_preset(preset).context_length)
    dev = pick_device(device)
    dt = pick_training_dtype(dev, dtype)
    compiled = compile if compile is not None else dev.type == "cuda"
    if vocab_size is not None:
        whole("--vocab-size", vocab_size, high=1 << 20)
    config = get_preset(preset).with_(context_length=context, vocab_size=vocab_size)
    ctx = config.context_length
    torch.manual_seed(seed)
    model = TinySLM(config).to(dev).train()
    optimizer = make_optimizer(model, 1e-4, 0.1, (0.9, 0.95), dev)
    loss_fn = NextTokenLoss(model, dt)  # the trainer's objective, compiled the same way
    loss_fn = torch.compile(loss_fn) if compiled else loss_fn
    gen = torch.Generator(device=dev).manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def step() -> None:
        tokens = torch.randint(0, config.vocab_size, (batch_size, ctx + 1), device=dev, generator=gen)
        loss = loss_fn(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup_steps):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    step_time = (time.perf_counter() - t0) / steps
    rate = batch_size * ctx / step_time
    fpt = flops_per_token(config, ctx)
    peak = peak_flops(dev, dt)
    return TrainBench(
        preset=preset, params=model.num_params(), vocab_size=config.vocab_size, device=str(dev),
        dtype=dtype_name(dt), compiled=compiled,
        batch_size=batch_size, context=ctx, steps=steps, warmup_steps=warmup_steps, step_time_s=step_time,
        tokens_per_s=rate, mfu=mfu(rate, fpt, peak), peak_flops=peak, flops_per_token=fpt,
        peak_mem_bytes=_peak_mem(dev),
    )  # fmt: skip
