"""Open a model for generation in one call: resolve, pick device/dtype, load, wrap in a Generator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.bundle import Bundle, load_bundle
from engine.cpu_linear import pack_linears
from engine.generate import Generator
from engine.registry import resolve_model
from engine.runtime import dtype_name, pick_device, pick_dtype


@dataclass
class Session:
    """A loaded bundle ready to sample, with where and how it runs."""

    bundle: Bundle
    generator: Generator
    device: torch.device
    dtype: torch.dtype

    @property
    def name(self) -> str:
        """The model's name (its bundle directory)."""
        return self.bundle.name

    @property
    def dtype_name(self) -> str:
        """'bfloat16' or 'float32'."""
        return dtype_name(self.dtype)


def open_session(
    model: str | None = None, device: str = "auto", dtype: str = "auto", compile: bool = False
) -> Session:
    """Load model (path or name; None = the default) for sampling."""
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    bundle = load_bundle(resolve_model(model), device=dev, dtype=dt)
    if dev.type == "cpu" and dt == torch.bfloat16 and not compile:
        pack_linears(bundle.model)  # prepacked oneDNN bf16 kernels (Inductor cannot lower them: eager only)
    return Session(bundle, Generator(bundle.model, bundle.tokenizer, compile=compile), dev, dt)
