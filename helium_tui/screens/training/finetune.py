"""The training monitor's fine-tune preparation, off the UI thread: the stories in the base model's tokens and
the run's config, with throttled progress; and what the fine-tune form shows (the studio's model, the
library).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import BundleError
from helium_tui.screens.training.form_values import FinetunePlan
from helium_tui.screens.training.view import Progress
from trainer.config import TrainConfig
from trainer.finetune import FinetuneData, TooLittleText, prepare_finetune_data, read_base, run_config

if TYPE_CHECKING:
    from engine.generation.session import Session
    from helium_tui.library import StoryStore

PROGRESS_S = 0.1  # progress is reported at most this often
COMMAND = "helium (training monitor: fine-tune)"  # the `command` a fine-tune's config records


@dataclass(frozen=True)
class FinetuneReady:
    """A fine-tune whose data is prepared: its run can start."""

    plan: FinetunePlan
    base_name: str  # the base model's name
    data: FinetuneData  # what was prepared
    config: TrainConfig  # the run's config


@dataclass(frozen=True)
class FinetuneFailed:
    """A fine-tune that could not be prepared."""

    error: str  # one line for the user
    too_little: bool  # too little text: a notice, not an error


def prepare_finetune(
    plan: FinetunePlan,
    store: StoryStore | None,
    overrides: dict[str, Any],
    cancel: threading.Event,
    on_progress: Callable[[Progress], None],
) -> FinetuneReady | FinetuneFailed | None:
    """Read the stories (the library `store`'s when given, and plan's folder), prepare them in the base
    model's tokens and build the run's config (overrides: extra TrainConfig fields). Meant for a daemon
    thread: it never raises, reports progress through on_progress at most once a PROGRESS_S, and returns None
    when cancel was set before the stories were prepared."""
    progress, last_post = Progress(), 0.0

    def report(stage: str, done: int, total: int | None) -> None:
        nonlocal last_post
        if stage != progress.stage:
            progress.stage, progress.done, progress.total = stage, 0, None
        progress.done += done
        progress.total = total if total is not None else progress.total
        if time.monotonic() - last_post >= PROGRESS_S:
            last_post = time.monotonic()
            on_progress(Progress(progress.stage, progress.done, progress.total))

    try:
        base = read_base(plan.base)
        texts = [story.full_text for story in store.list()[0]] if store is not None else []
        if cancel.is_set():
            return None
        data = prepare_finetune_data(base, plan.data_dir, texts, plan.folder, progress=report)
        settings = {"command": COMMAND, **overrides} | {"max_steps": plan.steps}
        config = run_config(data.data_dir, plan.run_dir, base, **settings)
    except TooLittleText as exc:
        return FinetuneFailed(str(exc), too_little=True)
    except (ValueError, OSError, BundleError) as exc:
        return FinetuneFailed(str(exc), too_little=False)
    except Exception as exc:  # noqa: BLE001 - odd files (a broken tokenizer) must not take the app down
        return FinetuneFailed(f"{type(exc).__name__}: {exc}", too_little=False)
    return FinetuneReady(plan, base.name, data, config)


def base_model(session: Session | None) -> tuple[str, str]:
    """(name, bundle dir) of the model a studio session holds; ("", "") without one. The name is the one its
    fine-tune records (a run's `bundle/` is named after its run)."""
    path = getattr(getattr(session, "bundle", None), "path", None)
    if path is None:
        return "", ""
    try:
        return read_base(path).name, str(path)
    except (BundleError, ValueError, OSError):
        return session.name, str(path)


def library_count(store: StoryStore | None) -> int | None:
    """How many stories the library `store` holds (None without a library; 0 when it cannot be read)."""
    if store is None:
        return None
    try:
        return len(store.scan()[0])
    except OSError:
        return 0
