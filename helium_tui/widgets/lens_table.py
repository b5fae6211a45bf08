"""The logit lens pane: for the selected token, what each layer would have written there, and how likely each
layer already found the token the model did write (the final norm and the unembedding applied to each layer).

Rows: `embed` (the embeddings alone), then L0 … (after each block; the last one is the model's own output).
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from helium_tui.look_data import Look, Reading, first_certain
from helium_tui.widgets.heat import heat, meter
from helium_tui.widgets.inspector import visible

TOKEN_WIDTH = 8  # cells for a token in the table
METER_WIDTH = 5  # cells of a probability bar


class LensTable(Static):
    """Shows the lens rows of one token; the attention pane's layer is marked ▸."""

    def show(self, look: Look | None, selected: int, reading: Reading | None, layer: int) -> None:
        """Redraw for the selected token (layer: the block the attention pane shows)."""
        if look is None or reading is None:
            self.update(Text("…", style="dim"))
            return
        target = look.target(selected)
        rows = reading.lens
        head = Text.assemble(("writing ", "dim"), (visible(look.names_of(target)), "bold"))
        if selected >= look.length:
            head.append("  (the next token)", "dim")
        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True)  # layer
        table.add_column(no_wrap=True, max_width=TOKEN_WIDTH)  # its top-1
        table.add_column(no_wrap=True, justify="right")  # p top-1
        table.add_column(no_wrap=True)  # bar of p(written)
        table.add_column(no_wrap=True, justify="right")  # p(written)
        table.add_row(Text("", "dim"), Text("top-1", "dim"), Text("p", "dim"), Text("written", "dim"), "")
        first = first_certain(rows, target)
        for i, (label, top_id, top_p, p_target) in enumerate(rows):
            mark = "▸" if i == layer + 1 else " "
            hit = "bold" if top_id == target else ""
            table.add_row(
                Text(mark + label, style="bold" if mark == "▸" else ""),
                Text(visible(look.names_of(top_id))[:TOKEN_WIDTH], style=hit),
                Text(f"{top_p:.2f}"),
                Text(meter(p_target, METER_WIDTH), style=heat(p_target)),
                Text(f"{p_target:.2f}"),
            )
        note = (
            Text(f"the written token is top-1 from {rows[first][0]} on", style="dim italic")
            if first is not None
            else Text("no layer puts the written token first", style="dim italic")
        )
        self.update(Group(head, table, note))
