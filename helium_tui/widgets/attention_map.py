"""The attention heat map of the "Look inside" view: one head's (or every head's) pattern over the whole story.

Rows are queries, columns keys; each cell is two pixels stacked (▀ with a foreground and a background colour),
and the map fills whatever room it has: a long story is pooled (the largest weight in each pixel), a short one
stretched. The selected token's query row is marked ▶. Plain Rich Text, never markup.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from helium_tui.look_data import Look
from helium_tui.widgets.heat import MASKED, heat
from helium_tui.widgets.inspector import visible

UPPER = "▀"  # the cell's top pixel in the foreground colour, its bottom pixel in the background colour


def pixels(pattern: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(height, width) weights and visibility of a (T, T) pattern fitted to width x height pixels: a dimension
    longer than its room is pooled (the largest weight of each pixel), a shorter one stretched (nearest)."""
    t = pattern.size(0)
    grid = torch.stack([pattern.float(), (pattern > 0).float()])[None]  # masked weights are exactly 0
    pooled = F.adaptive_max_pool2d(grid, (min(height, t), min(width, t)))[0]  # (2, h, w)
    rows = (torch.arange(height) * pooled.size(1)) // height
    cols = (torch.arange(width) * pooled.size(2)) // width
    stretched = pooled[:, rows][:, :, cols]
    return stretched[0], stretched[1] > 0


def heat_lines(pattern: torch.Tensor, width: int, rows: int, query: int | None) -> list[Text]:
    """The map of pattern in at most width x rows cells (a margin column marks the query's row with ▶)."""
    if width < 2 or rows < 1 or pattern.numel() == 0:
        return []
    pooled, seen = pixels(pattern, width - 1, rows * 2)
    height, t = pooled.size(0), pattern.size(0)
    weights, visible = pooled.tolist(), seen.tolist()  # plain lists: indexing a tensor per pixel is slow
    mark = None if query is None else min(height - 1, query * height // t) // 2
    lines = []
    for row in range(math.ceil(height / 2)):
        line = Text("▶" if row == mark else " ", style="bold")
        top, bottom = 2 * row, min(2 * row + 1, height - 1)
        for col in range(len(weights[0])):
            fg = heat(weights[top][col]) if visible[top][col] else MASKED
            bg = heat(weights[bottom][col]) if visible[bottom][col] else MASKED
            line.append(UPPER, Style(color=fg, bgcolor=bg if bottom != top else None))
        lines.append(line)
    return lines


def grid_shape(count: int, width: int, rows: int) -> tuple[int, int]:
    """(columns, rows) of small maps for count heads in width x rows cells: the one with the largest maps."""
    best, best_side = (count, 1), -1
    for cols in range(1, count + 1):
        grid_rows = math.ceil(count / cols)
        side = min(width // cols - 1, 2 * (rows // grid_rows - 1))  # a gap column, a label row
        if side > best_side:
            best, best_side = (cols, grid_rows), side
    return best


def grid_lines(
    patterns: torch.Tensor, width: int, rows: int, query: int | None, chosen: int, knocked: set[int]
) -> list[Text]:
    """Every head's map of one layer in a grid, each labelled h0, h1, ... (chosen in bold, knocked-out ✗)."""
    count = patterns.size(0)
    cols, grid_rows = grid_shape(count, width, rows)
    cell_w, cell_rows = max(3, width // cols), max(2, rows // grid_rows)
    lines: list[Text] = []
    for r in range(grid_rows):
        block = [Text() for _ in range(cell_rows)]
        for c in range(cols):
            h = r * cols + c
            if h >= count:
                break
            label = f"h{h}" + (" ✗" if h in knocked else "")
            style = "bold reverse" if h == chosen else ("strike dim" if h in knocked else "dim")
            block[0].append(Text(label[: cell_w - 1], style=style))
            block[0].append(" " * (cell_w - min(len(label), cell_w - 1)))
            maps = heat_lines(patterns[h], cell_w - 1, cell_rows - 1, query)
            for i in range(1, cell_rows):
                piece = maps[i - 1] if i - 1 < len(maps) else Text()
                block[i].append(piece)
                block[i].append(" " * (cell_w - piece.cell_len))
        lines.extend(block)
    return lines


def attends_caption(look: Look, weights: list[float], n: int = 3) -> Text:
    """The line above the map: the n tokens the selected token's position attends to most, with weights."""
    caption = Text("attends to: ", style="dim")
    for i in sorted(range(len(weights)), key=lambda i: -weights[i])[:n]:
        caption.append(visible(look.names[i])[:10], "bold")
        caption.append(f" {weights[i]:.2f}  ", "dim")
    return caption


class AttentionMap(Widget, can_focus=True):
    """The heat map pane: call `show(...)` with a layer's patterns; it redraws to fit its size."""

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.patterns: torch.Tensor | None = None  # (n_head, T, T) of the layer shown
        self.head: int = 0  # the selected head
        self.all_heads = False  # a grid of every head instead of one map
        self.query_row: int | None = None  # the selected token's query row
        self.knocked: set[int] = set()  # heads of this layer knocked out
        self.caption = Text()  # the line above the map (who attends to what)

    def show(
        self, patterns: torch.Tensor | None, head: int, all_heads: bool, query: int | None, knocked: set[int],
        caption: Text,
    ) -> None:  # fmt: skip
        """Draw patterns (n_head, T, T) with head selected (or all of them), marking query's row."""
        self.patterns, self.head, self.all_heads = patterns, head, all_heads
        self.query_row, self.knocked, self.caption = query, knocked, caption
        self.refresh()

    def render(self) -> Text:
        width, rows = self.size.width, self.size.height - 1
        out = Text(no_wrap=True, overflow="ellipsis")
        caption = self.caption.copy()
        caption.truncate(width, overflow="ellipsis")
        out.append(caption)
        if self.patterns is None or rows < 1:
            return out
        if self.all_heads:
            lines = grid_lines(self.patterns, width, rows, self.query_row, self.head, self.knocked)
        else:
            lines = heat_lines(self.patterns[self.head], width, rows, self.query_row)
        for line in lines[:rows]:
            out.append("\n")
            out.append(line)
        return out
