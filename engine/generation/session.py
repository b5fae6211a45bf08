"""Open a model for generation in one call: resolve, pick device/dtype/threads, load, wrap in a Generator."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from engine.bundles.bundle import Bundle, load_bundle, stored_quantization
from engine.bundles.registry import resolve_model
from engine.generation.generate import Generator
from engine.generation.runtime import dtype_name, pick_device, pick_dtype
from engine.generation.sampling import model_defaults
from engine.generation.threads import apply_threads, requested_threads
from engine.model.cpu_kernels import use_cpu_kernels
from engine.model.cpu_linear import pack_linears
from engine.model.quant import check_quantize

NATIVE_COMPILE_NOTE = (
    "--compile does nothing here: the native runtime decodes each token in one C call, faster than a compiled "
    "step (HELIUM_NATIVE_DECODE=off compiles the PyTorch path instead)"
)


@dataclass
class Session:
    """A loaded bundle ready to sample, with where and how it runs."""

    bundle: Bundle
    generator: Generator
    device: torch.device
    dtype: torch.dtype  # the activations' dtype
    quantize: str = "none"  # "int8": weight-only int8; "int4": Q4_0 blocks (engine/model/quant4.py)
    threads: int = 1  # torch's CPU threads
    compile: bool = False  # the decode step is torch.compiled (at compile_now(), else in the first story)
    compile_note: str | None = None  # why --compile was asked for and does nothing here

    @property
    def name(self) -> str:
        """The model's name (its bundle directory)."""
        return self.bundle.name

    @property
    def sampling(self) -> dict[str, Any]:
        """The settings the model's metadata recommends (`model_defaults`; {} when none): a story's defaults."""
        return model_defaults(self.bundle.metadata)

    @property
    def dtype_name(self) -> str:
        """'bfloat16' or 'float32'."""
        return dtype_name(self.dtype)

    @property
    def precision(self) -> str:
        """How it computes, for status lines: 'bfloat16', or 'int8 · bfloat16' with int8 weights."""
        return f"{self.quantize} · {self.dtype_name}" if self.quantize != "none" else self.dtype_name

    def memory_bytes(self) -> int:
        """Bytes its tensors hold: the weights (as laid out for the kernels), the KV cache once made, and the
        native runtime's own copies; each storage counted once. What unloading the model frees."""
        tensors = [t for m in self.bundle.model.modules() for t in vars(m).values() if isinstance(t, torch.Tensor)]
        tensors += [t for m in self.bundle.model.modules() for t in (*m._parameters.values(), *m._buffers.values())
                    if t is not None]  # fmt: skip
        tensors += self.generator.native.held() if self.generator.native is not None else []
        return _storage_bytes(tensors)

    def compile_now(self) -> float:
        """Compile the decode step now (a few warm-up tokens; from Helium's cache when an earlier process
        compiled this shape), so that no story's tokens/s counts compiling. Its seconds; 0 when not compiling."""
        if not self.compile:
            return 0.0
        started = time.perf_counter()
        self.generator.warm_up()
        return time.perf_counter() - started


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the storages under tensors, each storage once (views share one)."""
    seen: dict[int, int] = {}
    for t in tensors:
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # an opaque (e.g. mkldnn) tensor: its own elements
            seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


def open_session(
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    compile: bool = False,
    quantize: str | None = None,
    threads: int | None = None,
) -> Session:
    """Load model (path or name; None = the default) for sampling.

    quantize: "int8", "int4" or "none"; None keeps what the bundle stores (an int8 bundle runs in int8).
    threads: torch's CPU threads (None: HELIUM_THREADS, else engine.generation.threads.default_threads for its size).
    """
    if quantize is not None:
        check_quantize(quantize)
    requested_threads(threads)  # a bad count or HELIUM_THREADS fails before anything loads
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    path = resolve_model(model)
    quantize = quantize or stored_quantization(path)
    bundle = load_bundle(path, device=dev, dtype=dt, quantize=quantize)
    n_threads = apply_threads(threads, params=bundle.config.parameters)
    if dev.type == "cpu" and dt == torch.bfloat16 and not compile:
        pack_linears(bundle.model)  # prepacked oneDNN bf16 kernels (Inductor cannot lower them: eager only)
    if dev.type == "cpu":
        use_cpu_kernels(bundle.model)  # Helium's decode matmuls where this CPU runs them (eager and compiled)
    generator = Generator(bundle.model, bundle.tokenizer, compile=compile)
    note = None
    if compile and generator.native is not None:
        compile, note = False, NATIVE_COMPILE_NOTE
    return Session(bundle, generator, dev, dt, quantize, n_threads, compile, note)
