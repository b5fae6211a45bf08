"""The attribution pane: which heads and MLPs pushed the selected token's logit up (orange) or down (blue) when
the model wrote it (direct logit attribution), and which earlier tokens mattered most (through attention).

A grid of every head of every layer (the selected head boxed, knocked-out heads ✗), the largest pushes by name,
then the earlier tokens. Token text is terminal-safe Rich Text, never markup.
"""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.widgets import Static

from helium_tui.look_data import Head, Look, Reading, top_components
from helium_tui.widgets.heat import ink, signed
from helium_tui.widgets.inspector import visible

TOP = 4  # components and tokens listed


def head_grid(attr: Reading, chosen: Head, knocked: set[Head], width: int) -> list[Text]:
    """One line per layer: each head's push as a coloured cell, then the MLP's (scale: the largest push)."""
    n_layer, n_head = attr.heads.shape
    scale = max(float(attr.heads.abs().max()), float(attr.mlps.abs().max()), 1e-9)
    cell = max(1, min(3, (width - 9) // max(1, n_head)))
    header = Text("    ", style="dim")
    for h in range(n_head):
        header.append(f"h{h}"[:cell].ljust(cell), "dim")
    header.append(" mlp", "dim")
    lines = [header]
    for layer in range(n_layer):
        line = Text(f"L{layer}".ljust(4), style="bold" if layer == chosen[0] else "dim")
        for h in range(n_head):
            value = float(attr.heads[layer, h])
            colour = signed(value, scale)
            mark = "✗" if (layer, h) in knocked else ("◆" if (layer, h) == chosen else " ")
            line.append(mark.center(cell)[:cell], style=f"{ink(colour)} on {colour}")
        colour = signed(float(attr.mlps[layer]), scale)
        line.append(" ")
        line.append("   ", style=f"on {colour}")
        lines.append(line)
    return lines


class AttributionPanel(Static):
    """Shows the attribution of one token (computed by the screen, which owns the model)."""

    def show(
        self, look: Look | None, selected: int, attr: Reading | None, chosen: Head, knocked: set[Head]
    ) -> None:
        """Redraw for the selected token's attribution (chosen: the head the attention pane shows)."""
        if look is None or attr is None:
            self.update(Text("…", style="dim"))
            return
        target = look.target(selected)
        head = Text.assemble(("pushes on ", "dim"), (visible(look.names_of(target)), "bold"))
        parts: list[Text] = [head, *head_grid(attr, chosen, knocked, self.content_size.width or 32)]
        largest = Text("largest: ", style="dim")
        for name, value in top_components(attr, TOP):
            largest.append(f"{name} ", "bold")
            largest.append(f"{value:+.2f}  ", "#ec8430" if value > 0 else "#468cf0")
        parts.append(largest)
        parts.append(Text("earlier tokens that mattered:", style="dim"))
        tokens = attr.tokens.tolist()
        order = sorted(range(len(tokens)), key=lambda i: -abs(tokens[i]))[:TOP]
        for i in order:
            parts.append(
                Text.assemble(
                    (f" #{i + look.cut} ", "dim"),
                    (visible(look.names[i])[:12], "bold"),
                    (f" {tokens[i]:+.2f}", "#ec8430" if tokens[i] > 0 else "#468cf0"),
                )
            )
        self.update(Group(*parts))
