"""How the training monitor shows a run: the stats block, the error tail, the loss plot, and its help page.

Run names, paths and errors are user text: terminal-safe, never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual_plotext import PlotextPlot

from engine.humanize import format_duration
from engine.runs.runner import RunState
from helium_tui.dashboard import spike_flag
from helium_tui.safe_text import terminal_safe
from trainer.config import FINETUNE_EPOCHS, MIN_FINETUNE_STEPS
from trainer.finetune import MIN_STORIES

MAX_PLOT_POINTS = 400  # curves are thinned to about this many points before plotting
STATUS_COLORS = {"running": "green", "finished": "bold green", "stopped": "yellow", "failed": "bold red"}
HELP = f"""\
# Training monitor
Train a model without leaving Helium. The top row sets up a run: a preset, a prepared data dir (made by
`helium data prepare --out DIR`), the steps, and optionally the batch size and peak learning rate (empty:
the defaults shown). **Start** (or enter in a field) starts it in the out dir (empty: a new dir under
`runs/`). **Attach** watches the run in the run dir field, going or ended; **Resume** continues it from its
newest checkpoint. **Stop** (ctrl+s) asks the run to save a checkpoint and exit.

**Fine-tune** (ctrl+f, which puts the cursor in the folder field; ctrl+f again: back to a new model) teaches the
model loaded in the studio your own stories: a folder of `.txt`, `.md` and `.jsonl` story files and/or the
library's saved stories. The library box is off until you tick it: those stories are this model's own outputs,
and learning from them mostly teaches it its own habits and mistakes again (names that drift, loops); stories
you wrote or chose teach it something new. It trains for the steps typed (empty: {FINETUNE_EPOCHS} passes over the stories, at least
{MIN_FINETUNE_STEPS}). **Fine-tune** prepares the stories in the model's tokens in the background (the stats
say how far), then starts the run from its weights with the fine-tune defaults (`helium train --init-from`).
Fewer than {MIN_STORIES} stories are refused with a notice. The base model is never changed; leaving the
monitor before the run starts drops it.

Runs are background processes: leaving the monitor or quitting Helium never stops one, and opening the
monitor again re-attaches to the last run. When a run finishes you are asked for a name to install its
model under (default: preset and data dir, e.g. `tiny-ts4096`; a fine-tune's `<base>-tuned-<date>`);
ctrl+o then lists it. ctrl+p lists Start run, Start fine-tune, Attach, Resume, Stop run and Install model
by name, and Overlay runs: tick other runs (beside the watched one or in the runs dir) to draw their training
loss on the plot.

Beside the plot: the gradient norm (before clipping) and the largest layer group's update-to-weight ratio, a
sparkline each, and a flag on a loss spike with the step it happened.
"""


@dataclass
class Progress:
    """How far a fine-tune's data preparation is (what `trainer.prepare` reported last)."""

    stage: str = "reading the stories"  # hashing, reading, tokenizer, encoding train, encoding val
    done: int = 0  # units of the stage done (bytes or stories)
    total: int | None = None  # units in the stage, when known


def thin(xs: list[int], ys: list[float], limit: int = MAX_PLOT_POINTS) -> tuple[list[int], list[float]]:
    """Every k-th point (and always the last) so a long curve plots quickly."""
    if len(xs) <= limit:
        return xs, ys
    k = -(-len(xs) // limit)
    idx = list(range(0, len(xs), k))
    if idx[-1] != len(xs) - 1:
        idx.append(len(xs) - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def _fmt(value: float | None, spec: str) -> str:
    """A number with a format spec, or '–' when unknown."""
    return "–" if value is None else format(value, spec)


def stats_text(state: RunState, installed: str | None) -> Text:
    """The stats block: status, steps and ETA, losses, lr and speed, model, checkpoint, installed model."""
    steps = f"{state.step}/{state.max_steps}" if state.max_steps else str(state.step)
    eta = "done" if state.status == "finished" else "–" if state.is_final else format_duration(state.eta_s)
    text = Text()
    text.append("status ", style="dim").append(state.status, style=STATUS_COLORS.get(state.status, ""))
    text.append(f"   {terminal_safe(Path(state.run_dir).name)}\n", style="dim")
    text.append("step ", style="dim").append(f"{steps}   ")
    text.append("ETA ", style="dim").append(f"{eta}\n")
    text.append("loss ", style="dim").append(_fmt(state.last_loss, ".4f"))
    text.append("   val ", style="dim").append(f"{_fmt(state.last_val_loss, '.4f')}\n")
    text.append("lr ", style="dim").append(_fmt(state.lr, ".2e"))
    text.append("   tok/s ", style="dim").append(f"{_fmt(state.tokens_per_s, ',.0f')}\n")
    text.append_text(dynamics_text(state))
    if state.preset or state.params:
        params = f"{state.params:,}" if state.params else "?"
        text.append("model ", style="dim").append(terminal_safe(f"{state.preset or '?'} · {params} params"))
        text.append(terminal_safe(f" · {state.device or '?'} {state.dtype or ''}\n"))
    checkpoint = terminal_safe(Path(state.last_checkpoint).name) if state.last_checkpoint else "–"
    text.append("checkpoint ", style="dim").append(checkpoint)
    if installed:
        text.append("\nmodel installed as ", style="dim").append(terminal_safe(installed), style="bold")
    elif state.status == "finished" and state.bundle:
        text.append("\nmodel not installed: ctrl+p → Install model", style="dim")
    return text


def dynamics_text(state: RunState) -> Text:
    """Gradient norm (and how often it was clipped), the largest update ratio and its group, a loss spike."""
    text = Text()
    if state.grad_norm is None:
        return text
    text.append("|g| ", style="dim").append(f"{state.grad_norm:.3g}")
    if state.clipped_steps:
        text.append(f" clipped {state.clipped_steps}×", style="yellow")
    if state.update_ratio:
        group = max(state.update_ratio, key=state.update_ratio.__getitem__)
        text.append("   ΔW/W ", style="dim").append(f"{state.update_ratio[group]:.2e} ")
        text.append(terminal_safe(group), style="dim")
    text.append("\n")
    if state.last_spike is not None:
        text.append(f"{spike_flag(state)}\n", style="bold yellow")
    return text


def preparing_text(base: str, sources: str, progress: Progress) -> Text:
    """The stats block while a fine-tune's stories are prepared: for which model, from where, how far."""
    stage = progress.stage
    if progress.total and stage.startswith("encoding"):
        stage += f" {progress.done:,}/{progress.total:,}"
    text = Text()
    text.append("status ", style="dim").append("preparing", style="cyan")
    text.append("   fine-tune\n", style="dim")
    text.append("base ", style="dim").append(terminal_safe(base) or "?", style="bold")
    text.append("\nstories ", style="dim").append(sources or "–")
    text.append("\nstage ", style="dim").append(stage)
    return text


def error_text(state: RunState) -> Text:
    """The error line and the tail of the run's log, or nothing."""
    if not state.error:
        return Text()
    return Text(terminal_safe("\n".join([f"error: {state.error}", *state.error_tail])))


def draw_loss(
    plot: PlotextPlot, state: RunState | None, overlays: Sequence[tuple[str, list[float], list[float]]] = ()
) -> None:
    """Redraw the loss and val-loss curves, and other runs' training loss (overlays: name, steps, losses)."""
    plt = plot.plt
    plt.clear_data()
    plt.clear_figure()
    plt.title("loss")
    plt.xlabel("step")
    if state is not None and state.steps:
        plt.plot(*thin(state.steps, state.losses), label="train", marker="braille")
    if state is not None and state.val_steps:
        plt.plot(*thin(state.val_steps, state.val_losses), label="val", marker="braille")
    for name, xs, ys in overlays:
        plt.plot(*thin(xs, ys), label=terminal_safe(name)[:24], marker="braille")
    plot.refresh()
