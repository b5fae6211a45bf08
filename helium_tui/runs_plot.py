"""Curves of several runs as a picture: an SVG written by hand (no plotting library), or that SVG in an HTML page.

`helium runs compare --out FILE.svg|html` writes one; every label is escaped, so a run's name is never markup.
"""

from __future__ import annotations

import math
from html import escape

Curve = tuple[str, list[float], list[float]]  # (label, xs, ys)

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
WIDTH, HEIGHT = 800, 480  # the picture, in pixels
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50  # margins around the plot area
TICKS = 5  # tick labels on each axis


def ticks(lo: float, hi: float, n: int = TICKS) -> list[float]:
    """About n round values from lo to hi (1, 2 or 5 times a power of ten apart)."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    first = math.ceil(lo / step) * step
    return [float(f"{first + i * step:.12g}") for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    """A tick label: short, exact enough to read."""
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.1e}"
    return f"{value:.4g}"


def _span(values: list[float]) -> tuple[float, float]:
    """(min, max) widened a little when they are equal."""
    lo, hi = min(values), max(values)
    return (lo - 1, hi + 1) if lo == hi else (lo, hi)


def svg(curves: list[Curve], title: str, xlabel: str, ylabel: str) -> str:
    """The curves on shared axes (each its own x range) with a legend, as a standalone SVG document."""
    xs_all = [x for _, xs, _ in curves for x in xs] or [0.0]
    ys_all = [y for _, _, ys in curves for y in ys] or [0.0]
    (x0, x1), (y0, y1) = _span(xs_all), _span(ys_all)
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * w

    def py(y: float) -> float:
        return TOP + h - (y - y0) / (y1 - y0) * h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{w}" height="{h}" fill="none" stroke="#444"/>',
    ]
    for t in ticks(x0, x1):
        out.append(f'<line x1="{px(t):.1f}" y1="{TOP}" x2="{px(t):.1f}" y2="{TOP + h}" stroke="#eee"/>')
        out.append(f'<text x="{px(t):.1f}" y="{TOP + h + 16}" text-anchor="middle">{_label(t)}</text>')
    for t in ticks(y0, y1):
        out.append(f'<line x1="{LEFT}" y1="{py(t):.1f}" x2="{LEFT + w}" y2="{py(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{_label(t)}</text>')
    out.append(f'<text x="{LEFT + w / 2}" y="{HEIGHT - 12}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(
        f'<text x="16" y="{TOP + h / 2}" text-anchor="middle" transform="rotate(-90 16 {TOP + h / 2})">'
        f"{escape(ylabel)}</text>"
    )
    for i, (label, xs, ys) in enumerate(curves):
        color = COLORS[i % len(COLORS)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
        if len(xs) == 1:
            out.append(f'<circle cx="{px(xs[0]):.1f}" cy="{py(ys[0]):.1f}" r="3" fill="{color}"/>')
        elif xs:
            out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        y = TOP + 16 + 16 * i
        out.append(f'<line x1="{LEFT + w - 150}" y1="{y - 4}" x2="{LEFT + w - 130}" y2="{y - 4}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{LEFT + w - 125}" y="{y}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def html(curves: list[Curve], title: str, xlabel: str, ylabel: str) -> str:
    """The SVG in a minimal HTML page."""
    return (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{escape(title)}</title></head>\n'
        f"<body>\n{svg(curves, title, xlabel, ylabel)}</body></html>\n"
    )
