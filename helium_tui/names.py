"""Names cut to a width, one way everywhere (picker, `models list`, status bar, compare, library): '…' in the
middle, so a name's end (a date, the '-2' of a name taken twice) still shows and a cut never looks whole; and runs
of one name labelled apart by their folders (`run_labels`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

ELLIPSIS = "…"


def cut(name: str, width: int, tail: int | None = None) -> str:
    """name if it fits width, else its start, '…' and its last `tail` characters (default: a third of width)."""
    if len(name) <= width:
        return name
    if width <= 1:
        return ELLIPSIS[:width]
    tail = max(width // 3, 1) if tail is None else tail
    tail = min(tail, width - 2) if width >= 3 else 0
    head = width - 1 - tail
    return name[:head] + ELLIPSIS + (name[-tail:] if tail else "")


def cut_around(name: str, width: int, at: int) -> str:
    """name cut to width keeping its start, its end and the characters around index `at` ("ab…cd…yz")."""
    if len(name) <= width or width < 7:
        return cut(name, width)
    head = tail = max((width - 2) // 4, 1)
    middle = width - 2 - head - tail
    start = min(max(at - middle // 2, head), len(name) - tail - middle)
    return name[:head] + ELLIPSIS + name[start : start + middle] + ELLIPSIS + name[-tail:]


def cut_apart(names: Iterable[str], width: int) -> dict[str, str]:
    """Each distinct name cut to width so that no two different names look alike: cut as `cut` does, and
    names that would collide keep what tells them apart (`cut_around` where they first differ)."""
    distinct = list(dict.fromkeys(names))
    shown = {n: cut(n, width) for n in distinct}
    groups: dict[str, list[str]] = {}
    for n in distinct:
        groups.setdefault(shown[n], []).append(n)
    for group in (g for g in groups.values() if len(g) > 1):
        for n in group:
            others = [o for o in group if o != n]
            at = max(first_difference(n, o) for o in others)
            shown[n] = cut_around(n, width, at)
    return shown


def first_difference(a: str, b: str) -> int:
    """The first index where a and b differ (the shorter one's length when one starts the other)."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def run_labels(runs: list[Path]) -> list[str]:
    """Each run's name, with as many parent folders as it takes to tell runs of the same name apart."""
    parts = [run.resolve().parts for run in runs]
    depth = [1] * len(runs)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clash = [i for i, label in enumerate(labels) if labels.count(label) > 1 and depth[i] < len(parts[i])]
        if not clash:
            return labels
        for i in clash:
            depth[i] += 1
