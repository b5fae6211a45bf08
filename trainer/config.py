"""TrainConfig: everything a training run needs, with its defaults and checks (serialized as train_config.json).

Torch-free, so the CLI's help, the studio's training form and the runner read defaults from it cheaply.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engine.checks import check_seed, is_number, known_fields, number, whole
from engine.jsonfile import read_json
from engine.model.config import LIMITS, ModelConfig, get_preset

DEFAULT_MAX_STEPS = 1000  # when neither max_steps nor max_tokens is given
MAX_COUNT = 10**9  # an upper bound for step/batch/interval counts (far past anything that fits in memory)
MAX_EVAL_BATCHES = 10_000  # val batches per eval (each is read from disk when needed, never all held at once)

# What a fine-tune changes from a fresh run's defaults (`helium train --init-from`, trainer.finetune.finetune_config):
# a peak lr a fifth of the fresh run's (a tenth of the shipped model's), a short warmup, small batches (more steps
# from little text) and evals often enough to draw a curve. docs/BENCHMARKS.md has the measurements behind them.
# Here rather than in trainer.finetune so the CLI's help reads them without importing that module's hashing.
FINETUNE_DEFAULTS = dict(lr=2e-4, warmup_steps=10, batch_size=8, eval_interval=25, eval_batches=10)
FINETUNE_EPOCHS = 4  # a fine-tune's default budget: passes over the training split (without max_steps / max_tokens)
MIN_FINETUNE_STEPS = 20  # the default budget is never shorter than this


@dataclass
class TrainConfig:
    """Everything a training run needs; serialized as RUN_DIR/train_config.json."""

    data: str = ""  # prepared data dir (`helium data prepare`)
    out: str = ""  # run dir: config, events.jsonl, checkpoints/, bundle/
    preset: str = "micro"  # shape from engine.model.config.PRESETS, vocab from the tokenizer ("": init_from's)
    init_from: str = ""  # fine-tune: the model bundle dir whose weights and shape the run starts from
    max_steps: int | None = None  # optimizer steps to train (default 1000 unless max_tokens is set)
    max_tokens: int | None = None  # alternatively: train until this many tokens (rounded up to whole steps)
    batch_size: int = 32  # global sequences per micro-step, split evenly over the ranks
    context: int | None = None  # tokens per sequence (None: the preset's context_length)
    grad_accum: int = 1  # micro-steps accumulated per optimizer step
    lr: float = 1e-3  # peak learning rate after warmup
    min_lr: float | None = None  # learning rate at the end of the cosine decay (None: lr / 10)
    warmup_steps: int = 100  # linear warmup steps
    decay_steps: int | None = None  # steps of the cosine decay (None: the first session's max steps)
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
    dtype: str = "auto"  # autocast dtype: engine.devices.DTYPE_CHOICES
    device: str = "auto"  # engine.devices.DEVICE_CHOICES
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
        """Rebuild from a dict, rejecting unknown keys and bad values."""
        return cls(**known_fields(cls, data, "training config")).validate()

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a train_config.json (through engine.jsonfile: a JsonFileError, a ValueError, names the file)."""
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def with_(self, **changes) -> TrainConfig:
        """A copy with some fields changed (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> TrainConfig:
        """Raise ValueError (one line) for values that cannot work: wrong types, nan, out of range."""
        for name in ("data", "out", "preset", "init_from", "dtype", "device", "command"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.preset or not self.init_from:  # a fine-tune may leave the shape to its base model
            get_preset(self.preset)
        for name in ("batch_size", "grad_accum", "log_interval"):
            whole(name, getattr(self, name), high=MAX_COUNT)
        whole("eval_batches", self.eval_batches, high=MAX_EVAL_BATCHES)
        for name, high in (("max_steps", MAX_COUNT), ("max_tokens", MAX_COUNT * 1000), ("decay_steps", MAX_COUNT)):
            if getattr(self, name) is not None:
                whole(name, getattr(self, name), high=high)
        if self.context is not None:
            whole("context", self.context, high=LIMITS["context_length"][1])
        for name in ("warmup_steps", "eval_interval", "ckpt_interval", "keep_last"):
            whole(name, getattr(self, name), low=0, high=MAX_COUNT)
        check_seed(self.seed)
        number("lr", self.lr, 0, math.inf, low_open=True)
        if self.min_lr is not None and not (is_number(self.min_lr) and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"min_lr must be from 0 to lr ({self.lr}), got {self.min_lr}")
        number("weight_decay", self.weight_decay, 0, math.inf)
        number("grad_clip", self.grad_clip, 0, math.inf)
        for name in ("dropout", "beta1", "beta2"):
            if number(name, getattr(self, name), 0, 1) == 1:
                raise ValueError(f"{name} must be below 1, got 1")
        if self.compile is not None and not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true, false or null, got {self.compile!r}")
        if self.max_steps is not None and self.max_tokens is not None:
            raise ValueError("give max_steps or max_tokens, not both")
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



def with_budget(cfg: TrainConfig, max_steps: int | None, max_tokens: int | None) -> TrainConfig:
    """cfg with a new training budget: a given max_steps replaces a max_tokens budget and vice versa."""
    if max_steps is not None:
        return replace(cfg, max_steps=max_steps, max_tokens=None)
    if max_tokens is not None:
        return replace(cfg, max_steps=None, max_tokens=max_tokens)
    return cfg


def resume_config(run_dir: str | Path, **changes) -> TrainConfig:
    """The config saved in run_dir, to continue the run there (wherever the directory has moved since).

    `changes` override saved fields (None values are ignored); a new max_steps or max_tokens replaces the
    saved budget. ValueError (one line) when run_dir holds no usable config.
    """
    from engine.runs.rundir import CONFIG_FILE

    run_dir = Path(run_dir).resolve()
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir}: no {CONFIG_FILE} to resume from (is it a run directory?)")
    budget = {k: changes.pop(k, None) for k in ("max_steps", "max_tokens")}
    cfg = with_budget(TrainConfig.load(path), **budget).with_(**changes)
    return replace(cfg, out=str(run_dir)).validate()
