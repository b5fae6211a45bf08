"""Snapshot tests of the story library and the training monitor at 80x24 (pytest-textual-snapshot).

Deterministic content only: a recorded events.jsonl (tests/tui/data, from a real tiny run) replayed with its
run dir locked as a live trainer would, and stories with fixed dates. Update with `--snapshot-update`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from textual.app import App, ComposeResult
from textual.widgets import Static

from engine.runs.rundir import EVENTS_FILE, RunLock
from helium_tui.app_state import AppState
from helium_tui.library import Story, StoryStore
from helium_tui.screens.library import LibraryScreen
from helium_tui.screens.training.screen import TrainingScreen

SIZE = (80, 24)
RECORDED_RUN = Path(__file__).parent / "data" / "tiny-run.events.jsonl"  # 76 of 120 steps, 3 evals


class HostApp(App):
    """A bare app with Helium's stylesheet and the shared state the training screen reads from HeliumApp."""

    CSS_PATH = "../../helium_tui/helium.tcss"
    TITLE = "Helium"

    def __init__(self, store: StoryStore) -> None:
        super().__init__()
        self.state = AppState(store)

    def compose(self) -> ComposeResult:
        yield Static("studio")


def test_monitor_replaying_a_recorded_run(snap_compare, tmp_path, monkeypatch):
    run_dir = tmp_path / "tiny-run"
    run_dir.mkdir()
    shutil.copy(RECORDED_RUN, run_dir / EVENTS_FILE)
    config = {"preset": "tiny", "data": "data/ts4096", "max_steps": 120, "batch_size": 8, "lr": 0.003}
    (run_dir / "train_config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)  # the run dir field shows `tiny-run`, not a temporary path

    async def attach(pilot) -> None:
        pilot.app.animation_level = "none"
        screen = TrainingScreen()
        await pilot.app.push_screen(screen)
        screen.query_one("#run-dir").value = "tiny-run"
        assert screen.attach_from_form() is not None
        screen.query_one("#attach").focus()  # a button: no blinking text cursor
        await pilot.pause()
        assert screen.state is not None and screen.state.step == 76 and screen.stoppable

    with RunLock(run_dir):  # held as by a live trainer: the run shows as running, Stop enabled
        assert snap_compare(HostApp(StoryStore(tmp_path / "stories")), terminal_size=SIZE, run_before=attach)


def test_library_with_long_stories(snap_compare, tmp_path):
    store = StoryStore(tmp_path / "stories")
    prompt = "Once upon a time, in a small village by the sea, there lived a little girl named Lily who"
    texts = [
        " loved to collect shells. Every morning she walked along the beach with her dog Max, and every "
        "evening she sorted the shells by colour on her windowsill. " * 6,
        " was afraid of the dark. One night a tiny firefly knocked on her window and offered to light her "
        "way to the lighthouse, where the old keeper told stories until dawn. " * 6,
        " wanted to sail. [b]Her[/b] grandfather built her a boat from driftwood, and together they "
        "painted it red \x1b]0;title\x07and named it after the moon. " * 6,
    ]
    models = ["stories15M", "tiny-ts4096-a-rather-long-model-name", "heliumlm-nano"]
    for i, (text, model) in enumerate(zip(texts, models, strict=True)):
        store.save(Story(prompt, text, {"temperature": 0.8, "top_p": 0.95}, model, seed=40 + i,
                         created=f"2026-11-2{i}T1{i}:30:00", tokens=380 + 7 * i, finish_reason="length",
                         id=f"2026112{i}-1{i}3000-ab1{i}"))  # fmt: skip

    async def open_library(pilot) -> None:
        await pilot.app.push_screen(LibraryScreen(store))
        await pilot.pause()
        await pilot.press("down")

    assert snap_compare(HostApp(store), terminal_size=SIZE, run_before=open_library)
