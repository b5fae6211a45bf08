"""The knock-out pane: the heads switched off (k), the selected token's probability before → after, the
next-token distribution after the story with and without them, and a short greedy continuation of each;
and the view's top line, which names the heads off too.

Model output is shown terminal-safe as Rich Text, never markup.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from helium_tui.look_data import Head, Look
from helium_tui.safe_text import terminal_safe
from helium_tui.widgets.heat import heat, meter
from helium_tui.widgets.inspector import visible

ROWS = 6  # next tokens listed
METER_WIDTH = 4  # cells of each probability bar


def head_names(heads: tuple[Head, ...] | set[Head]) -> str:
    """Heads by name, sorted: "L1.H2 L3.H0" (as the attribution names them)."""
    return " ".join(f"L{layer}.H{head}" for layer, head in sorted(heads))


def head_text(
    model: str, look: Look | None, where: tuple[int, int | None], selected: int, state: str
) -> Text:
    """The view's top line: the model, the layer and head (None: all), the selected token, the heads off."""
    head = Text(" Look inside", style="bold")
    if model:
        head.append(terminal_safe(f" · {model}"), "dim")
    if look is not None:
        layer, which = where
        head.append(f" · L{layer} " + ("all heads" if which is None else f"H{which}"), "bold")
        if 0 < selected <= look.length:
            slot = "next" if selected == look.length else f"#{selected + look.cut}"
            head.append(f" · {slot} ", "dim")
            head.append(visible(look.names_of(look.target(selected)))[:16], "bold reverse")
        head.append(f" · {look.length} tokens · {look.seconds * 1000:.0f} ms", "dim")
        if look.ablated:
            head.append(f" · off: {head_names(look.ablated)}", "bold #ec8430")
    if state:
        head.append(f" · {state}", "italic")
    return head


def change_line(look: Look, selected: int) -> Text:
    """p(the selected token) where it was written, without → with the knock-outs."""
    query, target = look.query(selected), look.target(selected)
    before = float(look.probs(query, base=True)[target])
    after = float(look.probs(query)[target])
    line = Text.assemble(("p(", "dim"), (visible(look.names_of(target))[:12], "bold"), (") ", "dim"))
    line.append(f"{before:.3f}")
    if look.ablated:
        delta = after - before
        line.append(f" → {after:.3f} ")
        line.append(f"({delta:+.3f})", "#ec8430" if delta > 0 else "#468cf0" if delta < 0 else "dim")
    return line


def next_table(look: Look) -> Table:
    """The most likely next tokens after the story (with the knock-outs), and their p without them."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True, max_width=10)
    table.add_column(no_wrap=True, justify="right")
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, justify="right")
    table.add_row(Text("next", "dim"), Text("before", "dim"), "", Text("now", "dim"))
    base = look.probs(look.length - 1, base=True)
    for token_id, p in look.next_tokens(top=ROWS):
        table.add_row(
            Text(visible(look.names_of(token_id))[:10]),
            Text(f"{float(base[token_id]):.2f}", style="dim"),
            Text(meter(p, METER_WIDTH), style=heat(p)),
            Text(f"{p:.2f}", style="bold"),
        )
    return table


class KnockoutPanel(Static):
    """Shows what the knocked-out heads change."""

    def show(self, look: Look | None, selected: int, chosen: Head) -> None:
        """Redraw (chosen: the head k would toggle)."""
        if look is None:
            self.update(Text("…", style="dim"))
            return
        if look.ablated:
            off = Text.assemble(("off: ", "dim"), (head_names(look.ablated), "bold"))
        else:
            off = Text(f"no head off: k switches L{chosen[0]}.H{chosen[1]} off", style="dim")
        parts: list[Text | Table] = [off, change_line(look, selected), next_table(look)]
        if look.ablated:
            parts.append(Text("greedy continuation:", style="dim"))
            parts.append(Text.assemble(("before ", "dim"), quoted(look.continuation.get(()))))
            parts.append(Text.assemble(("now    ", "dim"), quoted(look.continuation.get(look.ablated))))
        self.update(Group(*parts))


def quoted(text: str | None) -> Text:
    """A continuation on one line, or … while it is being told."""
    if text is None:
        return Text("…", style="dim")
    return Text(terminal_safe(text).replace("\n", "⏎"), style="italic", no_wrap=False)
