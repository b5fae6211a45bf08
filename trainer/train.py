"""The training loop: TrainConfig, checkpoints and resume, eval, DDP, and the bundle export at the end.

Run in-process by `helium train`, in the background as `python -m trainer.train --config RUN_DIR/train_config.json
[--resume]`, and under `torchrun --nproc-per-node N` for data-parallel training (rank 0 logs and saves).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import signal
import sys
import threading
import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.bundle import save_bundle
from engine.config import ModelConfig, get_preset
from engine.errors import BundleError
from engine.files import atomic_write_text
from engine.model import TinySLM
from engine.runtime import dtype_name, pick_device, pick_training_dtype
from engine.tokenizer import TextTokenizer
from trainer import checkpoints as ckpt
from trainer.loader import TokenLoader, read_manifest
from trainer.metrics import EventLog, flops_per_token, mfu, peak_flops, progress_line
from trainer.optim import lr_at, make_optimizer, set_lr

CONFIG_FILE = "train_config.json"
EVENTS_FILE = "events.jsonl"
DEFAULT_MAX_STEPS = 1000  # when neither max_steps nor max_tokens is given
RUN_DIR_ALLOWED = {CONFIG_FILE, "train.log", "run.pid"}  # what the runner writes before the trainer starts
NAN_ENV = "HELIUM_TEST_NAN_AT_STEP"  # tests: make the loss non-finite from this step on


@dataclass
class TrainConfig:
    """Everything a training run needs; serialized as RUN_DIR/train_config.json."""

    data: str = ""  # prepared data dir (`helium data prepare`)
    out: str = ""  # run dir: config, events.jsonl, checkpoints/, bundle/
    preset: str = "micro"  # model shape from engine.config.PRESETS (vocab_size comes from the tokenizer)
    max_steps: int | None = None  # optimizer steps to train (default 1000 unless max_tokens is set)
    max_tokens: int | None = None  # alternatively: train until this many tokens (rounded up to whole steps)
    batch_size: int = 32  # global sequences per micro-step, split evenly over the ranks
    context: int | None = None  # tokens per sequence (None: the preset's context_length)
    grad_accum: int = 1  # micro-steps accumulated per optimizer step
    lr: float = 1e-3  # peak learning rate after warmup
    min_lr: float | None = None  # learning rate at the end of the cosine decay (None: lr / 10)
    warmup_steps: int = 100  # linear warmup steps
    decay_steps: int | None = None  # steps of the cosine decay (None: max_steps)
    weight_decay: float = 0.1  # AdamW weight decay on matrices only
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    dropout: float = 0.0  # dropout on attention and MLP outputs
    eval_interval: int = 200  # steps between val-loss evals (0 = only at the end)
    eval_batches: int = 20  # fixed val batches per eval
    ckpt_interval: int = 500  # steps between checkpoints (0 = only at the end or on stop)
    keep_last: int = 3  # step checkpoints kept (0 = all); best.pt is kept as well
    log_interval: int = 10  # steps between progress lines / `step` events (the only host syncs)
    compile: bool | None = None  # torch.compile the model (None: on for CUDA, off for CPU)
    dtype: str = "auto"  # autocast dtype: auto, bfloat16 or float32
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    seed: int = 1337  # seeds weights, dropout and the data stream
    command: str = ""  # the command line that started the run (recorded in the bundle)

    def to_dict(self) -> dict:
        """Plain dict for train_config.json."""
        return asdict(self)

    @property
    def final_lr(self) -> float:
        """The learning rate the cosine decays to: min_lr, or a tenth of the peak when it is not set."""
        return self.min_lr if self.min_lr is not None else self.lr / 10

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Rebuild from a dict, rejecting unknown keys."""
        if not isinstance(data, dict):
            raise ValueError("training config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}")
        return cls(**data).validate()

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a train_config.json."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: training config missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: unreadable training config ({type(exc).__name__})") from None
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def with_(self, **changes) -> TrainConfig:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> TrainConfig:
        """Raise ValueError (one line) for values that cannot work."""
        get_preset(self.preset)
        positive = ["batch_size", "grad_accum", "eval_batches", "log_interval"]
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ["max_steps", "max_tokens", "context", "decay_steps"]:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ["warmup_steps", "eval_interval", "ckpt_interval", "keep_last"]:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if not (self.lr > 0 and 0 <= self.final_lr <= self.lr):
            raise ValueError(f"need lr > 0 and 0 <= min_lr <= lr, got lr {self.lr} and min_lr {self.min_lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("AdamW betas must be in [0, 1)")
        return self

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The preset's shape with this run's vocab, context and dropout."""
        return get_preset(self.preset).with_(
            vocab_size=vocab_size, context_length=self.context, dropout=self.dropout
        )

    def tokens_per_step(self, context: int) -> int:
        """Tokens per optimizer step over all ranks."""
        return self.batch_size * self.grad_accum * context

    def total_steps(self, context: int) -> int:
        """max_steps, or max_tokens rounded up to whole steps, or the default."""
        if self.max_steps is not None:
            return self.max_steps
        if self.max_tokens is not None:
            return math.ceil(self.max_tokens / self.tokens_per_step(context))
        return DEFAULT_MAX_STEPS


# ---------------------------------------------------------------- distributed


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0  # global rank
    world: int = 1  # number of processes
    local_rank: int = 0  # rank on this machine (picks the GPU)

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, saves checkpoints and exports the bundle."""
        return self.rank == 0


def init_distributed(requested_device: str) -> Dist:
    """Join the process group torchrun set up (NCCL on GPU, gloo on CPU), or a 1-process Dist."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as td

    dist = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = requested_device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(dist.local_rank)
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist


def all_reduce_mean(t: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Average t over ranks in place (no-op on one process)."""
    if dist.world > 1:
        import torch.distributed as td

        td.all_reduce(t, op=td.ReduceOp.SUM)
        t /= dist.world
    return t


def all_agree(flag: bool, dist: Dist) -> bool:
    """True on every rank if flag is True on any rank."""
    if dist.world <= 1:
        return flag
    import torch.distributed as td

    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device(dist))
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return bool(t.item())


def _collective_device(dist: Dist) -> torch.device:
    import torch.distributed as td

    return torch.device("cuda", dist.local_rank) if td.get_backend() == "nccl" else torch.device("cpu")


class RankAbort(Exception):
    """Another rank failed during setup; this rank exits quietly."""


class NonFiniteLoss(Exception):
    """Loss or gradient norm became NaN/inf."""


# ---------------------------------------------------------------- run dir


def check_fresh_run_dir(out: Path) -> None:
    """ValueError unless out is absent, empty, or holds only what the runner writes before starting."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    if out.is_dir():
        extra = sorted(p.name for p in out.iterdir() if p.name not in RUN_DIR_ALLOWED)
        if extra:
            raise ValueError(
                f"{out}: run dir exists and is not empty (use --resume to continue it, or a new --out)"
            )


# ---------------------------------------------------------------- the trainer


class Trainer:
    """One training run: set up from a TrainConfig, then `run()` returns the process exit code."""

    def __init__(self, cfg: TrainConfig, resume: bool, dist: Dist) -> None:
        self.cfg, self.resume, self.dist = cfg, resume, dist
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.events: EventLog | None = None  # rank 0 once the run dir is ours
        self.stop_requested = False  # set by SIGINT/SIGTERM: stop after the current step
        self.best_val: float | None = None  # lowest val loss so far (best.pt)
        self.last_val: float | None = None  # latest val loss
        self.step, self.tokens, self.elapsed_before = 0, 0, 0.0  # optimizer steps and tokens done
        self.t_start = time.perf_counter()  # start of this session's training
        nan_at = os.environ.get(NAN_ENV)
        self._nan_hook = int(nan_at) if nan_at else None

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        """Check inputs, claim the run dir, build model and optimizer, restore a checkpoint on resume."""
        cfg, dist = self.cfg, self.dist
        if not cfg.data:
            raise ValueError("no data dir given (--data PREPARED_DIR)")
        if not cfg.out:
            raise ValueError("no run dir given (--out RUN_DIR)")
        if cfg.batch_size % dist.world:
            raise ValueError(f"batch size {cfg.batch_size} is not divisible by the world size {dist.world}")
        if dist.world > 1 and pick_device(cfg.device).type == "cuda":
            self.device = torch.device("cuda", dist.local_rank)
        else:
            self.device = pick_device(cfg.device)
        self.dtype = pick_training_dtype(self.device, cfg.dtype)
        self.compiled = cfg.compile if cfg.compile is not None else self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        data = Path(cfg.data)
        manifest = read_manifest(data)
        tok_path = data / "tokenizer.json"
        if not tok_path.is_file():
            raise ValueError(f"{tok_path}: missing (run `helium data prepare` again)")
        eot = int(manifest.get("eot_id", 0))
        try:
            self.tokenizer = TextTokenizer.from_file(tok_path, eot, eot)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
            raise ValueError(
                f"{tok_path}: not a valid tokenizer ({str(exc).splitlines()[0][:120]})"
            ) from None
        self.model_config = cfg.model_config(self.tokenizer.vocab_size)
        self.context = self.model_config.context_length
        self.max_steps = cfg.total_steps(self.context)
        self.decay_steps = cfg.decay_steps or self.max_steps
        self.tokens_per_step = cfg.tokens_per_step(self.context)
        self.rank_batch = cfg.batch_size // dist.world
        self.train_loader = TokenLoader(
            data, "train", self.rank_batch, self.context, cfg.seed, dist.rank, dist.world
        )
        val_loader = TokenLoader(
            data, "val", self.rank_batch, self.context, cfg.seed + 1, dist.rank, dist.world
        )
        self.val_batches = [val_loader.batch(i) for i in range(cfg.eval_batches)]  # fixed for the whole run

        self._claim_run_dir()

        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        self.model = TinySLM(self.model_config).to(self.device).train()
        self.optimizer = make_optimizer(
            self.model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), self.device
        )
        if self.resume:
            self._load_latest()
        if self.dist.main:
            atomic_write_text(self.out / CONFIG_FILE, json.dumps(self.cfg.to_dict(), indent=2) + "\n")

        self.wrap_model()
        self.flops_token = flops_per_token(self.model_config, self.context)
        self.peak = peak_flops(self.device, self.dtype)

    def wrap_model(self) -> None:
        """self.fwd: the (compiled) model that eval runs; self.train_model: the same under DDP."""
        self.fwd = torch.compile(self.model) if self.compiled else self.model
        self.train_model = self.fwd
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.train_model = DDP(self.fwd, device_ids=ids)

    def first_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first step of a session; if torch.compile fails there, fall back to eager and retry."""
        if not self.compiled:
            return self.train_step(self.step)
        try:
            return self.train_step(self.step)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: train eager instead
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.emit("log", message=f"torch.compile failed, training eager: {type(exc).__name__}: {reason}")
            self.say(f"torch.compile failed ({type(exc).__name__}); training eager")
            self.optimizer.zero_grad(set_to_none=True)
            self.compiled = False
            self.wrap_model()
            return self.train_step(self.step)

    def _claim_run_dir(self) -> None:
        """Rank 0 checks and prepares the run dir; every rank learns whether that worked."""
        error: str | None = None
        if self.dist.main:
            try:
                if self.resume:
                    if not (self.out / CONFIG_FILE).is_file() and not self.ckpt_dir.is_dir():
                        raise ValueError(f"{self.out}: nothing to resume (no {CONFIG_FILE} or checkpoints/)")
                else:
                    check_fresh_run_dir(self.out)
                self.out.mkdir(parents=True, exist_ok=True)
                ckpt.remove_stale_temps(self.ckpt_dir)
                self.events = EventLog(self.out / EVENTS_FILE)
            except (ValueError, OSError) as exc:
                error = str(exc)
        if all_agree(error is not None, self.dist):
            if error:
                raise ValueError(error)
            raise RankAbort()

    def _load_latest(self) -> None:
        """Restore weights, optimizer, counters and RNG from the newest step checkpoint."""
        path = ckpt.latest_checkpoint(self.ckpt_dir)
        if path is None:
            raise ValueError(f"{self.ckpt_dir}: no checkpoint to resume from")
        state = ckpt.load_checkpoint(path, self.device)
        try:
            saved = ModelConfig.from_dict(state["model_config"])
            if saved != self.model_config:
                raise ValueError(
                    f"{path}: checkpoint model shape differs from the config (preset/context/vocab changed?)"
                )
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.tokens = int(state["step"]), int(state["tokens"])
            self.elapsed_before = float(state["elapsed_s"])
            self.best_val = state["best_val_loss"]
            self.last_val = state["val_loss"]
            ckpt.set_rng_state(state["rng"], self.device)
        except (KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(
                f"{path}: checkpoint does not fit this run ({str(exc).splitlines()[0][:160]})"
            ) from None
        self.resumed_from = path

    # ------------------------------------------------------------ events and output

    def emit(self, event: str, **fields) -> None:
        """Write an event (rank 0 only)."""
        if self.events is not None:
            self.events.write(event, **fields)

    def say(self, line: str) -> None:
        """A progress line on stdout (rank 0 only)."""
        if self.dist.main:
            print(line, flush=True)

    # ------------------------------------------------------------ steps

    def autocast(self):
        """bf16 autocast where chosen, else nothing."""
        if self.dtype == torch.bfloat16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def loss_of(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy."""
        with self.autocast():
            logits = model(x)  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step (all micro-steps); returns (mean loss, grad norm) as device tensors."""
        cfg = self.cfg
        set_lr(self.optimizer, lr_at(step, cfg.lr, cfg.final_lr, cfg.warmup_steps, self.decay_steps))
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum):
            x, y = self.train_loader.batch(step * cfg.grad_accum + micro)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            last = micro == cfg.grad_accum - 1
            sync = nullcontext() if last or self.dist.world == 1 else self.train_model.no_sync()
            with sync:
                loss = self.loss_of(self.train_model, x, y) / cfg.grad_accum
                loss.backward()
            total += loss.detach()
        if self._nan_hook is not None and step >= self._nan_hook:
            total = total * float("nan")
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, grad_norm

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean val loss over the fixed val batches (averaged over ranks)."""
        self.model.eval()
        total = torch.zeros((), device=self.device)
        for x, y in self.val_batches:
            total += self.loss_of(self.fwd, x.to(self.device), y.to(self.device))
        self.model.train()
        total /= len(self.val_batches)
        return float(all_reduce_mean(total, self.dist).item())

    def check_ranks_in_sync(self) -> None:
        """Under DDP every rank must hold the same weights; compare a checksum across ranks."""
        import torch.distributed as td

        total = sum(p.detach().double().sum() for p in self.model.parameters())
        device = _collective_device(self.dist)
        lo, hi = total.to(device).clone(), total.to(device).clone()
        td.all_reduce(lo, op=td.ReduceOp.MIN)
        td.all_reduce(hi, op=td.ReduceOp.MAX)
        if lo.item() != hi.item():
            raise RuntimeError(f"DDP ranks hold different weights (checksums {lo.item()} vs {hi.item()})")
        self.emit(
            "log", message=f"ddp: {self.dist.world} ranks hold identical weights (checksum {hi.item():.6f})"
        )

    # ------------------------------------------------------------ checkpoints and export

    def state_dict(self) -> dict:
        """A checkpoint: plain tensors, dicts, ints, floats and strings only."""
        return {
            "format": ckpt.FORMAT,
            "step": self.step,
            "tokens": self.tokens,
            "elapsed_s": self.elapsed(),
            "val_loss": self.last_val,
            "best_val_loss": self.best_val,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": ckpt.rng_state(self.device),
            "model_config": self.model_config.to_dict(),
            "train_config": self.cfg.to_dict(),
        }

    def save(self, best: bool = False) -> Path | None:
        """Write step_NNNNNN.pt (pruning old ones) or best.pt; rank 0 only."""
        if not self.dist.main:
            return None
        path = self.ckpt_dir / ckpt.BEST if best else ckpt.step_path(self.ckpt_dir, self.step)
        ckpt.save_checkpoint(path, self.state_dict())
        if not best:
            ckpt.prune(self.ckpt_dir, self.cfg.keep_last)
            self.saved_step = self.step
        self.emit("checkpoint", step=self.step, path=str(path), best=best)
        return path

    def export(self) -> Path:
        """RUN_DIR/bundle: the final weights as a model bundle (`helium tell --model RUN_DIR/bundle`)."""
        export_model = TinySLM(self.model_config.with_(dropout=0.0))
        export_model.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        metadata = {
            "data": str(Path(self.cfg.data).resolve()),
            "steps": self.step,
            "tokens": self.tokens,
            "val_loss": self.last_val,
            "best_val_loss": self.best_val,
            "preset": self.cfg.preset,
            "train_command": self.cfg.command,
            "train_config": self.cfg.to_dict(),
        }
        return save_bundle(self.out / "bundle", export_model, self.tokenizer, metadata)

    def elapsed(self) -> float:
        """Training wall time over all sessions of this run."""
        return self.elapsed_before + (time.perf_counter() - self.t_start)

    # ------------------------------------------------------------ the loop

    def _on_signal(self, signum, frame) -> None:
        if self.stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop_requested = True
        self.say(f"{signal.Signals(signum).name}: finishing the current step, then saving a checkpoint")

    def run(self) -> int:
        """Train to max_steps (or until stopped); return the exit code."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._run()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _run(self) -> int:
        cfg, dist = self.cfg, self.dist
        self.saved_step = self.step if self.resume else -1
        evaluated_step = -1
        self.emit(
            "start",
            step=self.step,
            max_steps=self.max_steps,
            tokens_per_step=self.tokens_per_step,
            params=self.model.num_params(),
            preset=cfg.preset,
            device=str(self.device),
            dtype=dtype_name(self.dtype),
            world_size=dist.world,
            pid=os.getpid(),
            compiled=self.compiled,
            context=self.context,
            resumed=self.resume,
        )
        self.emit("status", status="running", step=self.step)
        self.say(
            f"training {cfg.preset} ({self.model.num_params() / 1e6:.2f}M params, context {self.context}) "
            f"on {self.device} {dtype_name(self.dtype)}{' compiled' if self.compiled else ''}, "
            f"{dist.world} process(es), {self.tokens_per_step} tokens/step, steps {self.step}->{self.max_steps}"
        )
        self.t_start = time.perf_counter()
        t_log, step_log = time.perf_counter(), self.step
        start_step = self.step
        loss_sum = torch.zeros((), device=self.device)
        grad_norm = torch.zeros((), device=self.device)
        try:
            while self.step < self.max_steps:
                first = self.step == start_step
                loss, grad_norm = self.first_step() if first else self.train_step(self.step)
                loss_sum += loss
                self.step += 1
                self.tokens += self.tokens_per_step
                at_end = self.step == self.max_steps
                do_log = self.step % cfg.log_interval == 0 or at_end
                do_eval = (cfg.eval_interval and self.step % cfg.eval_interval == 0) or at_end
                do_ckpt = (cfg.ckpt_interval and self.step % cfg.ckpt_interval == 0) or at_end
                if dist.world == 1:  # a Python flag: free to read every step
                    stop = self.stop_requested
                else:  # ranks must agree, which costs a sync: only at log points
                    stop = all_agree(self.stop_requested, dist) if do_log else False
                if do_log or do_eval or do_ckpt or stop:
                    mean = all_reduce_mean(loss_sum / max(1, self.step - step_log), dist)
                    loss_value, norm_value = float(mean.item()), float(grad_norm.item())
                    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                        raise NonFiniteLoss(
                            f"loss is {loss_value} at step {self.step} (grad norm {norm_value})"
                        )
                    now = time.perf_counter()
                    rate = self.tokens_per_step * (self.step - step_log) / max(now - t_log, 1e-9)
                    step_time = (now - t_log) / max(1, self.step - step_log)
                    eta = (self.max_steps - self.step) * step_time
                    if do_eval:
                        self.last_val = self.evaluate()
                        evaluated_step = self.step
                        if not math.isfinite(self.last_val):
                            raise NonFiniteLoss(f"val loss is {self.last_val} at step {self.step}")
                        self.emit("eval", step=self.step, val_loss=self.last_val)
                        if self.best_val is None or self.last_val < self.best_val:
                            self.best_val = self.last_val
                            self.save(best=True)
                    lr = self.optimizer.param_groups[0]["lr"]
                    value = mfu(rate, self.flops_token, self.peak, dist.world)
                    self.emit(
                        "step",
                        step=self.step,
                        loss=loss_value,
                        lr=lr,
                        tokens_per_s=rate,
                        mfu=value,
                        grad_norm=norm_value,
                        tokens=self.tokens,
                        elapsed_s=self.elapsed(),
                        eta_s=eta,
                    )
                    self.say(
                        progress_line(
                            self.step, self.max_steps, loss_value, self.last_val, lr, rate, value, eta
                        )
                    )
                    if do_ckpt or stop:
                        self.save()
                    loss_sum.zero_()
                    t_log, step_log = time.perf_counter(), self.step
                if stop:
                    self.emit("status", status="stopped", step=self.step)
                    self.say(f"stopped at step {self.step}; resume with --resume")
                    return 0
        except NonFiniteLoss as exc:
            good = ckpt.latest_checkpoint(self.ckpt_dir)
            message = f"{exc}; stopping (last good checkpoint: {good or 'none'})"
            self.emit("error", message=message, tail=[])
            self.emit("status", status="failed", step=self.step)
            if dist.main:
                print(f"helium: error: {message}", file=sys.stderr, flush=True)
            return 1
        if dist.world > 1:
            self.check_ranks_in_sync()
        if evaluated_step != self.step:
            self.last_val = self.evaluate()
        if self.saved_step != self.step:
            self.save()
        bundle = self.export() if dist.main else None
        if dist.world > 1:  # every rank leaves together, after rank 0 has written the bundle
            import torch.distributed as td

            td.barrier()
        self.emit("status", status="finished", step=self.step, bundle=str(bundle) if bundle else None)
        self.say(
            f"finished: {self.step} steps, {self.tokens} tokens, val loss {self.last_val:.3f}; bundle {bundle}"
        )
        return 0


# ---------------------------------------------------------------- entry points


def run_training(cfg: TrainConfig, resume: bool = False) -> int:
    """Run (or resume) a training run in this process; returns the exit code (0 ok, 1 failed, 2 bad input)."""
    dist: Dist | None = None
    trainer: Trainer | None = None
    try:
        dist = init_distributed(cfg.device)
        trainer = Trainer(cfg, resume, dist)
        trainer.setup()
        return trainer.run()
    except RankAbort:
        return 2
    except (ValueError, OSError, BundleError) as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if dist is None or dist.main or dist.world > 1:
            prefix = f"[rank {dist.rank}] " if dist and not dist.main else ""
            print(f"helium: error: {prefix}{message}", file=sys.stderr, flush=True)
        _fail_events(trainer, message, [])
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the handler was installed, or a second Ctrl-C
        print("helium: interrupted: stopped without saving this step (the last checkpoint is kept)", file=sys.stderr)
        if trainer is not None and trainer.events is not None:
            trainer.emit("status", status="stopped", step=trainer.step)
        return 130
    except Exception as exc:  # noqa: BLE001 - record the crash for the dashboard, then show it
        tail = traceback.format_exc().strip().splitlines()[-12:]
        _fail_events(trainer, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", tail)
        traceback.print_exc()
        return 1
    finally:
        if dist is not None and dist.world > 1:
            trainer = None  # drop the DDP wrapper (it holds the process group) before tearing down
            leave_process_group()


def leave_process_group() -> None:
    """Tear down gloo/NCCL while the interpreter is fully alive.

    The DDP reducer keeps the process group (and gloo's worker threads) alive; left to interpreter
    shutdown they can abort the process ("terminate called without an active exception"). So: collect
    the dropped DDP wrapper, then destroy the group.
    """
    import gc

    import torch.distributed as td

    gc.collect()
    if td.is_initialized():
        td.destroy_process_group()


def _fail_events(trainer: Trainer | None, message: str, tail: list[str]) -> None:
    """Record error + status failed in a run dir we own (never in someone else's)."""
    if trainer is not None and trainer.events is not None:
        trainer.emit("error", message=message, tail=tail)
        trainer.emit("status", status="failed", step=trainer.step)


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.train --config RUN_DIR/train_config.json [--resume]`."""
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path of a train_config.json")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in the run dir"
    )
    args = parser.parse_args(argv)
    try:
        cfg = TrainConfig.load(args.config)
    except ValueError as exc:
        print(f"helium: error: {exc}", file=sys.stderr)
        return 2
    if not cfg.command:
        cfg = cfg.with_(command=shlex.join(["python", "-m", "trainer.train", *(argv or sys.argv[1:])]))
    return run_training(cfg, resume=args.resume)


if __name__ == "__main__":
    sys.exit(main())
