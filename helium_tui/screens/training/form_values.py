"""The training monitor's forms without Textual: typed values checked and turned into a new run's TrainConfig or
a fine-tune's plan, and the name a finished run's model is offered under. Torch-free.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.bundles.info import read_metadata
from engine.bundles.install import check_model_name
from engine.jsonfile import JsonFileError, field, read_json
from engine.paths import user_data_dir, user_models_dir
from engine.runs.rundir import CONFIG_FILE
from trainer.config import DEFAULT_MAX_STEPS, TrainConfig
from trainer.finetune import finetune_name, run_config

DEFAULT_PRESET = TrainConfig.preset  # preset selected when the form opens: `helium train`'s default
DEFAULT_STEPS = DEFAULT_MAX_STEPS  # steps pre-filled in the form: the trainer's own default
MAX_CONFIG_BYTES = 1 << 20  # a larger train_config.json is not read to fill the form
UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")  # characters a suggested model name leaves out
FINETUNE_DATA_DIR = "finetune-data"  # under the user data dir: the stories each fine-tune run was prepared from


def default_run_dir(now: datetime | None = None) -> Path:
    """A fresh run directory under the user data dir: runs/<YYYYMMDD-HHMMSS>."""
    return user_data_dir() / "runs" / f"{(now or datetime.now()):%Y%m%d-%H%M%S}"


def parse_count(text: str, what: str) -> int:
    """A whole number >= 1 typed in the form; ValueError naming `what` otherwise."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"{what} must be a whole number ≥ 1")
    return int(text)


def parse_lr(text: str) -> float:
    """A positive, finite learning rate typed in the form (3e-4, 0.001); ValueError otherwise."""
    try:
        lr = float(text.strip())
    except ValueError:
        lr = math.nan
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError("learning rate must be a positive number such as 3e-4")
    return lr


@dataclass(frozen=True)
class RunForm:
    """What the monitor's form holds, as typed."""

    preset: str = DEFAULT_PRESET  # a name from engine.model.config.PRESETS
    data: str = ""  # the prepared data dir
    steps: str = str(DEFAULT_STEPS)  # optimizer steps
    batch: str = ""  # batch size ("" = the default)
    lr: str = ""  # peak learning rate ("" = the default)
    out: str = ""  # a new run's directory ("" = default_run_dir())

    def hyperparams(self) -> dict[str, Any]:
        """The batch_size and lr typed (an empty field is left out); ValueError for bad values."""
        values: dict[str, Any] = {}
        if self.batch.strip():
            values["batch_size"] = parse_count(self.batch, "batch size")
        if self.lr.strip():
            values["lr"] = parse_lr(self.lr)
        return values

    def new_run(self, overrides: dict[str, Any]) -> tuple[TrainConfig, Path]:
        """The config and directory of a new run from this form (overrides: extra TrainConfig fields that
        typed values beat); ValueError (one line) for anything that cannot start."""
        data_dir = Path(self.data.strip()).expanduser()
        if not self.data.strip() or not data_dir.joinpath("manifest.json").is_file():
            raise ValueError(
                f"{self.data.strip() or 'data dir'}: not a prepared data dir (run `helium data prepare --out DIR`)"
            )
        run_dir = Path(self.out.strip()).expanduser() if self.out.strip() else default_run_dir()
        steps = parse_count(self.steps, "steps")
        choices = {"command": "helium (training monitor)", **overrides, **self.hyperparams()}
        return run_config(data_dir, run_dir, **(choices | {"preset": self.preset, "max_steps": steps})), run_dir

    @classmethod
    def of_run(cls, run_dir: Path, preset_names: tuple[str, ...]) -> RunForm | None:
        """The form that would start the run in run_dir again (from its train_config.json); None when the
        directory has no readable config."""
        config = read_run_config(run_dir)
        if config is None:
            return None
        steps = _value(config, "max_steps", int, low=1)
        batch = _value(config, "batch_size", int, low=1)
        lr = _value(config, "lr", float, low=0)
        return cls(
            preset=_value(config, "preset", str, choices=preset_names) or DEFAULT_PRESET,
            data=_value(config, "data", str) or "",
            steps=str(steps or DEFAULT_STEPS),
            batch=str(batch or ""),
            lr=f"{lr:g}" if lr is not None else "",
        )


@dataclass(frozen=True)
class FinetunePlan:
    """A fine-tune ready to prepare: where its stories come from and where its data and run go."""

    base: Path  # the base model's bundle dir
    library: bool  # train on the library's stories
    folder: Path | None  # a folder of .txt/.md/.jsonl stories, or None
    steps: int | None  # optimizer steps (None: the fine-tune default budget)
    run_dir: Path  # the new run's directory
    data_dir: Path  # where the stories are prepared in the base's tokens


@dataclass(frozen=True)
class FinetuneForm:
    """What the monitor's fine-tune form holds, as typed."""

    base: str = ""  # the loaded model's bundle dir ("" = no model loaded)
    library: bool = True  # the "library stories" box is ticked
    folder: str = ""  # a folder of stories ("" = none)
    steps: str = ""  # optimizer steps ("" = the default budget: trainer.finetune.finetune_config's)

    def plan(self, now: datetime | None = None) -> FinetunePlan:
        """The plan this form asks for; ValueError (one line) for anything that cannot start."""
        if not self.base:
            raise ValueError("no model loaded: load the model to fine-tune in the studio first (ctrl+o)")
        folder = Path(self.folder.strip()).expanduser() if self.folder.strip() else None
        if folder is not None and not folder.is_dir():
            raise ValueError(f"{folder}: no such folder")
        if not self.library and folder is None:
            raise ValueError("choose the stories to fine-tune on: the library, a folder, or both")
        steps = parse_count(self.steps, "steps") if self.steps.strip() else None
        run_dir = default_run_dir(now)
        data_dir = user_data_dir() / FINETUNE_DATA_DIR / run_dir.name
        return FinetunePlan(Path(self.base), self.library, folder, steps, run_dir.resolve(), data_dir.resolve())


def read_run_config(run_dir: Path) -> dict[str, Any] | None:
    """A run dir's train_config.json as a dict (a regular file of at most MAX_CONFIG_BYTES); None otherwise."""
    try:
        data = read_json(Path(run_dir) / CONFIG_FILE, max_bytes=MAX_CONFIG_BYTES)
    except JsonFileError:
        return None
    return data if isinstance(data, dict) else None


def is_finetune_run(run_dir: Path) -> bool:
    """Whether the run in run_dir is a fine-tune (its config starts from a model: `init_from`)."""
    return bool(_value(read_run_config(run_dir) or {}, "init_from", str))


def suggested_model_name(run_dir: Path, preset: str | None, bundle: Path | None = None) -> str:
    """The name offered for a finished run's model, with a numeric suffix when a model of that name is
    installed: a fine-tune's `<base>-tuned-<date>` (its bundle's metadata names the base), else preset and data
    dir, e.g. `tiny-ts4096` (the run dir's name when they are unknown)."""
    base_model = _base_model_name(bundle) if bundle is not None else ""
    if base_model:
        base = UNSAFE_NAME.sub("-", finetune_name(base_model)).strip(".-")
    else:
        config = read_run_config(run_dir) or {}
        preset = preset or _value(config, "preset", str) or ""
        data = Path(_value(config, "data", str) or "").name
        parts = [UNSAFE_NAME.sub("-", part).strip(".-") for part in (preset, data)]
        base = "-".join(p for p in parts if p) or UNSAFE_NAME.sub("-", Path(run_dir).resolve().name).strip(".-")
    base = base[:80] or "my-model"
    models = user_models_dir()
    for n in range(1, 100):
        name = base if n == 1 else f"{base}-{n}"
        if not (models / name).exists() and not (models / name).is_symlink():
            return name
    return base


def installed_as(bundle: Path) -> str | None:
    """The name a bundle is installed under (a link in the models dir that points to it), if any."""
    models = user_models_dir()
    try:
        target = Path(bundle).resolve()
        for entry in models.iterdir():
            if entry.is_symlink() and entry.resolve() == target:
                return entry.name
    except OSError:
        return None
    return None


def check_name(name: str) -> str:
    """A model name typed by the user, stripped; ValueError (one line) when it cannot be a models dir entry."""
    return check_model_name(name.strip())


def _base_model_name(bundle: Path) -> str:
    """The base model a fine-tuned bundle names in its metadata ("" for a model trained from scratch)."""
    base = read_metadata(Path(bundle)).get("base_model")
    return (_value(base, "name", str) or "") if isinstance(base, dict) else ""


def _value(config: dict, key: str, kind: type, **checks: Any) -> Any:
    """config[key] when engine.jsonfile.field accepts it as kind (with its checks: low, choices), else None: a
    value the form cannot show is left to its default."""
    try:
        return field(config, key, kind, None, source=CONFIG_FILE, **checks)
    except JsonFileError:
        return None
