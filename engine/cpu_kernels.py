"""Helium's CPU kernels for decoding (engine/csrc/cpu_mm.c): the few rows of a decode step.

- `helium::int8_mm`: int8 weights. PyTorch's weight-only kernel (`aten._weight_int8pack_mm`) widens every int8
  weight to float and multiplies, so on one core it is bound by arithmetic. This one quantizes the activation
  rows to int8 too (one scale per row) and multiplies bytes by bytes with AVX512-VNNI or AVX-VNNI, as
  llama.cpp's Q8_0 does, which leaves it bound by memory.
- `helium::bf16_mm`: bf16 weights, summed in float32 by AVX512-BF16's dot product: oneDNN's batch-1 bf16
  linear reaches about half of what memory allows.
- `helium::decode_attention`: one new position over the KV cache, reading only the slots written so far
  (SDPA reads them all and masks the rest).
Both matmuls hint the next weight rows to the memory system, which a lone core needs to stream at full speed.

The C file is built once with the system's C compiler (`cc`, or $CC) into Helium's cache and loaded with
ctypes; the kernels are torch ops, so compiled decode steps call them too. Where they cannot run (no
compiler, a CPU without these instructions, not x86, HELIUM_CPU_KERNELS=torch) decoding keeps PyTorch's
kernels: `kernel_status()` says which run, and why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from engine.cpu_linear import PackedLinear
from engine.model import Attention, TinySLM
from engine.paths import user_cache_dir
from engine.quant import PACK_MM_MAX_ROWS, Int8Linear
from engine.threads import SMALL_MODEL_PARAMS

SOURCE = Path(__file__).parent / "csrc" / "cpu_mm.c"
KERNEL_ENV = "HELIUM_CPU_KERNELS"  # auto (default), vnni512, vnni256 (int8 through AVX-VNNI) or torch
KERNEL_CHOICES = ("auto", "vnni512", "vnni256", "torch")
_INT8_PATHS = {"vnni512": 2, "vnni256": 1}  # helium_vnni_path()'s codes
_FLAGS = ["-O3", "-fno-math-errno", "-fPIC", "-shared"]
_BUILD_TIMEOUT_S = 120
_VOID, _INT = ctypes.c_void_p, ctypes.c_int


@dataclass(frozen=True)
class Kernels:
    """The loaded library, the int8 path it runs (2: AVX512-VNNI, 1: AVX-VNNI, 0: none), whether it runs bf16,
    and why a kernel does not run."""

    lib: ctypes.CDLL | None
    int8_path: int = 0
    bf16: bool = False
    attention: bool = False  # decode attention (AVX2 with FMA, which every VNNI CPU has)
    why_not: str = ""

    @property
    def int8(self) -> str:
        """'vnni512', 'vnni256', or 'torch (why)'."""
        return {2: "vnni512", 1: "vnni256"}.get(self.int8_path) or f"torch ({self.why_not or 'no VNNI'})"

    @property
    def bf16_name(self) -> str:
        """'avx512-bf16', or 'torch (why)'."""
        return "avx512-bf16" if self.bf16 else f"torch ({self.why_not or 'no AVX512-BF16'})"


def kernel_choice() -> str:
    """HELIUM_CPU_KERNELS, checked (ValueError names the choices)."""
    value = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
    if value not in KERNEL_CHOICES:
        raise ValueError(f"{KERNEL_ENV}={value!r} is not one of {', '.join(KERNEL_CHOICES)}")
    return value


@functools.cache
def load_kernels(choice: str = "auto") -> Kernels:
    """Build (once per source and compiler, cached on disk) and load the kernels for choice."""
    if choice == "torch":
        return Kernels(None, why_not=f"{KERNEL_ENV}=torch")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return Kernels(None, why_not=f"no Helium kernels for {platform.machine()}")
    try:
        lib = ctypes.CDLL(str(_built_library()))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return Kernels(None, why_not=str(exc))
    lib.helium_int8_mm.restype = lib.helium_bf16_mm.restype = _INT
    lib.helium_int8_mm.argtypes = [_INT, _VOID, _INT, _INT, _INT, _VOID, _VOID, _VOID, _INT, _VOID, _INT, _INT]
    lib.helium_bf16_mm.argtypes = [_VOID, _INT, _INT, _VOID, _INT, _VOID, _INT]
    lib.helium_decode_attention.restype = _INT
    lib.helium_decode_attention.argtypes = [_VOID] * 4 + [_INT] * 8
    best = lib.helium_vnni_path()
    path = best if choice == "auto" else _INT8_PATHS[choice]
    bf16, attention = bool(lib.helium_has_avx512_bf16()), best > 0
    if path > best:
        return Kernels(lib, 0, bf16, attention, f"this CPU cannot run {choice}")
    if path and not lib.helium_int8_paths_built() & (1 << path):
        name = {v: k for k, v in _INT8_PATHS.items()}[path]
        return Kernels(lib, 0, bf16, attention, f"the C compiler could not build the {name} path")
    return Kernels(lib, path, bf16, attention, "" if best else "this CPU has neither AVX512-VNNI nor AVX-VNNI")


def kernels() -> Kernels:
    """The kernels HELIUM_CPU_KERNELS asks for (auto: the widest this CPU runs)."""
    return load_kernels(kernel_choice())


def kernel_status() -> str:
    """One line for benchmarks: 'int8 vnni512, bf16 avx512-bf16', or with 'torch (why)' for either."""
    k = kernels()
    return f"int8 {k.int8}, bf16 {k.bf16_name}"


def _compiler() -> str:
    cc = os.environ.get("CC") or "cc"
    found = shutil.which(cc)
    if found is None:
        raise RuntimeError(f"no C compiler ({cc}) to build Helium's CPU kernels")
    return found


def _built_library() -> Path:
    """The shared library for this source and compiler, built into the cache the first time (atomically)."""
    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(_FLAGS).encode()).hexdigest()[:16]
    target = user_cache_dir() / "kernels" / f"cpu_mm-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        error = ""
        # threads where the compiler has OpenMP (else one thread); without the AVX-VNNI path where it is too old
        for extra in (["-fopenmp"], ["-fopenmp", "-DHELIUM_NO_AVX_VNNI"], [], ["-DHELIUM_NO_AVX_VNNI"]):
            cmd = [cc, *_FLAGS, *extra, str(SOURCE), "-o", str(out), "-lm"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"building Helium's CPU kernels took over {_BUILD_TIMEOUT_S} s") from None
            if done.returncode == 0:
                with open(out, "rb") as built:  # on disk before it gets its name: never a torn library
                    os.fsync(built.fileno())
                os.replace(out, target)
                return target
            error = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"Helium's CPU kernels did not build: {error}")


def int8_mm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, row_sum: torch.Tensor) -> torch.Tensor:
    """x (M, K) bf16/float32 @ int8 weight (N, K)^T with float32 row scales and int32 row sums -> (M, N) in x's dtype."""
    k = kernels()
    x = x.contiguous()
    m, n = x.shape[0], weight.shape[0]
    y = torch.empty(m, n, dtype=x.dtype)
    bf16 = int(x.dtype == torch.bfloat16)
    status = k.lib.helium_int8_mm(
        k.int8_path, x.data_ptr(), bf16, m, x.shape[1], weight.data_ptr(), scale.data_ptr(), row_sum.data_ptr(), n,
        y.data_ptr(), bf16, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"helium_int8_mm failed ({status})")
    return y


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Attention of one new position (q: B, H, 1, D) over the cache slots it sees (k, v: B, H_kv, S, D), the
    first min(input_pos + 1, S) of them: a filled prefix, or a whole ring once it wraps. bf16 or float32."""
    q = q.contiguous()
    n = min(int(input_pos.item()) + 1, k.shape[2])  # item(), not [0]: no select op (~7 us) a layer
    out = torch.empty_like(q)
    status = kernels().lib.helium_decode_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), int(q.dtype == torch.bfloat16), q.shape[0],
        q.shape[1], k.shape[1], k.shape[2], q.shape[3], n, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"helium_decode_attention failed ({status})")
    return out


def bf16_mm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (M, K) @ weight (N, K)^T, both bf16, summed in float32 -> (M, N) bf16."""
    x = x.contiguous()
    m, n = x.shape[0], weight.shape[0]
    y = torch.empty(m, n, dtype=torch.bfloat16)
    status = kernels().lib.helium_bf16_mm(x.data_ptr(), m, x.shape[1], weight.data_ptr(), n, y.data_ptr(),
                                          torch.get_num_threads())  # fmt: skip
    if status != 0:
        raise RuntimeError(f"helium_bf16_mm failed ({status})")
    return y


# torch.ops.helium.*, so compiled decode steps call them too. Registered with the plain Library API:
# `torch.library.custom_op` wraps each call in autograd and Dynamo layers that cost ~25 us more per matmul.
_LIBRARY = torch.library.Library("helium", "DEF")
_LIBRARY.define("int8_mm(Tensor x, Tensor weight, Tensor scale, Tensor row_sum) -> Tensor")
_LIBRARY.define("bf16_mm(Tensor x, Tensor weight) -> Tensor")
_LIBRARY.define("decode_attention(Tensor q, Tensor k, Tensor v, Tensor input_pos) -> Tensor")
_LIBRARY.impl("int8_mm", int8_mm, "CPU")
_LIBRARY.impl("bf16_mm", bf16_mm, "CPU")
_LIBRARY.impl("decode_attention", decode_attention, "CPU")


@torch.library.register_fake("helium::int8_mm")
def _(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, row_sum: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


@torch.library.register_fake("helium::decode_attention")
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.register_fake("helium::bf16_mm")
def _(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])


def _few_rows(x: torch.Tensor, features: int) -> int:
    """x's rows when they are few enough for the decode kernels (a decode step), else 0."""
    rows = x.numel() // features
    return rows if rows < PACK_MM_MAX_ROWS and not torch.is_grad_enabled() else 0


class VnniLinear(Int8Linear):
    """An Int8Linear (same int8 weight and scales, ties kept) whose decode-step matmuls run `helium::int8_mm`.

    It keeps float32 scales and each row's weight sum as extra buffers, outside the state dict.
    """

    @classmethod
    def from_int8(cls, linear: Int8Linear) -> VnniLinear:
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.in_features, new.out_features = linear.in_features, linear.out_features
        new.register_buffer("weight", linear.weight)
        new.register_buffer("weight_scale", linear.weight_scale)
        new.register_buffer("scale_f32", linear.weight_scale.float().contiguous(), persistent=False)
        new.register_buffer("row_sum", linear.weight.sum(dim=1, dtype=torch.int32), persistent=False)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _few_rows(x, self.in_features)
        if not rows or x.dtype not in (torch.bfloat16, torch.float32):
            return super().forward(x)
        out = torch.ops.helium.int8_mm(x.reshape(rows, self.in_features), self.weight, self.scale_f32, self.row_sum)
        return out.reshape(*x.shape[:-1], self.out_features)


class Bf16DotLinear(PackedLinear):
    """A bias-free bf16 linear (same weight parameter, ties kept) whose decode-step matmuls run `helium::bf16_mm`;
    more rows go to oneDNN's prepacked kernel when the linear was packed, else F.linear."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Bf16DotLinear:
        return cls.sharing(linear, linear.packed if isinstance(linear, PackedLinear) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _few_rows(x, self.in_features)
        if rows and x.dtype == torch.bfloat16:
            out = torch.ops.helium.bf16_mm(x.reshape(rows, self.in_features), self.weight)
            return out.reshape(*x.shape[:-1], self.out_features)
        return super().forward(x)


def kernels_in_use(model: TinySLM) -> str:
    """What a CPU model's decode steps run, for benchmarks: the matmuls' kernel ('vnni512', 'vnni256',
    'avx512-bf16', or 'torch' with why Helium's cannot run), then '+ decode attention' when its attention runs
    Helium's kernel too."""
    modules, k = list(model.modules()), kernels()
    attention = " + decode attention" if any(getattr(m, "cpu_decode_attention", False) for m in modules) else ""
    if any(isinstance(m, VnniLinear) for m in modules):
        return k.int8 + attention
    if any(isinstance(m, Bf16DotLinear) for m in modules):
        return k.bf16_name + attention
    if k.lib is not None and model.config.parameters < SMALL_MODEL_PARAMS:
        return f"torch (models under {SMALL_MODEL_PARAMS // 1_000_000}M parameters are bound by the cost of each call)"
    if any(isinstance(m, Int8Linear) for m in modules):
        return k.int8 + attention
    if any(isinstance(m, nn.Linear) and m.weight.dtype == torch.bfloat16 for m in modules):
        return k.bf16_name + attention
    return "torch" + attention


def use_cpu_kernels(model: TinySLM, min_params: int = SMALL_MODEL_PARAMS) -> int:
    """Run a CPU model's decode steps on Helium's kernels where this CPU has them, in place: its Int8Linears
    (VNNI) and bias-free bf16 linears (AVX512-BF16) become the kernels' linears, and its attention layers attend
    one new position through `helium::decode_attention`. Returns how many modules changed. Inference only.

    Models under min_params keep PyTorch's kernels: their matmuls are so small that a step is bound by the cost
    of each call, which is higher for these (a Python op: ~10 us against ~3) than what they save (the default
    model decoded 15% slower with them)."""
    choice = kernel_choice()  # a bad HELIUM_CPU_KERNELS is an error for every model
    if model.config.parameters < min_params:
        return 0  # and nothing is built for it
    k = load_kernels(choice)
    changed = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = None
            if type(child) is Int8Linear and k.int8_path and child.weight.device.type == "cpu":
                new = VnniLinear.from_int8(child)
            elif (
                type(child) in (nn.Linear, PackedLinear)
                and k.bf16
                and child.bias is None
                and child.weight.dtype == torch.bfloat16
                and child.weight.device.type == "cpu"
            ):
                new = Bf16DotLinear.from_linear(child)
            if new is not None:
                setattr(parent, name, new)
                changed += 1
    for module in model.modules():
        if isinstance(module, Attention) and k.attention and _attention_fits(module):
            module.cpu_decode_attention = True
            changed += 1
    return changed


def _attention_fits(attn: Attention) -> bool:
    """The decode attention kernel's limits: CPU, float32 or bf16, head_dim a multiple of 8 up to 512."""
    w = attn.wo.weight
    dtype = attn.wo.weight_scale.dtype if isinstance(attn.wo, Int8Linear) else w.dtype
    return w.device.type == "cpu" and dtype in (torch.float32, torch.bfloat16) and attn.head_dim % 8 == 0 and attn.head_dim <= 512
