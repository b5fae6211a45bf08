"""The training loop: set up a run, step, evaluate, checkpoint, and export a model bundle at the end.

Run in-process by `helium train`, in the background as `python -m trainer.train --config RUN_DIR/train_config.json
[--resume | --restart]`, and under `torchrun --nproc-per-node N` for data-parallel training (rank 0 logs and saves).
The loop delegates: `Reporter` (events and progress lines), `Checkpointer` (saves, resume), the model's steps.
"""

from __future__ import annotations

import argparse
import errno
import math
import shlex
import signal
import sys
import threading
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import BundleError
from engine.runs.rundir import ERROR_PREFIX
from trainer.config import TrainConfig
from trainer.distributed import (
    Dist,
    RankAbort,
    all_agree,
    all_reduce_mean,
    barrier,
    check_ranks_in_sync,
    init_distributed,
    leave_process_group,
)
from trainer.dynamics import DynamicsProbe
from trainer.loss import NextTokenLoss
from trainer.metrics import Meter, flops_per_token, mfu, peak_flops, progress_line
from trainer.optim import lr_at, make_optimizer, set_lr
from trainer.session import Checkpointer, NonFiniteLoss, Reporter, TrainSetup, prepare

__all__ = ["TrainConfig", "Trainer", "main", "run_training"]


@dataclass
class Due:
    """What happens after the step just taken."""

    log: bool  # emit a `step` event and a progress line
    eval: bool  # measure the val loss
    checkpoint: bool  # save a step checkpoint
    stop: bool  # a stop was requested: save and end

    @property
    def anything(self) -> bool:
        """True when the loss must be read from the device (the only host sync)."""
        return self.log or self.eval or self.checkpoint or self.stop


class Trainer:
    """One training run: `setup()` then `run()`, which returns the process exit code."""

    record_dynamics = True  # on log steps, measure per-group update ratios and weight norms (off: to time it)

    def __init__(self, cfg: TrainConfig, mode: str, dist: Dist) -> None:
        self.cfg, self.mode, self.dist = cfg, mode, dist  # mode: new | resume | restart
        self.report = Reporter(dist)  # events (rank 0) and progress lines
        self.stop_requested = False  # set by SIGINT/SIGTERM: stop after the current step
        self.session_val: float | None = None  # val loss measured in this session (shown in progress lines)
        self.dynamics: tuple[dict[str, float], dict[str, float]] | None = None  # measured on the last log step

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        """Check inputs, claim the run dir, build model and optimizer, restore a checkpoint on resume."""
        s: TrainSetup = prepare(self.cfg, self.mode, self.dist, self.report)
        self.s = s
        self.device, self.dtype, self.compiled = s.device, s.dtype, s.compiled
        self.model = s.model
        cfg = s.cfg
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), self.device)
        self.probe = DynamicsProbe(self.model)
        self.checkpointer = Checkpointer(s, self.report, self.optimizer)
        if self.mode == "resume":
            self.checkpointer.restore()
        self.cfg = s.cfg  # with the schedule fixed (decay_steps) and the run dir it really trains in
        self.checkpointer.write_config(self.cfg)
        self.wrap_model()
        self.flops_token = flops_per_token(s.model_config, s.context)
        self.peak = peak_flops(self.device, self.dtype)

    def wrap_model(self) -> None:
        """self.loss: the model's (compiled) loss that eval runs; self.train_loss: the same under DDP.

        The loss is compiled with the model, so the logits' upcast and cross-entropy fuse into its graph.
        """
        loss = NextTokenLoss(self.model, self.dtype)
        self.loss = torch.compile(loss) if self.compiled else loss
        self.train_loss = self.loss
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.train_loss = DDP(self.loss, device_ids=ids)

    # ------------------------------------------------------------ steps

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step (all micro-steps); returns (mean loss, grad norm) as device tensors."""
        cfg = self.cfg
        set_lr(self.optimizer, lr_at(step, cfg.lr, cfg.final_lr, cfg.warmup_steps, cfg.decay_steps))
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.grad_accum):
            x, y = self.s.train_loader.batch(step * cfg.grad_accum + micro)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            last = micro == cfg.grad_accum - 1
            sync = nullcontext() if last or self.dist.world == 1 else self.train_loss.no_sync()
            with sync:
                loss = self.train_loss(x, y) / cfg.grad_accum
                loss.backward()
            total += loss.detach()
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)  # the norm before clipping
        before = self.probe.before() if self.records(step + 1) else None
        self.optimizer.step()
        if before is not None:
            self.dynamics = self.probe.after(before)
        self.optimizer.zero_grad(set_to_none=True)
        return total, grad_norm

    def first_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first step of a session; if torch.compile fails there, fall back to eager and retry."""
        if not self.compiled:
            return self.train_step(step)
        try:
            return self.train_step(step)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: train eager instead
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            self.report.emit("log", message=f"torch.compile failed, training eager: {type(exc).__name__}: {reason}")
            self.report.say(f"torch.compile failed ({type(exc).__name__}); training eager")
            self.optimizer.zero_grad(set_to_none=True)
            self.compiled = False
            self.wrap_model()
            return self.train_step(step)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean val loss over the run's fixed val batches (read as needed; averaged over ranks)."""
        self.model.eval()
        total = torch.zeros((), device=self.device)
        for i in range(self.cfg.eval_batches):
            x, y = self.s.val_loader.batch(i)
            total += self.loss(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
        self.model.train()
        total /= self.cfg.eval_batches
        value = float(all_reduce_mean(total, self.dist).item())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"val loss is {value} at step {self.checkpointer.step}")
        return value

    # ------------------------------------------------------------ the loop

    def _on_signal(self, signum, frame) -> None:
        if self.stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop_requested = True
        self.report.say(f"{signal.Signals(signum).name}: finishing the current step, then saving a checkpoint")

    def run(self) -> int:
        """Train to max_steps (or until stopped); return the exit code."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            return self._loop()
        except NonFiniteLoss as exc:
            return self.checkpointer.fail_non_finite(str(exc))
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def due(self, step: int, stop: bool | None = None) -> Due:
        """What the step just taken calls for (stop: whether a stop was asked, when already known)."""
        cfg, at_end = self.cfg, step == self.s.max_steps
        log = step % cfg.log_interval == 0 or at_end
        if stop is None and self.dist.world == 1:  # a Python flag: free to read every step
            stop = self.stop_requested
        elif stop is None:  # ranks must agree, which costs a sync: only at log points
            stop = all_agree(self.stop_requested, self.dist) if log else False
        return Due(
            log=log,
            eval=bool(cfg.eval_interval and step % cfg.eval_interval == 0) or at_end,
            checkpoint=bool(cfg.ckpt_interval and step % cfg.ckpt_interval == 0) or at_end,
            stop=stop,
        )

    def records(self, step: int) -> bool:
        """True when the step ending at `step` is due to emit a `step` event (so its dynamics are measured);
        a stop asked during the step is not foreseen (that event goes without them)."""
        return self.record_dynamics and self.due(step, stop=False).anything

    def _loop(self) -> int:
        ck, s = self.checkpointer, self.s
        self.report.start(s, ck.step, compiled=self.compiled, resumed=self.mode == "resume")
        meter = Meter(s.tokens_per_step, since_step=ck.step)
        loss_sum = torch.zeros((), device=self.device)
        first = True
        while ck.step < s.max_steps:
            loss, grad_norm = self.first_step(ck.step) if first else self.train_step(ck.step)
            first = False
            loss_sum += loss
            ck.advance(s.tokens_per_step)
            due = self.due(ck.step)
            if not due.anything:
                continue
            steps, _ = meter.window(ck.step)
            mean = float(all_reduce_mean(loss_sum / steps, self.dist).item())
            norm = float(grad_norm.item())
            if not (math.isfinite(mean) and math.isfinite(norm)):
                raise NonFiniteLoss(f"training diverged at step {ck.step} (loss {mean:.4g}, gradient norm {norm:.4g})")
            rate, step_time = meter.rate(ck.step)
            if due.eval:
                self.session_val = ck.record_val(self.evaluate())
            self._log_step(mean, norm, rate, (s.max_steps - ck.step) * step_time)
            if due.checkpoint or due.stop:
                ck.save()
            loss_sum.zero_()
            meter.reset(ck.step)
            if due.stop:
                self.report.emit("status", status="stopped", step=ck.step)
                self.report.say(f"stopped at step {ck.step}; resume with --resume")
                return 0
        return self._finish()

    def _log_step(self, loss: float, grad_norm: float, rate: float, eta: float) -> None:
        step, lr = self.checkpointer.step, self.optimizer.param_groups[0]["lr"]
        value = mfu(rate, self.flops_token, self.peak, self.dist.world)
        inside: dict[str, object] = {"clipped": 0 < self.cfg.grad_clip < grad_norm}
        if self.dynamics is not None:
            inside["update_ratio"], inside["weight_norm"] = self.dynamics
            self.dynamics = None
        self.report.emit(
            "step", step=step, loss=loss, lr=lr, tokens_per_s=rate, mfu=value, grad_norm=grad_norm,
            tokens=self.checkpointer.tokens, elapsed_s=self.checkpointer.elapsed(), eta_s=eta, **inside,
        )  # fmt: skip
        self.report.say(progress_line(step, self.s.max_steps, loss, self.session_val, lr, rate, value, eta))

    def _finish(self) -> int:
        """The end of the last step: check ranks, evaluate and save if needed, export, record `finished`."""
        ck = self.checkpointer
        if self.dist.world > 1:
            checksum = check_ranks_in_sync(self.model, self.dist)
            self.report.emit("log", message=f"ddp: {self.dist.world} ranks hold identical weights ({checksum:.6f})")
        if ck.val_step != ck.step:
            self.session_val = ck.record_val(self.evaluate())
        if ck.saved_step != ck.step:
            ck.save()
        bundle = ck.export() if self.dist.main else None
        barrier(self.dist)  # every rank leaves together, after rank 0 has written the bundle
        self.report.emit("status", status="finished", step=ck.step, bundle=str(bundle) if bundle else None)
        self.report.say(
            f"finished: {ck.step} steps, {ck.tokens} tokens, val loss {ck.last_val:.3f}; bundle {bundle}"
        )
        return 0


# ---------------------------------------------------------------- entry points


def run_training(cfg: TrainConfig, resume: bool = False, restart: bool = False) -> int:
    """Run (or resume, or restart) a training run in this process; returns the exit code.

    0 finished or stopped, 1 failed (a crash or a non-finite loss), 2 bad input, 130 interrupted hard.
    """
    mode = "resume" if resume else "restart" if restart else "new"
    dist: Dist | None = None
    trainer: Trainer | None = None
    try:
        dist = init_distributed(cfg.device)
        trainer = Trainer(cfg, mode, dist)
        trainer.setup()
        return trainer.run()
    except RankAbort:
        return 2
    except (ValueError, OSError, BundleError) as exc:
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if dist is None or dist.main or dist.world > 1:
            prefix = f"[rank {dist.rank}] " if dist and not dist.main else ""
            print(f"{ERROR_PREFIX}{prefix}{_disk_message(exc, message)}", file=sys.stderr, flush=True)
        if trainer is not None:
            trainer.report.fail(_disk_message(exc, message), [], _step(trainer))
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the handler was installed, or a second Ctrl-C
        print("helium: interrupted: stopped without saving this step (the last checkpoint is kept)", file=sys.stderr)
        if trainer is not None:
            trainer.report.emit("status", status="stopped", step=_step(trainer))
        return 130
    except Exception as exc:  # noqa: BLE001 - record the crash for the dashboard, then show it
        tail = traceback.format_exc().strip().splitlines()[-12:]
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if trainer is not None:
            trainer.report.fail(message, tail, _step(trainer))
        traceback.print_exc()
        return 1
    finally:
        if trainer is not None:
            trainer.report.close()
        if dist is not None and dist.world > 1:
            trainer = None  # drop the DDP wrapper (it holds the process group) before tearing down
            leave_process_group()


def _step(trainer: Trainer) -> int:
    ck = getattr(trainer, "checkpointer", None)
    return ck.step if ck is not None else 0


def _disk_message(exc: BaseException, message: str) -> str:
    """A full disk in words a user acts on (what to free, how to continue)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{exc.strerror or message}; free some space, then --resume (or start again if no checkpoint was saved)"
    return message


def main(argv: list[str] | None = None) -> int:
    """`python -m trainer.train --config RUN_DIR/train_config.json [--resume | --restart]`."""
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path of a train_config.json")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run dir")
    how.add_argument("--restart", action="store_true", help="discard the run dir's earlier run and start over")
    args = parser.parse_args(argv)
    try:
        cfg = TrainConfig.load(args.config)
    except ValueError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return 2
    if args.resume or not cfg.out:  # a run dir's own config: that directory is the run dir, wherever it moved
        cfg = cfg.with_(out=str(Path(args.config).resolve().parent))
    if not cfg.command:
        cfg = cfg.with_(command=shlex.join(["python", "-m", "trainer.train", *(argv or sys.argv[1:])]))
    return run_training(cfg, resume=args.resume, restart=args.restart)


if __name__ == "__main__":
    sys.exit(main())
