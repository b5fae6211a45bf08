"""Helium's CPU kernels for decoding (engine/model/csrc/cpu_mm.c): the few rows of a decode step.

- `helium::int8_mm`: int8 weights. PyTorch's weight-only kernel (`aten._weight_int8pack_mm`) widens every int8
  weight to float and multiplies, so on one core it is bound by arithmetic. This one quantizes the activation
  rows to int8 too (one scale per row) and multiplies bytes by bytes with AVX512-VNNI or AVX-VNNI, as
  llama.cpp's Q8_0 does, which leaves it bound by memory.
- `helium::bf16_mm`: bf16 weights, summed in float32 by AVX512-BF16's dot product: oneDNN's batch-1 bf16
  linear reaches about half of what memory allows.
- `helium::decode_attention`: one new position over the KV cache, reading only the slots written so far
  (SDPA reads them all and masks the rest).
Both matmuls hint the next weight rows to the memory system, which a lone core needs to stream at full speed.

The C file is built once with the system's C compiler (`cc`, or $CC) into a private folder of Helium's cache and
loaded with ctypes only after the checks in engine/model/kernel_build.py; the kernels are torch ops, so compiled decode
steps call them too, and each op checks its tensors before C reads them. Where they cannot run (no compiler, a
CPU without these instructions, not x86, a cache others can write, HELIUM_CPU_KERNELS=torch) decoding keeps
PyTorch's kernels: `kernel_status()` says which run, and why.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from dataclasses import dataclass

import torch
import torch.nn as nn

from engine.generation.threads import SMALL_MODEL_PARAMS
from engine.model.cpu_linear import PackedLinear
from engine.model.kernel_build import KernelCacheError, load_library
from engine.model.quant import PACK_MM_MAX_ROWS, Int8Linear
from engine.model.tinyslm import Attention, TinySLM

KERNEL_ENV = "HELIUM_CPU_KERNELS"  # auto (default), vnni512, vnni256 (int8 through AVX-VNNI) or torch
KERNEL_CHOICES = ("auto", "vnni512", "vnni256", "torch")
_INT8_PATHS = {"vnni512": 2, "vnni256": 1}  # helium_vnni_path()'s codes
MAX_ATTENTION_SLOTS = 65536  # decode attention's scores live on the stack
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
    if os.name != "posix":
        return Kernels(None, why_not=f"no Helium kernels on {platform.system()}")
    try:
        lib = load_library()
    except (OSError, KernelCacheError) as exc:
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


def int8_mm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, row_sum: torch.Tensor) -> torch.Tensor:
    """x (M, K) bf16/float32 @ int8 weight (N, K)^T with float32 row scales and int32 row sums -> (M, N) in x's dtype."""
    k = kernels()
    _check("int8_mm", "x", x, 2, _FLOATS, contiguous=False)
    _check("int8_mm", "weight", weight, 2, (torch.int8,))
    _check("int8_mm", "scale", scale, 1, (torch.float32,))
    _check("int8_mm", "row_sum", row_sum, 1, (torch.int32,))
    m, n = x.shape[0], weight.shape[0]
    if x.shape[1] != weight.shape[1] or scale.shape[0] != n or row_sum.shape[0] != n:
        raise ValueError(
            f"helium::int8_mm: shapes do not fit: x {_shape(x)} @ weight {_shape(weight)}^T (M, K) @ (N, K)^T, "
            f"scale {_shape(scale)} and row_sum {_shape(row_sum)} (N,)"
        )
    if not k.int8_path:
        raise RuntimeError(f"helium::int8_mm cannot run here: {k.int8}")
    x = x.contiguous()
    y = torch.empty(m, n, dtype=x.dtype)
    bf16 = int(x.dtype == torch.bfloat16)
    status = k.lib.helium_int8_mm(
        k.int8_path, x.data_ptr(), bf16, m, x.shape[1], weight.data_ptr(), scale.data_ptr(), row_sum.data_ptr(), n,
        y.data_ptr(), bf16, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"helium_int8_mm failed ({'out of memory' if status == -2 else status})")
    return y


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Attention of one new position (q: B, H, 1, D) over the cache slots it sees (k, v: B, H_kv, S, D), the
    first min(input_pos + 1, S) of them: a filled prefix, or a whole ring once it wraps. bf16 or float32."""
    n = _attention_slots(q, k, v, input_pos)
    lib = kernels()
    if not lib.attention:
        why = lib.why_not or "this CPU has no AVX2 with FMA"
        raise RuntimeError(f"helium::decode_attention cannot run here: {why}")
    q = q.contiguous()
    out = torch.empty_like(q)
    status = lib.lib.helium_decode_attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), int(q.dtype == torch.bfloat16), q.shape[0],
        q.shape[1], k.shape[1], k.shape[2], q.shape[3], n, torch.get_num_threads(),
    )  # fmt: skip
    if status != 0:
        raise RuntimeError(f"helium_decode_attention failed ({status})")
    return out


def _attention_slots(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor) -> int:
    """How many cache slots decode_attention reads, once its tensors fit the kernel (ValueError says how not)."""
    op = "decode_attention"
    _check(op, "q", q, 4, _FLOATS, contiguous=False)
    _check(op, "k", k, 4, (q.dtype,))
    _check(op, "v", v, 4, (q.dtype,))
    (b, h, t, d), (_, h_kv, slots, _) = q.shape, k.shape
    if t != 1 or k.shape != v.shape or k.shape[0] != b or k.shape[3] != d or h_kv == 0 or h % h_kv or slots == 0:
        raise ValueError(
            f"helium::{op}: shapes do not fit: q {_shape(q)} (B, H, 1, D) over k {_shape(k)} and v {_shape(v)} "
            "(B, H_kv, S, D), S > 0 and H a multiple of H_kv"
        )
    if d % 8 or not 8 <= d <= 512:
        raise ValueError(f"helium::{op}: head dim {d} is not a multiple of 8 up to 512")
    if input_pos.numel() != 1 or not input_pos.is_cpu or input_pos.dtype not in _POSITIONS:
        got = f"{_shape(input_pos)} {input_pos.dtype} on {input_pos.device}"
        raise ValueError(f"helium::{op}: input_pos must be one integer position on the CPU, not {got}")
    position = int(input_pos.item())  # item(), not [0]: no select op (~7 us) a layer
    if position < 0:
        raise ValueError(f"helium::{op}: input_pos {position} is negative")
    n = min(position + 1, slots)
    if n > MAX_ATTENTION_SLOTS:
        raise ValueError(f"helium::{op}: attends over at most {MAX_ATTENTION_SLOTS} cache slots, not {n}")
    return n


def bf16_mm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (M, K) @ weight (N, K)^T, both bf16, summed in float32 -> (M, N) bf16."""
    k = kernels()
    _check("bf16_mm", "x", x, 2, (torch.bfloat16,), contiguous=False)
    _check("bf16_mm", "weight", weight, 2, (torch.bfloat16,))
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"helium::bf16_mm: shapes do not fit: x {_shape(x)} @ weight {_shape(weight)}^T "
                         "(M, K) @ (N, K)^T")  # fmt: skip
    if not k.bf16:
        raise RuntimeError(f"helium::bf16_mm cannot run here: {k.bf16_name}")
    x = x.contiguous()
    m, n = x.shape[0], weight.shape[0]
    y = torch.empty(m, n, dtype=torch.bfloat16)
    status = k.lib.helium_bf16_mm(x.data_ptr(), m, x.shape[1], weight.data_ptr(), n, y.data_ptr(),
                                  torch.get_num_threads())  # fmt: skip
    if status != 0:
        raise RuntimeError(f"helium_bf16_mm failed ({status})")
    return y


_FLOATS = (torch.float32, torch.bfloat16)
_POSITIONS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_C_INT_MAX = 2**31 - 1  # the kernels take sizes as C ints


def _check(
    op: str, name: str, t: torch.Tensor, dims: int, dtypes: tuple[torch.dtype, ...], contiguous: bool = True
) -> None:
    """ValueError (naming the op and the tensor) unless t is a CPU tensor of dims dimensions in one of dtypes, each
    size a C int, and contiguous where the kernel reads it in place."""
    if not isinstance(t, torch.Tensor):
        why = f"is a {type(t).__name__}, not a tensor"
    elif not t.is_cpu:
        why = f"is on {t.device}, not the CPU"
    elif t.dtype not in dtypes:
        why = f"is {t.dtype}, not {' or '.join(str(d) for d in dtypes)}"
    elif t.dim() != dims:
        why = f"has shape {_shape(t)}, not {dims} dimensions"
    elif contiguous and not t.is_contiguous():
        why = f"is not contiguous (shape {_shape(t)}, strides {t.stride()}): pass .contiguous()"
    elif t.numel() > _C_INT_MAX and max(t.shape) > _C_INT_MAX:
        why = f"has shape {_shape(t)}, a size over {_C_INT_MAX}"
    else:
        return
    raise ValueError(f"helium::{op}: {name} {why}")


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


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
            if not isinstance(getattr(child, "weight", None), torch.Tensor) or not child.weight.is_contiguous():
                continue  # the kernels read a weight in place
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
    attention = k.attention and model.config.context_length <= MAX_ATTENTION_SLOTS
    for module in model.modules():
        if isinstance(module, Attention) and attention and _attention_fits(module):
            module.cpu_decode_attention = True
            changed += 1
    return changed


def _attention_fits(attn: Attention) -> bool:
    """The decode attention kernel's limits: CPU, float32 or bf16, head_dim a multiple of 8 up to 512."""
    w = attn.wo.weight
    dtype = attn.wo.weight_scale.dtype if isinstance(attn.wo, Int8Linear) else w.dtype
    fits = w.device.type == "cpu" and dtype in (torch.float32, torch.bfloat16)
    return fits and attn.head_dim % 8 == 0 and attn.head_dim <= 512
