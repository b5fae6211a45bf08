"""Training metrics: FLOPs per token, device peak FLOPs and MFU, the throughput meter and progress lines.

Peak bf16 FLOPs of known GPUs come from the vendors' datasheets (dense, no sparsity); for a CPU the peak is
measured once with a quick matmul (see `measured_cpu_flops`), so CPU MFU is relative to achievable matmul speed.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import torch

from engine.humanize import format_duration
from engine.model.config import ModelConfig

# Dense bf16 tensor-core peak per GPU, from NVIDIA datasheets (the "with sparsity" numbers halved).
# Matched in order against torch.cuda.get_device_name(), so more specific names come first.
GPU_PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),  # H100 PCIe datasheet: 1,513 TFLOPs with sparsity
    ("H100 NVL", 835e12),  # H100 NVL datasheet: 1,671 TFLOPs with sparsity
    ("H100", 989e12),  # H100 SXM datasheet: 1,979 TFLOPs with sparsity
    ("H200", 989e12),  # H200 SXM datasheet: same tensor cores as H100 SXM
    ("GH200", 989e12),  # Grace Hopper datasheet
    ("A100", 312e12),  # A100 datasheet (SXM and PCIe)
    ("L40S", 362e12),  # L40S datasheet: 733 TFLOPs with sparsity
    ("L4", 121e12),  # L4 datasheet: 242 TFLOPs with sparsity
    ("A10G", 70e12),  # AWS A10G (g5 instances)
    ("A10", 125e12),  # A10 datasheet: 250 TFLOPs with sparsity
    ("RTX 4090", 165e12),  # Ada whitepaper, bf16 with fp32 accumulate
    ("RTX 3090", 71e12),  # Ampere GA102 whitepaper
    ("T4", 65e12),  # T4 has no bf16; fp16 tensor-core peak
]


def matmul_params(config: ModelConfig) -> int:
    """Parameters that take part in matmuls: attention and MLP projections plus the output head."""
    c = config
    per_layer = c.d_model * (c.n_head + 2 * c.kv_heads) * c.head_dim + c.d_model * c.d_model
    per_layer += c.d_model * 2 * c.hidden_dim + c.hidden_dim * c.d_model
    return c.n_layer * per_layer + c.d_model * c.vocab_size


def flops_per_token(config: ModelConfig, context: int) -> int:
    """Training FLOPs per token: 6 x matmul params (forward + backward) + 12 x n_layer x d_model x context."""
    return 6 * matmul_params(config) + 12 * config.n_layer * config.d_model * context


@functools.cache
def measured_cpu_flops(dtype: torch.dtype = torch.float32, n: int = 1024, reps: int = 20) -> float | None:
    """Best-of-reps FLOP/s of an n x n matmul on this CPU in dtype (None if it cannot be measured).

    Many short reps (~0.4 s in all) so one busy moment on a shared machine does not set the peak.
    """
    try:
        gen = torch.Generator().manual_seed(0)  # never touch the global RNG (a run's dropout uses it)
        a = torch.randn(n, n, generator=gen).to(dtype)
        b = torch.randn(n, n, generator=gen).to(dtype)
        a @ b  # warm up
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        return 2 * n**3 / best if best > 0 else None
    except RuntimeError:
        return None


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of one device: the datasheet table for GPUs, a measured matmul for CPUs, else None."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_BF16_FLOPS:
            if key in name:
                return flops if dtype == torch.bfloat16 else flops / 2  # tf32 runs at half the bf16 rate
        return None
    if device.type == "cpu":
        return measured_cpu_flops(dtype)
    return None


def mfu(tokens_per_s: float, flops_token: int, peak: float | None, world_size: int = 1) -> float | None:
    """Model FLOPs utilization in [0, 1]: achieved FLOP/s over the peak of all devices."""
    if not peak or tokens_per_s <= 0:
        return None
    return tokens_per_s * flops_token / (peak * world_size)


def format_rate(tokens_per_s: float) -> str:
    """12.3k, 1.2M, 950."""
    if tokens_per_s >= 1e6:
        return f"{tokens_per_s / 1e6:.1f}M"
    if tokens_per_s >= 1e3:
        return f"{tokens_per_s / 1e3:.1f}k"
    return f"{tokens_per_s:.0f}"


def progress_line(
    step: int,
    max_steps: int,
    loss: float,
    val_loss: float | None,
    lr: float,
    tokens_per_s: float,
    mfu_value: float | None,
    eta_s: float,
) -> str:
    """`step 100/1000 | loss 3.21 | val 3.40 | lr 6.0e-04 | 12.3k tok/s | mfu 1.2% | eta 3m10s`."""
    parts = [f"step {step}/{max_steps}", f"loss {loss:.2f}"]
    if val_loss is not None:
        parts.append(f"val {val_loss:.2f}")
    parts += [f"lr {lr:.1e}", f"{format_rate(tokens_per_s)} tok/s"]
    parts.append(f"mfu {mfu_value * 100:.1f}%" if mfu_value is not None else "mfu -")
    parts.append(f"eta {format_duration(eta_s)}")
    return " | ".join(parts)


@dataclass
class Meter:
    """Loss and time since the last log point: the mean loss, tokens/s and step time of that window."""

    tokens_per_step: int  # tokens per optimizer step over all ranks
    since_step: int = 0  # step at the last log point
    since_time: float = field(default_factory=time.perf_counter)  # clock at the last log point

    def window(self, step: int) -> tuple[int, float]:
        """(steps, seconds) since the last log point."""
        return max(1, step - self.since_step), max(time.perf_counter() - self.since_time, 1e-9)

    def rate(self, step: int) -> tuple[float, float]:
        """(tokens/s, seconds per step) over the window."""
        steps, seconds = self.window(step)
        return self.tokens_per_step * steps / seconds, seconds / steps

    def reset(self, step: int) -> None:
        """Start a new window at step."""
        self.since_step, self.since_time = step, time.perf_counter()
