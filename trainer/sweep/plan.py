"""A sweep's plan: its points (a model size and a token budget each), kept in SWEEP_DIR/sweep.json.

Torch-free. The same command run again finds the same plan and continues it; another plan in that dir is refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.files import atomic_write_text
from engine.jsonfile import read_json
from engine.model.config import ModelConfig, get_preset
from trainer.config import TrainConfig

PLAN_FILE = "sweep.json"  # the plan, written once when the sweep starts
FIT_FILE = "fit.json"  # the fitted laws and the table they came from
PLOT_FILE = "scaling.svg"  # the log-log picture
FORMAT = "helium-sweep/1"
MAX_POINTS = 256  # more points than any ladder needs; a typo like --tokens 1,2,3,...,1000 is refused
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


@dataclass(frozen=True)
class Point:
    """One run of the sweep: a model shape trained on a token budget, in run dir SWEEP_DIR/name."""

    index: int  # its place in the plan (`--point INDEX`, a Slurm array task)
    size: str  # a preset name or WIDTHxDEPTH
    tokens: int  # the token budget (`helium train --max-tokens`)

    @property
    def name(self) -> str:
        """The run dir's name: p03-128x4-2M."""
        return f"p{self.index:02d}-{self.size}-{short_count(self.tokens)}"


@dataclass
class SweepPlan:
    """What a sweep trains: sizes x budgets on one data dir, with the training options every point shares."""

    data: str  # the prepared data dir (absolute)
    sizes: list[str]  # presets or WIDTHxDEPTH, in the order given
    tokens: list[int] = field(default_factory=list)  # budgets every size trains on (--tokens)
    tokens_per_param: list[float] = field(default_factory=list)  # or: budgets of R x total params (--tokens-per-param)
    vocab_size: int = 0  # the data's vocabulary (it sets the embedding's share of the parameters)
    train: dict = field(default_factory=dict)  # `helium train` options shared by every point (batch_size, ...)

    def shape(self, size: str) -> ModelConfig:
        """A size's model shape with the data's vocabulary."""
        return get_preset(size).with_(vocab_size=self.vocab_size)

    def budgets(self, size: str) -> list[int]:
        """The token budgets of one size: --tokens, or R x its total parameters for each --tokens-per-param R."""
        if self.tokens:
            return list(self.tokens)
        total = self.shape(size).parameters
        return [int(round(r * total)) for r in self.tokens_per_param]

    def points(self) -> list[Point]:
        """Every point, sizes in order, each size's budgets in order."""
        pairs = [(size, tokens) for size in self.sizes for tokens in self.budgets(size)]
        return [Point(i, size, tokens) for i, (size, tokens) in enumerate(pairs)]

    def to_dict(self) -> dict:
        """sweep.json's content."""
        return {"format": FORMAT, **asdict(self), "points": [p.name for p in self.points()]}

    def describe(self) -> str:
        """The plan in a few words: '3 sizes (64x2, 96x3, 128x4) x 2M tokens on data/ts'."""
        what = ", ".join(short_count(t) for t in self.tokens) + " tokens" if self.tokens else (
            ", ".join(f"{r:g}" for r in self.tokens_per_param) + " tokens per parameter"
        )
        return f"{len(self.sizes)} sizes ({', '.join(self.sizes)}) x {what} on {self.data}"


def params(shape: ModelConfig) -> tuple[int, int]:
    """(total, non-embedding) parameters; non-embedding (Kaplan et al.) leaves out the token embedding (and an
    untied output head): it is what grows with width and depth, and the embedding dominates tiny models."""
    embedding = shape.vocab_size * shape.d_model * (1 if shape.tie_embeddings else 2)
    return shape.parameters, shape.parameters - embedding


def short_count(n: int) -> str:
    """2000000 -> 2M, 1500 -> 1.5K, 21322240 -> 21.32M: four significant digits at most."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return str(n)


def parse_sizes(text: str) -> list[str]:
    """--sizes: presets or WIDTHxDEPTH, comma-separated, each known and given once; ValueError (one line)."""
    sizes = [s.strip() for s in text.split(",") if s.strip()]
    if not sizes:
        raise ValueError("--sizes: give at least one size (a preset like micro, or WIDTHxDEPTH like 128x4)")
    for size in sizes:
        try:
            get_preset(size)
        except ValueError as exc:
            raise ValueError(f"--sizes {size}: {exc}") from None
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"--sizes {text}: a size is given twice")
    return sizes


def parse_count(text: str, flag: str) -> int:
    """A positive token count: 2000000, 2e6, 2M, 500K; ValueError (one line) otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbg]?)\s*", text.lower())
    value = float(match.group(1)) * _SUFFIX[match.group(2)] if match else math.nan
    if not (math.isfinite(value) and 1 <= value <= 10**15 and value == int(value)):
        raise ValueError(f"{flag} {text!r}: give a whole number of tokens (2000000, 2e6, 2M, 500K)")
    return int(value)


def parse_ratios(text: str) -> list[float]:
    """--tokens-per-param: positive numbers, comma-separated (Chinchilla's compute-optimal ratio is about 20)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and 0 < v <= 1e6 for v in values):
        raise ValueError(f"--tokens-per-param {text!r}: give positive numbers, e.g. 20 or 10,20,40")
    return values


def check_size(plan: SweepPlan) -> None:
    """ValueError (one line) for a plan with too many points, a shape the data's vocabulary breaks, or a point whose
    budget is less than one training step (batch x context tokens)."""
    points = plan.points()
    if len(points) > MAX_POINTS:
        raise ValueError(f"{len(points)} points: a sweep has at most {MAX_POINTS}")
    if len({p.name for p in points}) != len(points):
        raise ValueError("two points of this plan have the same size and budget; give each budget once")
    for size in plan.sizes:
        plan.shape(size)  # a shape the data's vocabulary breaks: its one-line error now
    batch = plan.train.get("batch_size") or TrainConfig().batch_size
    for point in points:
        context = plan.train.get("context") or plan.shape(point.size).context_length
        if point.tokens < batch * context:  # a point that is one step seeing many times its budget fits nothing
            raise ValueError(
                f"point {point.name}: its budget ({point.tokens:,} tokens) is less than one training step "
                f"({batch} x {context:,} = {batch * context:,} tokens): lower --batch-size or --context, or raise the "
                "budget"
            )  # fmt: skip


def open_plan(out: Path, plan: SweepPlan) -> None:
    """Write plan to out/sweep.json, or check that the one there is the same; ValueError (one line) when out
    holds another sweep or something that is not a sweep."""
    path = out / PLAN_FILE
    if path.is_file():
        saved = read_plan(out)
        if saved.to_dict() != plan.to_dict():
            raise ValueError(
                f"{out} holds another sweep ({saved.describe()}); give the same options to continue it, "
                "or another --out for a new sweep"
            )
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not a sweep dir (no {PLAN_FILE}); give an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(plan.to_dict(), indent=2) + "\n")


def read_plan(out: Path) -> SweepPlan:
    """The plan in out/sweep.json; ValueError (one line) when it is missing or not a plan."""
    path = out / PLAN_FILE
    if not path.is_file():
        raise ValueError(f"{out}: not a sweep dir (no {PLAN_FILE}); start one with `helium sweep --data ... --out {out}`")
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} plan")
    try:
        plan = SweepPlan(
            data=str(data["data"]), sizes=[str(s) for s in data["sizes"]], tokens=[int(t) for t in data["tokens"]],
            tokens_per_param=[float(r) for r in data["tokens_per_param"]], vocab_size=int(data["vocab_size"]),
            train=dict(data["train"]),
        )  # fmt: skip
        check_size(plan)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: a damaged plan ({exc})") from None
    return plan
