"""What a training session is made of: its setup (`prepare`), its run dir (`Reporter`) and its saves (`Checkpointer`).

`trainer.train.Trainer` runs the loop; everything here is what the loop delegates to, so the loop reads short.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.bundles.bundle import load_bundle, save_bundle
from engine.bundles.reference import METADATA_KEY as REFERENCE_KEY
from engine.bundles.reference import score_model, too_big
from engine.errors import first_line
from engine.files import atomic_write_text
from engine.generation.runtime import dtype_name, pick_device, pick_training_dtype
from engine.humanize import plural
from engine.model.config import ModelConfig
from engine.model.tinyslm import TinySLM
from engine.model.tokenizer import TextTokenizer
from engine.runs.rundir import (
    BUNDLE_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    ERROR_PREFIX,
    EVENTS_FILE,
    EventWriter,
    RunLock,
    check_new_run_dir,
    check_resumable,
)
from trainer import checkpoints as ckpt
from trainer.config import TrainConfig
from trainer.distributed import Dist, RankAbort, all_agree
from trainer.finetune import BaseModel, check_data_fits, finetune_metadata, finetune_shape, read_base
from trainer.loader import TokenLoader, read_manifest


class NonFiniteLoss(Exception):
    """Loss or gradient norm became NaN/inf."""


@dataclass
class TrainSetup:
    """Everything a session is built from: config, device, data, model shape and the model itself."""

    cfg: TrainConfig  # the run's config (out = the run dir it really trains in; decay_steps fixed)
    out: Path  # the run dir
    device: torch.device  # where it trains
    dtype: torch.dtype  # autocast dtype (float32 = none)
    compiled: bool  # torch.compile the model
    tokenizer: TextTokenizer  # the prepared data's tokenizer (exported with the bundle)
    model_config: ModelConfig  # the model's shape
    context: int  # tokens per training sequence
    max_steps: int  # the step this session trains up to
    tokens_per_step: int  # over all ranks
    train_loader: TokenLoader  # this rank's training windows
    val_loader: TokenLoader  # this rank's fixed val windows (batch i is the same every eval)
    model: TinySLM  # freshly initialised or the base model's weights (a resume loads its weights next)
    base: BaseModel | None = None  # a fine-tune's base model (init_from)

    @property
    def label(self) -> str:
        """What is trained, for progress lines and the `start` event: the preset, or the base model's name."""
        return f"{self.base.name} fine-tune" if self.base else self.cfg.preset


def prepare(cfg: TrainConfig, mode: str, dist: Dist, report: Reporter) -> TrainSetup:
    """Check the inputs, claim the run dir (rank 0) and build the model; ValueError (one line) on bad input."""
    if not cfg.data:
        raise ValueError("no data dir given (--data PREPARED_DIR)")
    if not cfg.out:
        raise ValueError("no run dir given (--out RUN_DIR)")
    if cfg.batch_size % dist.world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by the world size {dist.world}")
    if dist.world > 1 and pick_device(cfg.device).type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    else:
        device = pick_device(cfg.device)
    dtype = pick_training_dtype(device, cfg.dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data = Path(cfg.data)
    manifest = read_manifest(data)
    tokenizer = _data_tokenizer(data, manifest)
    base = read_base(cfg.init_from) if cfg.init_from else None
    if base is not None:  # a fine-tune: the base model's shape, on data in its tokens
        check_data_fits(base, data, manifest)
        model_config, context = finetune_shape(cfg, base)
    else:
        model_config = cfg.model_config(tokenizer.vocab_size)
        context = model_config.context_length
    max_steps = cfg.total_steps(context)
    if mode != "resume" and cfg.decay_steps is None:
        cfg = cfg.with_(decay_steps=max_steps)  # fixed now: extending the run later continues at the floor
    rank_batch = cfg.batch_size // dist.world
    pin = device.type == "cuda"  # page-locked batches: their copies to the GPU overlap its work
    train_loader = TokenLoader(data, "train", rank_batch, context, cfg.seed, dist.rank, dist.world, pin)
    val_loader = TokenLoader(data, "val", rank_batch, context, cfg.seed + 1, dist.rank, dist.world, pin)

    out = Path(cfg.out)
    _claim_run_dir(out, mode, dist, report)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    model = _base_weights(base, model_config) if base and mode != "resume" else TinySLM(model_config)
    return TrainSetup(
        cfg=cfg, out=out, device=device, dtype=dtype,
        compiled=cfg.compile if cfg.compile is not None else device.type == "cuda",
        tokenizer=tokenizer, model_config=model_config, context=context, max_steps=max_steps,
        tokens_per_step=cfg.tokens_per_step(context), train_loader=train_loader, val_loader=val_loader,
        model=model.to(device).train(), base=base,
    )  # fmt: skip


def _base_weights(base: BaseModel, model_config: ModelConfig) -> TinySLM:
    """A model of model_config (the base's shape, this run's dropout) holding the base model's weights in float32;
    the base bundle is only read."""
    model = TinySLM(model_config)
    model.load_state_dict(load_bundle(base.path).model.state_dict())
    return model


def _data_tokenizer(data: Path, manifest: dict) -> TextTokenizer:
    """The prepared dir's tokenizer with the start/end tokens its stories are marked with."""
    tok_path = data / "tokenizer.json"
    if not tok_path.is_file():
        raise ValueError(f"{tok_path}: missing (run `helium data prepare` again)")
    eot = manifest.get("eot_id", 0)
    try:
        return TextTokenizer.from_file(tok_path, manifest.get("bos_id", eot), manifest.get("eos_id", eot))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
        raise ValueError(f"{tok_path}: not a valid tokenizer ({first_line(exc, 120)})") from None


def _claim_run_dir(out: Path, mode: str, dist: Dist, report: Reporter) -> None:
    """Rank 0 checks the run dir for this mode, locks it and clears what a new run replaces; all ranks agree."""
    error: str | None = None
    if dist.main:
        lock: RunLock | None = None
        try:
            if mode == "resume":
                check_resumable(out)
            out.mkdir(parents=True, exist_ok=True)
            lock = RunLock(out).acquire()  # or the lock the runner took for this process
            if mode != "resume":
                check_new_run_dir(out, restart=mode == "restart", locked=True)
                # leftovers of a run that never checkpointed, or a run discarded by --restart
                shutil.rmtree(out / CHECKPOINTS_DIR, ignore_errors=True)
                shutil.rmtree(out / BUNDLE_DIR, ignore_errors=True)
            events = EventWriter(out / EVENTS_FILE)
            if mode != "resume":
                events.truncate()
            ckpt.remove_stale_temps(out / CHECKPOINTS_DIR)
            report.attach(events, lock)
        except (ValueError, OSError) as exc:
            error = str(exc)
            if lock is not None:
                lock.release()
    if all_agree(error is not None, dist):
        if error:
            raise ValueError(error)
        raise RankAbort()


class Reporter:
    """The run dir as this trainer owns it: events.jsonl (rank 0), the run lock, and progress lines on stdout."""

    def __init__(self, dist: Dist) -> None:
        self.dist = dist  # only rank 0 writes
        self.events: EventWriter | None = None  # set once the run dir is ours
        self.lock: RunLock | None = None  # held from the claim until close()

    def attach(self, events: EventWriter, lock: RunLock) -> None:
        """Start writing to a claimed run dir."""
        self.events, self.lock = events, lock

    def emit(self, event: str, **fields: Any) -> None:
        """Write an event (rank 0, once the run dir is ours)."""
        if self.events is not None:
            self.events.write(event, **fields)

    def say(self, line: str) -> None:
        """A progress line on stdout (rank 0 only)."""
        if self.dist.main:
            print(line, flush=True)

    def start(self, s: TrainSetup, step: int, compiled: bool, resumed: bool) -> None:
        """The `start` and `running` events and the header line of a session that begins at `step`."""
        params = s.model.num_params()
        self.emit(
            "start", step=step, max_steps=s.max_steps, tokens_per_step=s.tokens_per_step, params=params,
            preset=s.label, device=str(s.device), dtype=dtype_name(s.dtype), world_size=self.dist.world,
            pid=os.getpid(), compiled=compiled, context=s.context, resumed=resumed,
            init_from=str(s.base.path) if s.base else None,
        )  # fmt: skip
        self.emit("status", status="running", step=step)
        self.say(
            f"training {s.label} ({params / 1e6:.2f}M params, context {s.context}) on {s.device} "
            f"{dtype_name(s.dtype)}{' compiled' if compiled else ''}, {plural(self.dist.world, 'process', 'processes')}, "
            f"{s.tokens_per_step} tokens/step, steps {step}->{s.max_steps}"
        )

    def fail(self, message: str, tail: list[str], step: int) -> None:
        """Record error + failed at `step` (only in a run dir this trainer claimed)."""
        self.emit("error", message=message, tail=tail)
        self.emit("status", status="failed", step=step)

    def close(self) -> None:
        """Release the run dir (after the last event, so watchers find the final status first)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


class Checkpointer:
    """The run's progress (step, tokens, time, val losses) and everything saved: checkpoints, config, bundle."""

    def __init__(self, s: TrainSetup, report: Reporter, optimizer: torch.optim.Optimizer) -> None:
        self.s, self.report = s, report
        self.model, self.optimizer = s.model, optimizer  # what checkpoints hold
        self.dir = s.out / CHECKPOINTS_DIR  # step_NNNNNN.pt, best.pt
        self.step, self.tokens = 0, 0  # optimizer steps and tokens done over all sessions
        self.elapsed_before = 0.0  # training seconds of earlier sessions
        self.t_start = time.perf_counter()  # start of this session
        self.last_val: float | None = None  # latest val loss (this session or the checkpoint's)
        self.best_val: float | None = None  # lowest val loss so far (best.pt)
        self.val_step = -1  # step of the latest val loss measured in this session
        self.saved_step = -1  # step of the latest step checkpoint

    def advance(self, tokens: int) -> None:
        """One optimizer step done."""
        self.step += 1
        self.tokens += tokens

    def elapsed(self) -> float:
        """Training wall time over all sessions of this run."""
        return self.elapsed_before + (time.perf_counter() - self.t_start)

    def record_val(self, value: float) -> float:
        """A new val loss: emit it, and save best.pt when it is the lowest so far."""
        self.last_val, self.val_step = value, self.step
        self.report.emit("eval", step=self.step, val_loss=value)
        if self.best_val is None or value < self.best_val:
            self.best_val = value
            self._save(best=True)
        return value

    def write_config(self, cfg: TrainConfig) -> None:
        """RUN_DIR/train_config.json as this session runs it (rank 0)."""
        if self.report.dist.main:
            atomic_write_text(self.s.out / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")

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
            "rng": ckpt.rng_state(self.s.device),
            "model_config": self.s.model_config.to_dict(),
            "train_config": self.s.cfg.to_dict(),
        }

    def save(self) -> None:
        """Write step_NNNNNN.pt and prune old ones (rank 0)."""
        self._save(best=False)
        self.saved_step = self.step

    def _save(self, best: bool) -> None:
        if not self.report.dist.main:
            return
        path = self.dir / ckpt.BEST if best else ckpt.step_path(self.dir, self.step)
        ckpt.save_checkpoint(path, self.state_dict())
        if not best:
            ckpt.prune(self.dir, self.s.cfg.keep_last)
        self.report.emit("checkpoint", step=self.step, path=str(path), best=best)

    def restore(self) -> Path:
        """Load weights, optimizer, counters and RNG from the newest step checkpoint; returns its path."""
        path = ckpt.latest_checkpoint(self.dir)
        if path is None:
            raise ValueError(f"{self.dir}: no checkpoint to resume from")
        state = ckpt.load_checkpoint(path, self.s.device)
        saved = ModelConfig.from_dict(state["model_config"]).with_(dropout=self.s.model_config.dropout)
        if saved != self.s.model_config:  # dropout may change on resume: it is not part of the weights
            diff = [k for k, v in saved.to_dict().items() if self.s.model_config.to_dict()[k] != v]
            raise ValueError(
                f"{path}: the checkpoint's model differs in {', '.join(diff)} "
                f"(it has {', '.join(f'{k}={saved.to_dict()[k]}' for k in diff)}); a resumed run keeps its model"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            ckpt.set_rng_state(state["rng"], self.s.device)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{path}: checkpoint does not fit this run ({first_line(exc, 160)})") from None
        self.step, self.tokens = state["step"], state["tokens"]
        self.elapsed_before = float(state["elapsed_s"])
        self.best_val, self.last_val = state["best_val_loss"], state["val_loss"]
        self.saved_step = self.step
        if self.s.cfg.decay_steps is None:  # a run dir from before decay_steps was fixed at the first start
            first = TrainConfig.from_dict(state["train_config"])
            self.s.cfg = self.s.cfg.with_(decay_steps=first.decay_steps or first.total_steps(self.s.context))
        return path

    def export(self) -> Path:
        """RUN_DIR/bundle: the final weights as a model bundle (`helium tell --model RUN_DIR/bundle`)."""
        cfg = self.s.cfg
        export_model = TinySLM(self.s.model_config.with_(dropout=0.0))
        export_model.load_state_dict({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
        metadata = {
            "data": str(Path(cfg.data).resolve()),
            "steps": self.step,
            "tokens": self.tokens,
            "val_loss": self.last_val,
            "best_val_loss": self.best_val,
            "preset": cfg.preset or (self.s.base.metadata.get("preset", "") if self.s.base else ""),
            "train_command": cfg.command,
            "train_config": cfg.to_dict(),
        }
        if self.s.base is not None:
            metadata |= finetune_metadata(self.s.base, Path(cfg.data))
        if too_big(export_model.config.parameters) is None:  # written with the rest of metadata.json
            metadata[REFERENCE_KEY] = score_model(export_model, self.s.tokenizer)
        return save_bundle(self.s.out / BUNDLE_DIR, export_model, self.s.tokenizer, metadata)

    def fail_non_finite(self, message: str) -> int:
        """A NaN/inf loss: record it with the last good checkpoint, print one line, exit code 1."""
        good = ckpt.latest_checkpoint(self.dir)
        message = f"{message}; stopping (last good checkpoint: {good or 'none'})"
        self.report.emit("error", message=message, tail=[])
        self.report.emit("status", status="failed", step=self.step)
        if self.report.dist.main:
            print(f"{ERROR_PREFIX}{message}", file=sys.stderr, flush=True)
        return 1
