"""Live training dashboard for `helium train --watch`: loss curves, throughput, progress, checkpoints, logs.

Renders an `engine.runs.runner.RunState` with rich `Live` on a terminal and as plain progress lines otherwise.
"""

from __future__ import annotations

import time
from pathlib import Path

import plotext
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from engine.humanize import format_duration
from engine.runs.runner import RunEvent, RunHandle, RunState, attach
from helium_tui.safe_text import terminal_safe

REFRESH_PER_SECOND = 4  # dashboard redraws per second
STOP_TIMEOUT_S = 30.0  # after Ctrl-C, how long the run may take to stop before it is terminated
EXIT_WAIT_S = 10.0  # how long to wait for a run this process started to exit after its final status
PLAIN_STEP_EVERY_S = 5.0  # plain mode: at most one step line per this many seconds
LOG_LINES = 3  # recent log lines shown under the chart
ERROR_LINES = 8  # most error-tail lines shown in the dashboard
STATUS_STYLE = {
    "running": "bold cyan",
    "finished": "bold green",
    "stopped": "bold yellow",
    "failed": "bold red",
}
LOSS_COLOR, VAL_COLOR = "cyan", "magenta"
SPARK_BARS = "▁▂▃▄▅▆▇█"  # a sparkline's levels, low to high
SPARK_WIDTH = 24  # points in each sparkline of the dynamics line
MIN_CHART_ROWS = 8  # the dynamics line is shown only when the chart keeps at least this many rows


def watch(
    run_dir: str | Path,
    handle: RunHandle | None = None,
    *,
    console: Console | None = None,
    poll_interval: float = 1 / REFRESH_PER_SECOND,
) -> int:
    """Follow a run until it ends; 0 when it finished or stopped (or on detach), 1 when it failed.

    Ctrl-C asks a run this process started (handle from start_run) to stop gracefully; a second Ctrl-C, or
    the first one on an attached run, detaches: the run goes on (still stopping, if it was asked to). Raises
    ValueError for a directory that holds no run (from `attach`).
    """
    handle = handle or attach(run_dir)
    console = console or Console()
    if console.is_terminal:
        outcome = _follow_live(handle, console, poll_interval)
    else:
        outcome = _follow_plain(handle, console, poll_interval)
    if outcome == "done" and handle.owned:
        handle.wait(EXIT_WAIT_S)  # let the trainer close its files after its final status, and reap it
    return _report(handle.snapshot(), handle, console, detached=outcome == "detached")


class _Follower:
    """Poll a handle, turn Ctrl-C into a graceful stop or a detach, escalate a stop that takes too long."""

    def __init__(self, handle: RunHandle) -> None:
        self.handle = handle  # the run followed
        self.footer = _footer(handle)  # one line of key help under the dashboard
        self.stop_sent: float | None = None  # monotonic time the graceful stop was requested

    def step(self) -> tuple[list[RunEvent], bool]:
        """Read new events; returns them and whether the run is over."""
        events = self.handle.poll()
        done = self.handle.snapshot().is_final or not self.handle.is_alive()
        if done:
            events += self.handle.poll()  # last lines, or the synthesized end of a silent death
        elif self.stop_sent is not None and time.monotonic() - self.stop_sent > STOP_TIMEOUT_S:
            self.footer = "the run did not stop in time: terminating it"
            self.handle.stop(timeout=0)
        return events, done

    def interrupt(self) -> bool:
        """Handle Ctrl-C; True when the dashboard should detach."""
        if self.handle.owned and self.stop_sent is None and self.handle.request_stop():
            self.stop_sent = time.monotonic()
            self.footer = "stopping: the run saves a checkpoint first… (Ctrl-C again detaches; it still stops)"
            return False
        return True


def _follow_live(handle: RunHandle, console: Console, poll_interval: float) -> str:
    """Run the rich Live dashboard until the run ends ('done') or the user detaches ('detached')."""
    from rich.live import Live

    follower = _Follower(handle)

    def view() -> RenderableType:
        width, height = console.size
        return render(handle.snapshot(), width=width, height=height, footer=follower.footer)

    with Live(view(), console=console, refresh_per_second=REFRESH_PER_SECOND, transient=False) as live:
        while True:
            try:
                _, done = follower.step()
                if done:
                    follower.footer = ""  # the exit lines say what happened
                live.update(view())
                if done:
                    return "done"
                time.sleep(poll_interval)
            except KeyboardInterrupt:
                if follower.interrupt():
                    return "detached"
                live.update(view())


def _follow_plain(handle: RunHandle, console: Console, poll_interval: float) -> str:
    """Print one line per eval, checkpoint, log, status and error event, and a step line every few seconds."""
    follower = _Follower(handle)
    last_step_line = float("-inf")  # monotonic time of the last step line printed
    pending: RunEvent | None = None  # newest step event not printed yet
    while True:
        try:
            events, done = follower.step()
            state = handle.snapshot()
            spikes = dict(state.spikes)
            for ev in events:
                if ev.event == "step":
                    pending = ev
                    if ev.step in spikes:  # never thinned away
                        _say(console, f"⚠ loss spike at step {ev.step}: loss {spikes[ev.step]:.4f}", "yellow")
                    if time.monotonic() - last_step_line < PLAIN_STEP_EVERY_S:
                        continue
                if pending is not None and ev.event in (
                    "step",
                    "status",
                    "error",
                ):  # numbers before an outcome
                    _say(console, plain_line(pending, state))
                    last_step_line, pending = time.monotonic(), None
                if ev.event != "step":
                    _say(console, plain_line(ev, state))
            if done:
                return "done"
            time.sleep(poll_interval)
        except KeyboardInterrupt:
            if follower.interrupt():
                return "detached"
            _say(console, follower.footer)


def plain_line(ev: RunEvent, state: RunState) -> str | None:
    """One progress line for an event (None for events not worth a line)."""
    d = ev.data
    if ev.event == "start":
        return (
            f"start: step {ev.step or 0}/{_n(d.get('max_steps'))} · {d.get('preset', '?')} "
            f"{_count(d.get('params'))} params · {d.get('device', '?')} {d.get('dtype', '')}".rstrip()
        )
    if ev.event == "step":
        parts = [f"step {ev.step}/{_n(state.max_steps)}"]
        if state.max_steps and ev.step is not None:
            parts[0] += f" ({ev.step / state.max_steps:.1%})"
        parts += [
            f"loss {_f4(d.get('loss'))}",
            f"lr {_lr(d.get('lr'))}",
            f"{_n(d.get('tokens_per_s'))} tok/s",
        ]
        if isinstance(d.get("eta_s"), (int, float)):
            parts.append(f"eta {format_duration(d['eta_s'])}")
        if isinstance(d.get("grad_norm"), (int, float)):
            parts.append(f"|g| {d['grad_norm']:.3g}" + (" clipped" if d.get("clipped") is True else ""))
        return " · ".join(parts)
    if ev.event == "eval":
        return f"eval step {ev.step}: val loss {_f4(d.get('val_loss'))}"
    if ev.event == "checkpoint":
        return f"checkpoint step {ev.step}: {d.get('path')}" + (" (best)" if d.get("best") else "")
    if ev.event == "log":
        return f"log: {d.get('message', '')}"
    if ev.event == "status":
        line = f"status: {d.get('status')} at step {ev.step if ev.step is not None else state.step}"
        return line + (f" · bundle {d['bundle']}" if d.get("bundle") else "")
    if ev.event == "error":
        tail = d.get("tail") or []
        lines = tail.splitlines() if isinstance(tail, str) else [str(x) for x in tail]
        return "\n".join([f"error: {d.get('message', '')}"] + [f"  | {line}" for line in lines])
    return None


def _report(state: RunState, handle: RunHandle, console: Console, detached: bool) -> int:
    """Print the exit line(s) and pick the exit code; a detach says what the run is still doing."""
    if detached and handle.is_alive():
        pid = f" (pid {handle.pid})" if handle.pid else ""
        again = f"helium train --watch {state.run_dir}"
        if handle.stop_requested:  # the first Ctrl-C asked it to stop: it still does, without us
            _say(console, f"Detached; the run is still stopping{pid}: it finishes its current step, saves a "
                          f"checkpoint and exits. See how it ended: {again}")  # fmt: skip
        else:
            _say(console, f"Detached; the run goes on{pid}. Watch again: {again}")
        return 0
    if detached:  # it ended meanwhile: report how
        handle.poll()
        state = handle.snapshot()
    if state.status == "finished":
        _say(console, f"Training finished at step {state.step}.", "green")
        if state.bundle:
            _say(console, f"Model bundle: {state.bundle} (try: helium tell --model {state.bundle})")
        return 0
    if state.status == "stopped":
        checkpoint = f"; last checkpoint: {state.last_checkpoint}" if state.last_checkpoint else ""
        _say(console, f"Training stopped at step {state.step}{checkpoint}.", "yellow")
        return 0
    if state.status == "failed":
        _say(console, f"Training failed at step {state.step}: {state.error}", "red")
        if console.is_terminal:  # plain output already printed the error event with its tail
            for line in state.error_tail:
                _say(console, f"  | {line}")
        _say(console, f"Full log: {Path(state.run_dir) / 'train.log'}")
        return 1
    _say(console, f"Run status {state.status}: no final status and no process to follow.")
    return 1


def _say(console: Console, line: str | None, style: str | None = None) -> None:
    """Print a plain, terminal-safe line (no markup, no highlighting, no hard wrapping); None prints nothing."""
    if line is not None:
        console.print(terminal_safe(line), style=style, markup=False, highlight=False, soft_wrap=True)


def render(state: RunState, width: int = 80, height: int = 24, footer: str = "") -> RenderableType:
    """The whole dashboard for one snapshot, sized to fit width x height (80x24 and up)."""
    inner = max(20, width - 4)  # panel border and padding
    info = _info(state, inner)
    bottom = _error_block(state) if state.status == "failed" else _log_block(state, inner)
    fixed = 2 + len(info) + 1 + len(bottom) + (1 if footer else 0) + 1  # borders, legend, footer, cursor line
    dynamics = dynamics_line(state)
    if dynamics is not None and height - fixed - 1 >= MIN_CHART_ROWS:
        info, fixed = [*info, dynamics], fixed + 1
    chart_h = max(5, height - fixed)
    body = Group(*info, _legend(state), loss_chart(state, inner, chart_h), *bottom)
    title = Text.assemble(("Helium training", "bold"), " · ", (terminal_safe(state.run_dir), "dim"))
    status = Text(f" {state.status} ", style=STATUS_STYLE.get(state.status, "bold"))
    panel = Panel(
        body, title=title, title_align="left", subtitle=status, subtitle_align="right", padding=(0, 1)
    )
    if not footer:
        return panel
    return Group(panel, Text(footer, style="dim", overflow="ellipsis", no_wrap=True))


def _info(state: RunState, width: int) -> list[RenderableType]:
    """The number lines: progress bar with ETA, loss/lr/throughput, model, checkpoint."""
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_column(no_wrap=True, justify="right")
    steps = f"step {state.step:,}" + (f"/{state.max_steps:,}" if state.max_steps else "")
    total = float(state.max_steps or 100)
    done = float(state.step) if state.max_steps else None  # no max_steps: an indeterminate (pulsing) bar
    pct = f"{state.progress:6.1%}" if state.progress is not None else ""
    eta = (
        f"ETA {format_duration(state.eta_s)}" if state.eta_s is not None and state.status == "running" else ""
    )
    if state.status != "running" and state.elapsed_s is not None:
        eta = f"took {format_duration(state.elapsed_s)}"
    grid.add_row(
        steps, ProgressBar(total=total, completed=done or 0, pulse=done is None), f"{pct}  {eta}".strip()
    )

    numbers = Text(no_wrap=True, overflow="ellipsis")
    numbers.append("loss ", "dim").append(_f4(state.last_loss), f"bold {LOSS_COLOR}")
    numbers.append("  val ", "dim").append(_f4(state.last_val_loss), f"bold {VAL_COLOR}")
    numbers.append("  lr ", "dim").append(_lr(state.lr))
    numbers.append("  tok/s ", "dim").append(_n(state.tokens_per_s))
    if state.mfu is not None:
        numbers.append("  mfu ", "dim").append(f"{state.mfu:.1%}")
    if state.grad_norm is not None:
        numbers.append("  |g| ", "dim").append(f"{state.grad_norm:.2f}")

    model = Text(no_wrap=True, overflow="ellipsis", style="dim")
    model.append(terminal_safe(f"{state.preset or 'model'} · {_count(state.params)} params · {state.device or '?'}"))
    if state.dtype:
        model.append(terminal_safe(f" {state.dtype}"))
    if state.world_size and state.world_size > 1:
        model.append(f" ×{state.world_size}")
    model.append(f" · {_count(state.tokens)} tokens")
    if state.elapsed_s is not None:
        model.append(f" · {format_duration(state.elapsed_s)} elapsed")

    where = Text(no_wrap=True, overflow="ellipsis")
    if state.bundle:
        where.append("bundle ", "dim").append(terminal_safe(state.bundle), "green")
    elif state.last_checkpoint:
        where.append("checkpoint ", "dim").append(terminal_safe(state.last_checkpoint))
        if state.best_checkpoint == state.last_checkpoint:
            where.append(" (best)", "green")
    else:
        where.append("no checkpoint yet", "dim")
    return [grid, numbers, model, where]


def _legend(state: RunState) -> Text:
    """The chart's legend line."""
    legend = Text(no_wrap=True)
    legend.append("━ loss", LOSS_COLOR).append("  ").append("• val loss", VAL_COLOR)
    if not state.val_losses:
        legend.append(" (none yet)", "dim")
    if state.last_spike is not None:
        legend.append("  ").append(spike_flag(state), "bold yellow")
    return legend


def spike_flag(state: RunState) -> str:
    """'⚠ loss spike at step N (loss)' for the latest spike, with how many there were; '' when none."""
    if state.last_spike is None:
        return ""
    step, loss = state.last_spike
    more = f", {len(state.spikes)} in all" if len(state.spikes) > 1 else ""
    return f"⚠ loss spike at step {step:,} ({loss:.3f}{more})"


def sparkline(values: list[float], width: int = SPARK_WIDTH) -> str:
    """The last `width` values as block characters scaled between their min and max."""
    values = values[-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    top = len(SPARK_BARS) - 1
    return "".join(SPARK_BARS[round((v - lo) / (hi - lo) * top) if hi > lo else 0] for v in values)


def dynamics_line(state: RunState) -> Text | None:
    """Gradient norm and largest update ratio, each a sparkline and its last value; None before any step."""
    if not state.grad_norms:
        return None
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append("|g| ", "dim").append(sparkline(state.grad_norms), LOSS_COLOR)
    line.append(f" {state.grad_norms[-1]:.3g}")
    if state.clipped_steps:
        line.append(f" (clipped {state.clipped_steps}×)", "yellow")
    if state.max_ratios:
        group = max(state.update_ratio, key=state.update_ratio.__getitem__)
        line.append("  ΔW/W ", "dim").append(sparkline(state.max_ratios), VAL_COLOR)
        line.append(f" {state.max_ratios[-1]:.2e}").append(terminal_safe(f" {group}"), "dim")
    return line


def loss_chart(state: RunState, width: int, height: int) -> Text:
    """Training and validation loss against step, drawn by plotext in braille, as a rich Text."""
    if not state.losses and not state.val_losses:
        lines = ["", "waiting for the first step…"] + [""] * (height - 2)
        return Text("\n".join(lines[:height]), style="dim", justify="center")
    plotext.clear_figure()
    plotext.plotsize(width, height)
    plotext.theme("clear")
    plotext.frame(True)
    if state.losses:
        xs, ys = downsample(state.steps, state.losses, max(2, width * 2))
        plotext.plot(xs, ys, color=LOSS_COLOR, marker="braille")
    if state.val_losses:  # sparse points on top of the training curve
        xs, ys = downsample(state.val_steps, state.val_losses, max(2, width // 2))
        plotext.scatter(xs, ys, color=VAL_COLOR, marker="•")
    steps = [*state.steps, *state.val_steps]
    ticks = step_ticks(min(steps), max(steps))
    plotext.xticks(ticks, [str(t) for t in ticks])  # whole steps: never "57.5"
    chart = Text.from_ansi(plotext.build().rstrip("\n"), no_wrap=True, overflow="crop")
    plotext.clear_figure()
    return chart


def step_ticks(first: int, last: int, most: int = 5) -> list[int]:
    """About `most` whole-number step marks up to last (always marked), a round number (1, 2 or 5 × 10^k) apart."""
    span = max(last - first, 1)
    gap = next(g for k in range(20) for g in (10**k, 2 * 10**k, 5 * 10**k) if span / g <= most)
    start = -(-first // gap) * gap  # the first multiple of gap at or after first
    return [t for t in range(start, last + 1, gap) if last - t >= gap / 3] + [last]


def downsample(xs: list[int], ys: list[float], n: int) -> tuple[list[float], list[float]]:
    """At most n points: the mean of each of n equal runs of the series (the series itself when short)."""
    if len(xs) <= n:
        return [float(x) for x in xs], list(ys)
    size = len(xs) / n
    out_x, out_y = [], []
    for i in range(n):
        lo, hi = int(i * size), max(int(i * size) + 1, int((i + 1) * size))
        out_x.append(sum(xs[lo:hi]) / (hi - lo))
        out_y.append(sum(ys[lo:hi]) / (hi - lo))
    return out_x, out_y


def _log_block(state: RunState, width: int) -> list[Text]:
    """The last few log lines (always LOG_LINES lines, so the layout does not jump)."""
    recent = (state.logs or state.log_tail)[-LOG_LINES:]  # `log` events, else what the trainer printed
    lines = [Text(terminal_safe(f"› {m}"), style="dim", no_wrap=True, overflow="ellipsis") for m in recent]
    return [Text("")] * (LOG_LINES - len(lines)) + lines


def _error_block(state: RunState) -> list[Text]:
    """The error message and the tail of the traceback/log."""
    block = [
        Text(terminal_safe(f"✗ {state.error or 'training failed'}"), style="bold red", no_wrap=True,
             overflow="ellipsis")
    ]  # fmt: skip
    block += [
        Text(terminal_safe(f"  {line}"), style="red", no_wrap=True, overflow="ellipsis")
        for line in state.error_tail[-ERROR_LINES:]
    ]
    return block


def _footer(handle: RunHandle) -> str:
    """Key help: what Ctrl-C does for this run."""
    if handle.owned:
        return "Ctrl-C: stop the run gracefully (saves a checkpoint)"
    return "Ctrl-C: detach (the run keeps going)"


def _f4(value: object) -> str:
    """A loss with 4 decimals, or '–'."""
    return f"{value:.4f}" if isinstance(value, (int, float)) else "–"


def _lr(value: object) -> str:
    """A learning rate like 3.00e-04, or '–'."""
    return f"{value:.2e}" if isinstance(value, (int, float)) else "–"


def _n(value: object) -> str:
    """A whole number with thousands separators, or '?'."""
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "?"


def _count(value: object) -> str:
    """A count like 15.2M or 830K, or '?'."""
    if not isinstance(value, (int, float)):
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"
