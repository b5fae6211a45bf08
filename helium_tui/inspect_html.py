"""The "Look inside" view as one self-contained HTML page (no scripts, no outside files) for a learner to share:
the story shaded by attention, the attention map as inline SVG, the logit lens, the attribution, the knock-outs.

Every string from the model or the user goes through `terminal_safe` (no control characters) then html.escape.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from helium_tui.look_data import Look, Reading, first_certain, top_components
from helium_tui.safe_text import terminal_safe
from helium_tui.widgets.heat import MASKED, heat, ink, signed
from helium_tui.widgets.knockout_panel import head_names

MAP_PIXELS = 128  # the largest side of an exported map (a longer story is pooled, as on screen)
GRID_PIXELS = 64  # the same for each map of a grid of every head (the page stays a few MB at most)

STYLE = """
body { font-family: system-ui, sans-serif; background: #16182a; color: #e8e8f0; margin: 2em; max-width: 72em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; color: #ffc440; }
.story { font-family: ui-monospace, monospace; white-space: pre-wrap; line-height: 1.6; }
.story span { border-radius: 2px; } .sel { outline: 2px solid #fff; font-weight: bold; }
.dim { color: #9a9ab0; } table { border-collapse: collapse; font-family: ui-monospace, monospace; }
td, th { padding: 2px 8px; text-align: left; } .num { text-align: right; }
.heads td { width: 2.2em; height: 1.3em; text-align: center; padding: 0; }
svg { background: #101014; margin: 4px; }
"""


@dataclass(frozen=True)
class View:
    """What the screen shows, for the page."""

    model: str  # the model's name
    look: Look  # the computed look
    selected: int  # the selected token
    layer: int  # the attention layer shown
    head: int  # the selected head
    all_heads: bool  # every head of the layer as a grid
    reading: Reading | None  # the lens and attribution of the selected token


def esc(text: str) -> str:
    """Model or user text made safe for the page: no control characters, HTML escaped."""
    return html.escape(terminal_safe(text), quote=True)


def token_name(look: Look, token_id: int) -> str:
    """A token on its own, escaped, with spaces and newlines visible."""
    return esc(look.names_of(token_id).replace(" ", "·").replace("\n", "⏎")) or "∅"


def story_html(view: View) -> str:
    """The story's tokens, each earlier one shaded by the selected position's attention."""
    look = view.look
    weights = look.attention(
        view.layer, None if view.all_heads else view.head, look.query(view.selected)
    ).tolist()
    top = max(weights, default=0.0) or 1.0
    spans = []
    for i, piece in enumerate(look.pieces):
        style = ""
        if i < len(weights) and weights[i] > 0:
            colour = heat(weights[i] / top)
            style = f' style="background:{colour};color:{ink(colour)}"'
        cls = ' class="sel"' if i == view.selected else ""
        title = f' title="#{i + look.cut} attention {weights[i]:.3f}"' if i < len(weights) else ""
        spans.append(f"<span{cls}{style}{title}>{esc(piece) or '◆'}</span>")
    nxt = ' class="sel"' if view.selected == look.length else ""
    return f'<p class="story">{"".join(spans)}<span{nxt}> ▏next?</span></p>'


def map_svg(pattern: torch.Tensor, label: str, size: int, pixels: int = MAP_PIXELS) -> str:
    """One attention pattern (T, T) as an SVG of coloured squares, pooled to at most `pixels` a side."""
    t = pattern.size(0)
    side = min(t, pixels)
    pooled = F.adaptive_max_pool2d(pattern.float()[None, None], (side, side))[0, 0].tolist()
    cell = size / side
    rects = [
        f'<rect x="{c * cell:.2f}" y="{r * cell:.2f}" width="{cell:.2f}" height="{cell:.2f}" fill="{heat(v)}"/>'
        for r, row in enumerate(pooled)
        for c, v in enumerate(row)
        if v > 0
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}" '
        f'role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>'
        f'<rect width="{size}" height="{size}" fill="{MASKED}"/>{"".join(rects)}</svg>'
    )


def maps_html(view: View) -> str:
    """The selected head's map, or every head of the layer."""
    patterns = view.look.cache.attention[view.layer]
    if not view.all_heads:
        return map_svg(patterns[view.head], f"attention L{view.layer} H{view.head}", 480)
    return "".join(
        f'<figure style="display:inline-block;margin:0">{map_svg(p, f"L{view.layer} H{h}", 200, GRID_PIXELS)}'
        f'<figcaption class="dim">H{h}</figcaption></figure>'
        for h, p in enumerate(patterns)
    )


def lens_html(view: View) -> str:
    """The logit lens of the selected token: each layer's top-1 and the written token's probability."""
    look, reading = view.look, view.reading
    if reading is None:
        return '<p class="dim">(not computed)</p>'
    target = look.target(view.selected)
    rows = reading.lens
    first = first_certain(rows, target)
    out = ["<table><tr><th>layer</th><th>top-1</th><th>p</th><th>p(written)</th></tr>"]
    for label, top_id, top_p, p_target in rows:
        colour = heat(p_target)
        out.append(
            f"<tr><td>{label}</td><td>{token_name(look, top_id)}</td><td class=num>{top_p:.3f}</td>"
            f'<td class=num style="background:{colour};color:{ink(colour)}">{p_target:.3f}</td></tr>'
        )
    out.append("</table>")
    note = f"is top-1 from {rows[first][0]} on" if first is not None else "is not any layer's top-1"
    out.append(f'<p class="dim">The written token {note}.</p>')
    return "".join(out)


def pushes_html(view: View) -> str:
    """Each head's and MLP's push on the written token's logit, the largest by name, the earlier tokens."""
    look, attr = view.look, view.reading
    if attr is None:
        return '<p class="dim">(not computed)</p>'
    scale = max(float(attr.heads.abs().max()), float(attr.mlps.abs().max()), 1e-9)
    n_layer, n_head = attr.heads.shape
    out = ['<table class="heads"><tr><th></th>']
    out += [f"<th>H{h}</th>" for h in range(n_head)] + ["<th>MLP</th></tr>"]
    for layer in range(n_layer):
        out.append(f"<tr><th>L{layer}</th>")
        for value in [*attr.heads[layer].tolist(), float(attr.mlps[layer])]:
            colour = signed(value, scale)
            out.append(
                f'<td style="background:{colour};color:{ink(colour)}" title="{value:+.3f}">{value:+.1f}</td>'
            )
        out.append("</tr>")
    out.append("</table><p>Largest: ")
    out.append(", ".join(f"{esc(name)} {value:+.3f}" for name, value in top_components(attr, 6)))
    tokens = attr.tokens.tolist()
    order = sorted(range(len(tokens)), key=lambda i: -abs(tokens[i]))[:6]
    out.append("</p><p>Earlier tokens that mattered: ")
    out.append(", ".join(f"#{i + look.cut} {token_name(look, look.ids[i])} {tokens[i]:+.3f}" for i in order))
    return "".join(out) + "</p>"


def knockout_html(view: View) -> str:
    """The heads off, the written token's probability before and after, the next tokens, the continuations."""
    look = view.look
    off = head_names(look.ablated) or "none"
    query, target = look.query(view.selected), look.target(view.selected)
    before, after = float(look.probs(query, base=True)[target]), float(look.probs(query)[target])
    out = [f"<p>Heads off: <b>{off}</b>. p({token_name(look, target)}) {before:.4f} → {after:.4f} "
           f"({after - before:+.4f}).</p>"]  # fmt: skip
    out.append("<table><tr><th>next token</th><th>p before</th><th>p now</th></tr>")
    base = look.probs(look.length - 1, base=True)
    for token_id, p in look.next_tokens():
        out.append(
            f"<tr><td>{token_name(look, token_id)}</td><td class=num>{float(base[token_id]):.4f}</td>"
            f"<td class=num>{p:.4f}</td></tr>"
        )
    out.append("</table>")
    if look.ablated:
        before = look.continuation.get((), "(not told yet)")
        told = look.continuation.get(look.ablated, "(not told yet)")
        out.append(f"<p>Greedy continuation: <i>{esc(before)}</i></p>")
        out.append(f"<p>With the heads off: <i>{esc(told)}</i></p>")
    return "".join(out)


def look_html(view: View) -> str:
    """The whole page."""
    look = view.look
    which = "all heads" if view.all_heads else f"head {view.head}"
    target = token_name(look, look.target(view.selected))
    where = "the next token" if view.selected == look.length else f"token #{view.selected + look.cut}"
    cut = f" (the last {look.length} of {look.length + look.cut})" if look.cut else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Look inside {esc(view.model)}</title><style>{STYLE}</style></head><body>\n"
        f"<h1>Look inside {esc(view.model)}</h1>\n"
        f'<p class="dim">{look.length} tokens{cut} · layer {view.layer}, {which} · selected: {where} '
        f"(<b>{target}</b>), read at the position before it. Made with Helium.</p>\n"
        f"<h2>Story, shaded by attention</h2>\n{story_html(view)}\n"
        f"<h2>Attention map (queries down, keys across)</h2>\n{maps_html(view)}\n"
        f"<h2>Logit lens</h2>\n{lens_html(view)}\n"
        f"<h2>Attribution</h2>\n{pushes_html(view)}\n"
        f"<h2>Knock-out</h2>\n{knockout_html(view)}\n</body></html>\n"
    )
