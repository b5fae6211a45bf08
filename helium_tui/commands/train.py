"""`helium train`: train (or fine-tune) a model on a prepared data dir, with checkpoints, resume and a bundle.

Runs in this process with plain progress lines, or in the background with a live dashboard (`--watch`).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from engine.devices import DEVICE_CHOICES, DTYPE_CHOICES
from engine.model.config import PRESETS, describe_preset
from helium_tui.errors import fail, user_errors
from helium_tui.help_format import note
from trainer.config import (
    DEFAULT_MAX_STEPS,
    FINETUNE_DEFAULTS,
    FINETUNE_EPOCHS,
    MIN_FINETUNE_STEPS,
    TrainConfig,
)

D = TrainConfig()  # the defaults the help shows come from the config objects themselves
F = D.with_(**FINETUNE_DEFAULTS)  # a fine-tune's defaults
PRESET_VOCAB = ". Params are at the vocab shown: --data's tokenizer sets the vocab, so the embedding (and the count) follow it."
OPTION_OF = {"warmup_steps": "warmup"}  # TrainConfig field -> the option that sets it, where the names differ


def flag(field: str) -> str:
    """The command-line option that sets a TrainConfig field: `--batch-size` for batch_size."""
    return "--" + OPTION_OF.get(field, field).replace("_", "-")


def shown(value: object) -> str:
    """A default as the help writes it: 0.0002, 0.1, 32."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_of(field: str) -> str:
    """A field's default for the help, `[32; fine-tune 8]` where a fine-tune changes it."""
    fresh, tuned = shown(getattr(D, field)), shown(getattr(F, field))
    return note(f"{fresh}; fine-tune {tuned}" if field in FINETUNE_DEFAULTS else fresh)


FINETUNE_HELP = (
    "Fine-tune: start from this model's weights and shape (an installed name or a bundle dir, never "
    "modified); --data must be prepared with its tokenizer (`helium data prepare FILES --tokenizer MODEL`). "
    f"Fine-tune defaults: {', '.join(f'{flag(k)} {shown(v)}' for k, v in FINETUNE_DEFAULTS.items())}, and "
    f"{FINETUNE_EPOCHS} passes over the data (at least {MIN_FINETUNE_STEPS} steps) unless --max-steps/--max-tokens; "
    "--context may only shrink, a --preset must name the model's own shape."
)


def train(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="With --watch alone: attach the dashboard to this run dir.", show_default=False),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help=f"Model preset (default {D.preset}): " + "; ".join(map(describe_preset, PRESETS)) + PRESET_VOCAB),
    ] = None,
    init_from: Annotated[str | None, typer.Option(metavar="MODEL", help=FINETUNE_HELP)] = None,
    data: Annotated[Path | None, typer.Option(help="Prepared data dir (`helium data prepare`).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run dir for config, events, checkpoints and the bundle.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help=f"Optimizer steps to train (default {DEFAULT_MAX_STEPS}; fine-tune: {FINETUNE_EPOCHS} passes).")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Train for this many tokens instead of --max-steps.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out from its newest checkpoint; options given override its config. "
            "A longer run continues at the final learning rate unless --decay-steps sets a new schedule.",
        ),
    ] = False,
    restart: Annotated[
        bool,
        typer.Option(
            "--restart",
            help="Discard the earlier run in --out (checkpoints, bundle, events) and start over; "
            "without --data it reuses the saved config.",
        ),
    ] = False,
    batch_size: Annotated[
        int | None, typer.Option(help=f"Global sequences per micro-step (split over ranks). {default_of('batch_size')}")
    ] = None,
    context: Annotated[
        int | None, typer.Option(help="Tokens per sequence. " + note("preset's or base model's context"))
    ] = None,
    lr: Annotated[float | None, typer.Option(help=f"Peak learning rate. {default_of('lr')}")] = None,
    min_lr: Annotated[
        float | None, typer.Option(help="Learning rate at the end of the cosine decay. " + note("lr / 10"))
    ] = None,
    warmup: Annotated[int | None, typer.Option(help=f"Linear warmup steps. {default_of('warmup_steps')}")] = None,
    decay_steps: Annotated[
        int | None, typer.Option(help="Cosine decay length in steps. " + note("the first session's max steps"))
    ] = None,
    weight_decay: Annotated[float | None, typer.Option(help=f"AdamW weight decay on matrices. {default_of('weight_decay')}")] = None,
    grad_accum: Annotated[int | None, typer.Option(help=f"Micro-steps per optimizer step. {default_of('grad_accum')}")] = None,
    grad_clip: Annotated[
        float | None, typer.Option(help=f"Clip the gradient norm to this; 0 = off. {default_of('grad_clip')}")
    ] = None,
    eval_interval: Annotated[
        int | None, typer.Option(help=f"Steps between val-loss evals; 0 = end only. {default_of('eval_interval')}")
    ] = None,
    eval_batches: Annotated[
        int | None, typer.Option(help=f"Fixed val batches per eval. {default_of('eval_batches')}")
    ] = None,
    ckpt_interval: Annotated[
        int | None, typer.Option(help=f"Steps between checkpoints; 0 = end only. {default_of('ckpt_interval')}")
    ] = None,
    keep_last: Annotated[int | None, typer.Option(help=f"Step checkpoints to keep; 0 = all. {default_of('keep_last')}")] = None,
    log_interval: Annotated[int | None, typer.Option(help=f"Steps between progress lines. {default_of('log_interval')}")] = None,
    dropout: Annotated[float | None, typer.Option(help=f"Dropout on attention and MLP outputs. {default_of('dropout')}")] = None,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="torch.compile the model. " + note("on for CUDA, off on CPU")),
    ] = None,
    dtype: Annotated[str | None, typer.Option(help=f"{DTYPE_CHOICES}. {default_of('dtype')}")] = None,
    seed: Annotated[int | None, typer.Option(help=f"Seed for weights, dropout and data order. {default_of('seed')}")] = None,
    device: Annotated[str | None, typer.Option(help=f"{DEVICE_CHOICES}. {default_of('device')}")] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Train in the background and show a live dashboard.")
    ] = False,
) -> None:
    """Train (or fine-tune, with --init-from) a model on a prepared data dir; ends with a bundle in RUN_DIR/bundle."""
    if run_dir is not None:
        if not watch or preset or init_from or data or out or resume or restart:
            raise fail("a RUN_DIR argument only goes with --watch alone (to attach to a run)")
        from helium_tui.dashboard import watch as watch_run

        with user_errors():
            code = watch_run(run_dir)
        raise typer.Exit(code)
    if out is None:
        raise fail("--out RUN_DIR is required (or `helium train --watch RUN_DIR` to watch a run)")
    if resume and restart:
        raise fail("--resume continues a run and --restart discards it: give one of them")
    if max_steps is not None and max_tokens is not None:
        raise fail("give --max-steps or --max-tokens, not both")

    with user_errors():
        from engine.runs.rundir import (
            CONFIG_FILE,
            check_new_run_dir,
            check_resumable,
            is_running,
            lock_holder,
        )
        from trainer.config import resume_config
        from trainer.finetune import read_base, run_config

        base = read_base(init_from) if init_from else None

        overrides = dict(
            max_steps=max_steps, max_tokens=max_tokens, batch_size=batch_size, context=context, lr=lr,
            min_lr=min_lr, warmup_steps=warmup, decay_steps=decay_steps, weight_decay=weight_decay,
            grad_accum=grad_accum, grad_clip=grad_clip, eval_interval=eval_interval, eval_batches=eval_batches,
            ckpt_interval=ckpt_interval, keep_last=keep_last, log_interval=log_interval, dropout=dropout,
            compile=compile, dtype=dtype, seed=seed, device=device, preset=preset,
            data=str(data.resolve()) if data else None,
        )  # fmt: skip
        from engine.targets import check_no_control

        out = Path(check_no_control(str(out), "the output path")).resolve()
        main_rank = int(os.environ.get("RANK", "0")) == 0 and int(os.environ.get("WORLD_SIZE", "1")) == 1
        if is_running(out):
            raise ValueError(f"{out}: a training run is already going there (pid {lock_holder(out) or '?'})")
        if resume:
            check_resumable(out)
            cfg = resume_config(out, **overrides)
            if base is not None and str(base.path) != cfg.init_from:
                raise ValueError(f"{out}: a resumed run keeps its base model ({cfg.init_from or 'none'})")
        elif restart and data is None and (out / CONFIG_FILE).is_file():  # start over with the saved config
            cfg = resume_config(out, **overrides, init_from=str(base.path) if base else None)
            cfg.decay_steps = decay_steps  # the old run's fixed schedule goes with it
        else:
            if data is None:
                raise ValueError("--data PREPARED_DIR is required")
            cfg = run_config(overrides.pop("data"), out, base, **overrides)
            if main_rank:
                check_new_run_dir(out, restart=restart)  # under torchrun rank 0 checks inside the trainer
        cfg.command = shlex.join(["helium", *sys.argv[1:]])
        cfg.validate()

    if watch:
        from engine.runs.runner import start_run
        from helium_tui.dashboard import watch as watch_run

        with user_errors():
            handle = start_run(cfg.to_dict(), out, resume=resume, restart=restart)
        raise typer.Exit(watch_run(out, handle))

    from trainer.train import run_training

    code = run_training(cfg, resume=resume, restart=restart)
    if code:
        raise typer.Exit(code)
