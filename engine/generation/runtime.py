"""Runtime choices: device, dtype and `torch.compile` with an eager fallback (its compiled code kept in a private
folder of Helium's cache, so the next process loads it instead of compiling again).

Auto picks cuda > mps > cpu, and bf16 where matmuls run natively in bf16 (CUDA, CPUs with
AVX512-BF16 or AMX), else float32.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from engine.devices import DEVICE_CHOICES, DTYPE_CHOICES

log = logging.getLogger(__name__)

# Inductor's weight freezing on the CPU (CompiledFn's docstring): off, so that what it compiles can be cached
FREEZE_WEIGHTS_ON_CPU = False
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, or the best available: cuda > mps > cpu."""
    if requested and requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"unknown device {requested!r} (use {DEVICE_CHOICES})")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but no CUDA GPU is available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' requested but MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX-BF16 (bf16 matmuls in hardware)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """The requested dtype, or bf16 where the hardware runs it natively, else float32."""
    if requested and requested != "auto":
        try:
            return DTYPES[requested]
        except KeyError:
            raise ValueError(f"unknown dtype {requested!r} (use {DTYPE_CHOICES})") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def pick_training_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """Like pick_dtype, but auto trains in float32 on CPUs: bf16 autocast measured ~1.4x slower there."""
    if (not requested or requested == "auto") and device.type == "cpu":
        return torch.float32
    return pick_dtype(device, requested)


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' / 'float32'."""
    return str(dtype).removeprefix("torch.")


def compile_cache_dir() -> Path:
    """Where Inductor keeps what it compiled (FX graphs and their C++ builds): inductor/ in Helium's kernel cache,
    checked as that is (a folder of yours alone, never a link). KernelCacheError says why it cannot be used."""
    from engine.model.kernel_build import KernelCacheError, private_kernel_dir, untrusted

    directory = private_kernel_dir() / "inductor"
    try:
        directory.mkdir(exist_ok=True, mode=0o700)
        st = os.lstat(directory)
    except OSError as exc:
        raise KernelCacheError(f"cannot use the compile cache {directory}: {exc.strerror}") from None
    why = "is not a folder (a link?)" if not stat.S_ISDIR(st.st_mode) else untrusted(st)
    if why:
        raise KernelCacheError(f"refusing the compile cache: {directory} {why}")
    return directory


def use_compile_cache() -> Path:
    """Point Inductor's on-disk caches (torch reads TORCHINDUCTOR_CACHE_DIR at each use) at compile_cache_dir(),
    so no other user's files in torch's default /tmp folder are ever loaded; where it cannot be used, at a new
    private temporary folder (this process compiles from scratch). Returns the folder."""
    from engine.model.kernel_build import KernelCacheError

    try:
        directory = compile_cache_dir()
    except KernelCacheError as exc:
        log.warning("%s; compiling without a cache", exc)
        directory = Path(tempfile.mkdtemp(prefix="helium-inductor-"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    return directory


class CompiledFn:
    """A callable that runs `torch.compile(fn)` for inference and falls back to eager if compiling fails.

    CUDA: CUDA graphs (mode="reduce-overhead"). CPU: Inductor, with the weights as graph inputs.

    Freezing (FREEZE_WEIGHTS_ON_CPU) folds the weights into the graph as constants and prepacks them for oneDNN
    (nano bf16 decode, before Helium's own kernels: 150-168 -> 222 tok/s), but Inductor cannot cache prepacked
    weights (mkldnn tensors do not pickle) and AOTAutograd caches no frozen graph, so every process compiled
    again. Without prepacking freezing bought nothing measurable (the default model, 1 thread, load 4-9, two
    processes each: int8 368 and 314 tok/s frozen against 323 and 461 not; bf16 77, 79 against 163, 96) and a
    cached start took longer (int8 12.0 s against 8.0, bf16 18.8 against 12.8): it is off. When on, freezing
    must be on while Dynamo traces (it decides there whether weights are graph inputs or
    constants), so each call runs inside a scoped config patch rather than flipping torch's global
    config, which would also freeze the trainer's no_grad evaluation. Frozen weights mean: call fn only
    under no_grad/inference_mode, on weights that no longer change. Calls with arguments of a shape seen
    before skip the patch: a compiled call inside it measured 2.65 ms instead of 1.83 (the default model).
    What Inductor and AOTAutograd compile is cached on disk (use_compile_cache): the next process with the same
    model shape loads it instead of compiling (Dynamo still traces, seconds).
    """

    def __init__(self, fn: Callable, device: torch.device, enabled: bool = True) -> None:
        self.eager = fn
        self.enabled = enabled
        self.failed: str | None = None  # why compilation was abandoned, if it was
        self.compiled = None
        self.freeze = device.type == "cpu" and FREEZE_WEIGHTS_ON_CPU
        self._compiled_for: set[tuple] = set()  # argument signatures already compiled with freezing
        if enabled:
            use_compile_cache()
            mode = "reduce-overhead" if device.type == "cuda" else "default"  # CUDA graphs on GPU
            self.compiled = torch.compile(fn, mode=mode, fullgraph=True, dynamic=False)

    def forget(self) -> None:
        """The next call of every signature runs under the freezing patch again (call after the module's
        state changes in a way that makes Dynamo recompile, e.g. a new KV cache)."""
        self._compiled_for.clear()

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            if not self.freeze:
                return self.compiled(*args, **kwargs)
            key = _signature(args, kwargs)
            if key in self._compiled_for:
                return self.compiled(*args, **kwargs)
            import torch._inductor.config as inductor_config

            with inductor_config.patch(freezing=True):
                out = self.compiled(*args, **kwargs)
            self._compiled_for.add(key)
            return out
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
            self.failed = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("torch.compile failed, running eager: %s", self.failed)
            self.compiled = None
            return self.eager(*args, **kwargs)


def _signature(args: tuple, kwargs: dict) -> tuple:
    """What Dynamo specializes a call on: tensors' shapes, dtypes and devices, other arguments' values."""

    def one(a):
        return (tuple(a.shape), a.dtype, a.device) if isinstance(a, torch.Tensor) else a

    return tuple(one(a) for a in args) + tuple((k, one(v)) for k, v in sorted(kwargs.items()))
