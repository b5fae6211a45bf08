"""Story library: the store's files (save, list, export, corrupt files) and the library screen's keys."""

from __future__ import annotations

import json
import time

import pytest
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Input, Static

from helium_tui.app import HeliumApp
from helium_tui.library import Story, StoryStore
from helium_tui.screens.library import ConfirmDialog, LibraryScreen, PathDialog


def make_story(prompt: str = "Once upon a time ", text: str = "there was a cat named *Tom*.", **kw) -> Story:
    values = dict(
        params={"temperature": 0.8, "top_p": 0.95}, model="tiny", seed=7, tokens=9, finish_reason="eos"
    )
    values.update(kw)
    return Story(prompt=prompt, text=text, **values)


@pytest.fixture
def store(tmp_path) -> StoryStore:
    return StoryStore(tmp_path / "stories")


# --- the store ---------------------------------------------------------------------------------------------


def test_save_assigns_sortable_id_and_writes_one_json_file(store):
    saved = store.save(make_story())
    assert len(saved.id) == len("20261123-204501-ab12") and saved.id[8] == "-" and saved.id[15] == "-"
    assert saved.created  # ISO time set on save
    files = list(store.root.glob("*.json"))
    assert files == [store.root / f"{saved.id}.json"]
    data = json.loads(files[0].read_text(encoding="utf-8"))
    assert data["prompt"] == "Once upon a time " and data["text"] == "there was a cat named *Tom*."
    assert data["params"] == {"temperature": 0.8, "top_p": 0.95} and data["seed"] == 7
    assert store.get(saved.id) == saved
    assert not list(store.root.glob("*.tmp"))  # no temp files left behind


def test_default_root_is_in_the_user_data_dir(helium_home):
    assert StoryStore().root == helium_home / "stories"


def test_list_is_newest_first(store):
    old = store.save(make_story(text="old one.", created="2024-01-01T10:00:00+00:00"))
    new = store.save(make_story(text="new one.", created="2025-06-01T10:00:00+00:00"))
    stories, warnings = store.list()
    assert [s.id for s in stories] == [new.id, old.id] and warnings == []


def test_resaving_keeps_the_id(store):
    saved = store.save(make_story())
    store.save(Story(**{**saved.__dict__, "text": "an edited story."}))
    stories, _ = store.list()
    assert len(stories) == 1 and stories[0].text == "an edited story." and stories[0].id == saved.id


def test_corrupt_file_is_skipped_with_a_warning_and_left_untouched(store):
    good = store.save(make_story())
    bad = store.root / "20200101-000000-dead.json"
    bad.write_text('{"prompt": "half a fi', encoding="utf-8")
    wrong = store.root / "20200101-000000-beef.json"
    wrong.write_text('{"text": 3}', encoding="utf-8")
    typed = store.root / "20200101-000000-cafe.json"
    typed.write_text('{"prompt": "a", "text": "b", "created": 5}', encoding="utf-8")
    stories, warnings = store.list()
    assert [s.id for s in stories] == [good.id]
    assert len(warnings) == 3 and all(any(str(p) in w for w in warnings) for p in (bad, wrong, typed))
    assert bad.read_text(encoding="utf-8") == '{"prompt": "half a fi'  # never rewritten or deleted
    assert wrong.read_text(encoding="utf-8") == '{"text": 3}'


def test_delete_and_missing_ids(store):
    saved = store.save(make_story())
    store.delete(saved.id)
    assert store.list() == ([], [])
    with pytest.raises(KeyError):
        store.delete(saved.id)
    with pytest.raises(KeyError):
        store.get(saved.id)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")


def test_export_markdown_and_text(store, tmp_path):
    saved = store.save(make_story())
    md = store.export(saved, tmp_path / "out" / "story.md", "md").read_text(encoding="utf-8")
    assert md.startswith("# Once upon a time there was a cat …\n\n")
    assert "**Once upon a time** there was a cat named \\*Tom\\*." in md
    assert "| temperature | 0.8 |" in md and "| seed | 7 |" in md and "| model | tiny |" in md
    txt = store.export(saved, tmp_path / "story.txt", "txt").read_text(encoding="utf-8")
    assert txt.startswith("Once upon a time there was a cat named *Tom*.\n\n---\n")
    assert "temperature: 0.8\n" in txt and "finish reason: eos\n" in txt
    with pytest.raises(ValueError, match="unknown export format"):
        store.export(saved, tmp_path / "story.pdf", "pdf")


# --- the screen --------------------------------------------------------------------------------------------


class LibraryTestApp(App):
    """The two things LibraryScreen needs from the app: `store` and `open_story`."""

    def __init__(self, store: StoryStore) -> None:
        super().__init__()
        self.store = store
        self.opened: list[Story] = []
        self.copied: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("studio", id="studio")

    def open_story(self, story: Story) -> None:
        self.opened.append(story)

    def copy_to_clipboard(self, text: str) -> None:
        self.copied.append(text)
        super().copy_to_clipboard(text)


def notifications(app: App) -> list[str]:
    return [n.message for n in app._notifications]


async def test_screen_lists_previews_and_reopens(store):
    old = store.save(make_story(text="the old story.", created="2024-01-01T10:00:00+00:00"))
    new = store.save(make_story(text="the new story.", created="2025-01-01T10:00:00+00:00"))
    app = LibraryTestApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.push_screen(LibraryScreen())
        await pilot.pause()
        screen = app.screen
        table = screen.query_one("#stories", DataTable)
        assert table.row_count == 2
        assert table.get_row_at(0)[1:] == ["tiny", "9", "Once upon a time the new …"]
        assert "the new story." in str(screen.query_one("#preview", Static).render())
        await pilot.press("down")
        assert "the old story." in str(screen.query_one("#preview", Static).render())
        await pilot.press("enter")
        await pilot.pause()
        assert app.opened == [old] and not isinstance(app.screen, LibraryScreen)
        assert new.id != old.id


async def test_screen_exports_copies_and_deletes(store, tmp_path):
    saved = store.save(make_story())
    app = LibraryTestApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.push_screen(LibraryScreen())
        await pilot.pause()
        for key, fmt in (("m", "md"), ("t", "txt")):
            await pilot.press(key)
            await pilot.pause()
            dialog = app.screen
            assert isinstance(dialog, PathDialog)
            assert dialog.query_one(Input).value == f"~/helium-stories/{saved.id}.{fmt}"
            dialog.query_one(Input).value = str(tmp_path / f"export.{fmt}")
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, LibraryScreen)
        assert (tmp_path / "export.md").read_text(encoding="utf-8") == store.as_markdown(saved)
        assert (tmp_path / "export.txt").read_text(encoding="utf-8") == store.as_text(saved)

        await pilot.press("c")
        assert app.copied == ["Once upon a time there was a cat named *Tom*."]

        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")  # no: nothing happens
        await pilot.pause()
        assert store.root.joinpath(f"{saved.id}.json").exists()
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert not store.root.joinpath(f"{saved.id}.json").exists()
        assert app.screen.query_one("#stories", DataTable).row_count == 0
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, LibraryScreen)


async def test_screen_warns_about_a_corrupt_file_and_leaves_it(store):
    saved = store.save(make_story())
    bad = store.root / "20200101-000000-dead.json"
    bad.write_bytes(b"\xff\xfe not json")
    app = LibraryTestApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.push_screen(LibraryScreen())
        await pilot.pause()
        assert app.screen.query_one("#stories", DataTable).row_count == 1
        assert any("20200101-000000-dead.json" in m for m in notifications(app))
    assert bad.read_bytes() == b"\xff\xfe not json"
    assert store.get(saved.id) == saved


async def test_real_app_saves_lists_and_reopens_a_story(store, helium_home, tiny_bundle):
    app = HeliumApp(model=str(tiny_bundle), dtype="float32", stories_dir=store.root)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.session is not None, "the model to load")
        app.studio.apply_params({"max_new_tokens": 24}, seed=5)  # a short story keeps the test quick
        await pilot.press("ctrl+g")  # generate: the studio saves the finished story through app.store
        await wait_for(pilot, lambda: store.list()[0], "the story to be saved")
        (saved,), _ = store.list()
        assert saved.model == "tiny-bundle" and saved.text and saved.prompt and saved.seed == 5
        assert 0 < saved.tokens <= 24
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert isinstance(app.screen, LibraryScreen) and app.screen.stories == [saved]
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is app.studio
        assert (app.studio.story.prompt, app.studio.story.text) == (saved.prompt, saved.text)


async def wait_for(pilot, condition, what: str, limit_s: float = 60.0) -> None:
    """Let the app run until condition() holds (bounded so CI cannot hang)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)
