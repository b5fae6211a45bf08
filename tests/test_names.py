"""helium_tui.names: every shortened name is cut with '…', and two names never look alike once cut."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from helium_tui.names import cut, cut_apart
from helium_tui.widgets.status_bar import StatusBar

TUNED = "helium-default-tuned-2026-12-07"


def test_a_cut_name_shows_the_mark_and_its_end():
    assert cut("helium-default", 22) == "helium-default"  # fits: unchanged
    assert cut(TUNED, 22) == "helium-default…6-12-07" and len(cut(TUNED, 22)) == 22
    assert cut(TUNED, 22) != cut(TUNED + "-2", 22)  # the "-2" twin is not the cut name
    assert cut(TUNED + "-2", 22).endswith("-2")
    assert cut(TUNED, 2) == "h…" and cut(TUNED, 1) == "…" and cut(TUNED, 0) == ""


def test_cut_apart_keeps_more_of_the_ends_until_names_differ():
    a, b = "story-model-alpha-2026-12-07", "story-model-beta-2026-12-07"
    assert cut(a, 12) == cut(b, 12)  # the middle is where they differ
    shown = cut_apart([a, b, "short"], 12)
    assert shown[a] != shown[b] and all(len(v) <= 12 for v in shown.values()) and shown["short"] == "short"
    assert "…" in shown[a] and "…" in shown[b]


class BarApp(App):
    def compose(self) -> ComposeResult:
        yield StatusBar()


@pytest.mark.parametrize("model", [TUNED, TUNED + "-2"])
async def test_the_status_bar_cuts_the_model_name_with_a_mark(model):
    app = BarApp()
    async with app.run_test(size=(60, 3)) as pilot:
        bar = app.query_one(StatusBar)
        bar.show(model=model, device="cpu · bfloat16", state="ready", tokens=123, tokens_per_s=456.0)
        await pilot.pause()
        line = bar.render().plain
        assert "…" in line and line.split()[1].endswith(model[-2:])  # the name's end: "07" or "-2"
        assert "123" in line  # the numbers are never cut
