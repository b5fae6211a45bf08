"""What `--device` and `--dtype` accept, in words: one torch-free source for every command's help and the
runtime's errors (engine.generation.runtime.pick_device / pick_dtype take exactly these)."""

from __future__ import annotations

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"  # auto: cuda > mps > cpu
DTYPE_CHOICES = "auto, float32 or bfloat16"  # auto: bf16 where the hardware runs it natively
