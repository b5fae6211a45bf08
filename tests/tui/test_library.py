"""Story library: the store's files (save, list, export, odd and hostile files) and the library screen's keys."""

from __future__ import annotations

import json
import os
import time

import pytest
from textual import on
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Input, Static

from helium_tui.app import HeliumApp
from helium_tui.library import MAX_STORY_CHARS, Story, StoryStore
from helium_tui.screens.dialogs import AskDialog, ConfirmDialog
from helium_tui.screens.library import LibraryScreen
from tests.tui.conftest import assert_no_control_characters

WAIT_S = 60.0  # upper bound for any wait in these tests (bounded polling, never a timing assert)
ESCAPES = "\x1b]0;HACKED\x1b\\\x1b[2J\x1b]52;c;aGk=\x07\x9b31m"  # retitle, clear, clipboard, C1 CSI


def make_story(prompt: str = "Once upon a time ", text: str = "there was a cat named *Tom*.", **kw) -> Story:
    values = dict(
        params={"temperature": 0.8, "top_p": 0.95}, model="tiny", seed=7, tokens=9, finish_reason="eos"
    )
    values.update(kw)
    return Story(prompt=prompt, text=text, **values)


@pytest.fixture
def store(tmp_path) -> StoryStore:
    return StoryStore(tmp_path / "stories")


def write(store: StoryStore, name: str, content: str | bytes) -> None:
    store.root.mkdir(parents=True, exist_ok=True)
    path = store.root / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


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
    assert list(data)[-2:] == ["prompt", "text"]  # short fields first: a list reads them from the head
    assert store.get(saved.id) == saved
    assert not list(store.root.glob("*.tmp"))  # no temp files left behind


def test_default_root_is_in_the_user_data_dir(helium_home):
    assert StoryStore().root == helium_home / "stories"


def test_list_is_newest_first(store):
    old = store.save(make_story(text="old one.", created="2024-01-01T10:00:00+00:00"))
    new = store.save(make_story(text="new one.", created="2025-06-01T10:00:00+00:00"))
    stories, warnings = store.list()
    assert [s.id for s in stories] == [new.id, old.id] and warnings == []
    heads, warnings = store.scan()
    assert [h.story for h in heads] == [new, old] and all(h.complete for h in heads) and warnings == []


def test_order_follows_the_real_time_across_offsets(store):
    late = store.save(make_story(created="2026-01-01T09:00:00+00:00"))  # 09:00 UTC
    early = store.save(make_story(created="2026-01-01T10:00:00+05:00"))  # 05:00 UTC
    assert [h.story.id for h in store.scan()[0]] == [late.id, early.id]


def test_resaving_keeps_the_id(store):
    saved = store.save(make_story())
    store.save(Story(**{**saved.__dict__, "text": "an edited story."}))
    stories, _ = store.list()
    assert len(stories) == 1 and stories[0].text == "an edited story." and stories[0].id == saved.id


def test_a_story_over_the_cap_is_cut_when_saved_and_says_so(store):
    saved = store.save(make_story(prompt="P" * 10, text="x" * (MAX_STORY_CHARS + 5)))
    assert len(saved.full_text) == MAX_STORY_CHARS and saved.chars_cut == 15
    assert store.get(saved.id) == saved
    assert "| cut when saved | 15 characters |" in store.as_markdown(saved)


def test_unreadable_files_are_skipped_with_a_warning_and_left_untouched(store):
    good = store.save(make_story())
    files = {
        "20200101-000000-dead.json": b'{"prompt": "half a fi',
        "20200101-000000-beef.json": b'{"text": 3}',
        "20200101-000000-f00d.json": b"\xff\xfe not json",
        "20200101-000000-babe.json": b"[1, 2]",
        "nested.json": b'{"params": ' + b"[" * 100_000 + b"]" * 100_000 + b', "prompt": "a", "text": "b"}',
    }
    for name, content in files.items():
        write(store, name, content)
    for read in (store.list, store.scan):
        stories, warnings = read()
        ids = [s.id for s in stories] if read == store.list else [h.story.id for h in stories]
        assert ids == [good.id]
        assert len(warnings) == len(files) and all(any(name in w for w in warnings) for name in files)
    for name, content in files.items():
        assert (store.root / name).read_bytes() == content  # never rewritten or deleted


def test_a_story_nested_deeply_after_its_text_is_listed_but_not_opened(store):
    write(store, "deep.json", b'{"prompt": "a", "text": "b", "params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    (head,), warnings = store.scan()  # the head read stops at the nesting, after the text
    assert (head.story.prompt, head.story.text, head.complete, warnings) == ("a", "b", False, [])
    with pytest.raises(ValueError, match="nested too deeply"):
        store.get("deep")


def test_invalid_fields_are_dropped_with_a_warning_and_the_story_shown(store):
    write(store, "odd.json", json.dumps({
        "prompt": "a", "text": "b", "created": "0001-01-01T00:00:00+14:00", "seed": -3, "tokens": True,
        "model": ["x"], "params": {"temperature": float("nan"), "top_p": 0.5, "top_k": 1e300, "note": "ok"},
    }))  # fmt: skip
    (head,), (warning,) = store.scan()
    story = head.story
    assert (story.prompt, story.text, story.seed, story.tokens, story.model) == ("a", "b", None, 0, "")
    assert story.params == {"top_p": 0.5, "note": "ok"}
    assert "odd.json: ignored invalid model, tokens, seed, params.temperature, params.top_k" == warning
    from helium_tui.library import short_date

    assert short_date(story) == "?"  # year 1 at +14:00 cannot be shown in local time: no crash
    assert store.get("odd") == story


def test_fifos_devices_and_folders_named_like_stories_never_block(store):
    good = store.save(make_story())
    os.mkfifo(store.root / "20200101-000000-f1f0.json")  # nobody ever writes to it
    (store.root / "20200101-000000-d1d1.json").mkdir()
    (store.root / "20200101-000000-0000.json").symlink_to("/dev/zero")
    heads, warnings = store.scan()
    assert [h.story.id for h in heads] == [good.id]
    assert sum("not a regular file" in w for w in warnings) == 3, warnings
    with pytest.raises(ValueError, match="not a regular file"):
        store.get("20200101-000000-f1f0")


def test_large_files_are_listed_from_their_head_and_opened_whole(store):
    big = store.save(make_story(text="the cat sat on the mat. " * 100_000))  # 2.4 MB
    legacy = {"prompt": "Old ", "text": "word " * 1_000_000, "model": "m", "created": "2025-01-01T00:00:00"}
    write(store, "20250101-000000-0ld0.json", json.dumps(legacy))  # 5 MB, metadata at the end
    write(store, "20250101-000000-b1b1.json", json.dumps({"prompt": "", "text": "y" * (17 * 2**20)}))
    heads, warnings = store.scan()
    assert warnings == []
    by_id = {h.story.id: h for h in heads}
    assert not by_id[big.id].complete and by_id[big.id].story.model == "tiny"
    assert by_id[big.id].story.text.startswith("the cat sat") and len(by_id[big.id].story.text) < 70_000
    old = by_id["20250101-000000-0ld0"]
    assert old.story.prompt == "Old " and old.story.model == "" and old.size > 5_000_000  # read before its end
    assert store.get(big.id) == big  # opened whole
    assert store.get("20250101-000000-0ld0").model == "m"
    with pytest.raises(ValueError, match="too large to open"):
        store.get("20250101-000000-b1b1")


def test_delete_and_missing_ids(store):
    saved = store.save(make_story())
    store.delete(saved.id)
    assert store.list() == ([], [])
    with pytest.raises(KeyError):
        store.delete(saved.id)
    with pytest.raises(KeyError):
        store.get(saved.id)
    for bad in ("../../etc/passwd", ".hidden", "", "a\0b"):
        with pytest.raises(ValueError):
            store.get(bad)


def test_a_hand_named_story_file_can_be_opened_and_deleted(store):
    write(store, "foo.json", json.dumps({"prompt": "a", "text": "b"}))
    (head,), _ = store.scan()
    assert head.story.id == "foo" and store.get("foo").text == "b"
    store.delete("foo")
    assert not (store.root / "foo.json").exists()


def test_export_markdown_and_text(store, tmp_path):
    saved = store.save(make_story(params={"temperature": 0.8, "top_p": 0.95, "seed": 7}))
    md = store.export(saved, tmp_path / "out" / "story.md", "md").read_text(encoding="utf-8")
    assert md.startswith("# Once upon a time there was a cat …\n\n")
    assert "**Once upon a time** there was a cat named \\*Tom\\*." in md
    assert "| temperature | 0.8 |" in md and "| model | tiny |" in md
    assert md.count("| seed | 7 |") == 1  # the seed is in params too: listed once
    txt = store.export(saved, tmp_path / "story.txt", "txt").read_text(encoding="utf-8")
    assert txt.startswith("Once upon a time there was a cat named *Tom*.\n\n---\n")
    assert "temperature: 0.8\n" in txt and "finish reason: eos\n" in txt and txt.count("seed: 7") == 1
    with pytest.raises(ValueError, match="unknown export format"):
        store.export(saved, tmp_path / "story.pdf", "pdf")


def test_exports_hold_no_terminal_control_sequences(store, tmp_path):
    saved = store.save(make_story(prompt=f"Hi {ESCAPES}", text=f"there\r\n{ESCAPES}\tend", model=ESCAPES))
    assert store.get(saved.id).prompt == f"Hi {ESCAPES}"  # the file keeps what was written
    for fmt in ("md", "txt"):
        out = store.export(saved, tmp_path / f"s.{fmt}", fmt).read_text(encoding="utf-8")
        assert not any(c in out for c in "\x1b\x07\x9b\r") and "\ufffd" in out and "\tend" in out


# --- the screen --------------------------------------------------------------------------------------------


class LibraryTestApp(App):
    """A host for LibraryScreen: it answers `LibraryScreen.Opened` as HeliumApp does, recording the story."""

    CSS_PATH = "../../helium_tui/helium.tcss"

    def __init__(self, store: StoryStore) -> None:
        super().__init__()
        self.store = store
        self.opened: list[Story] = []
        self.copied: list[str] = []
        self.notices: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("studio", id="studio")

    @on(LibraryScreen.Opened)
    def _opened(self, message: LibraryScreen.Opened) -> None:
        self.opened.append(message.story)
        self.pop_screen()

    def copy_to_clipboard(self, text: str) -> None:
        self.copied.append(text)
        super().copy_to_clipboard(text)

    def notify(self, message: str, **kwargs) -> None:
        self.notices.append(message)
        super().notify(message, **kwargs)


async def wait_for(pilot, condition, what: str, limit_s: float = WAIT_S) -> None:
    """Let the app run until condition() holds (bounded so CI cannot hang)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


async def open_library(app: LibraryTestApp, pilot) -> LibraryScreen:
    await app.push_screen(LibraryScreen(app.store))
    await wait_for(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library")
    await pilot.pause()
    return app.screen


def cells(screen: LibraryScreen, row: int) -> list[str]:
    return [str(cell) for cell in screen.query_one("#stories", DataTable).get_row_at(row)]


def preview(screen: LibraryScreen) -> str:
    return str(screen.query_one("#preview", Static).render())


async def test_screen_lists_previews_and_reopens(store):
    old = store.save(make_story(text="the old story.", created="2024-01-01T10:00:00+00:00"))
    new = store.save(make_story(text="the new story.", created="2025-01-01T10:00:00+00:00"))
    app = LibraryTestApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_library(app, pilot)
        assert screen.query_one("#stories", DataTable).row_count == 2
        assert cells(screen, 0)[1:] == ["tiny", "9", "the new story."]  # the generated opening
        assert "Once upon a time the new story." in preview(screen)
        await pilot.press("down")
        assert "the old story." in preview(screen)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.opened, "the story to open")
        assert app.opened == [old] and not isinstance(app.screen, LibraryScreen)
        assert new.id != old.id


@pytest.mark.parametrize("width", [80, 140])
async def test_the_story_column_tells_stories_with_one_prompt_apart(store, width):
    endings = ["a dragon who loved to bake bread for all", "a dragon who loved to sing at night"]
    for i, ending in enumerate(endings):
        store.save(make_story(prompt="Once upon a time there was ", text=ending, created=f"2026-01-0{i + 1}"))
    app = LibraryTestApp(store)
    async with app.run_test(size=(width, 24)) as pilot:
        screen = await open_library(app, pilot)
        stories = [cells(screen, row)[3] for row in (0, 1)]
        assert stories == list(reversed(endings))  # whole: the column is wide enough for both
        column = screen.query_one("#stories", DataTable).columns
        assert min(c.width for k, c in column.items() if k.value == "story") >= 40


async def test_screen_exports_copies_and_deletes(store, tmp_path):
    saved = store.save(make_story())
    app = LibraryTestApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_library(app, pilot)
        for key, fmt in (("m", "md"), ("t", "txt")):
            await pilot.press(key)
            await wait_for(pilot, lambda: isinstance(app.screen, AskDialog), "the export dialog")
            dialog = app.screen
            assert dialog.query_one(Input).value == f"~/helium-stories/{saved.id}.{fmt}"
            dialog.query_one(Input).value = str(tmp_path / f"export.{fmt}")
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.screen is screen, "the dialog to close")
        assert (tmp_path / "export.md").read_text(encoding="utf-8") == store.as_markdown(saved)
        assert (tmp_path / "export.txt").read_text(encoding="utf-8") == store.as_text(saved)

        await pilot.press("c")
        assert app.copied == ["Once upon a time there was a cat named *Tom*."]

        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("n")  # no: nothing happens
        await wait_for(pilot, lambda: app.screen is screen, "the dialog to close")
        assert store.root.joinpath(f"{saved.id}.json").exists()
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: not store.root.joinpath(f"{saved.id}.json").exists(), "the delete")
        assert screen.query_one("#stories", DataTable).row_count == 0
        assert screen.check_action("delete", ()) is None  # nothing selected: dimmed
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, LibraryScreen), "the studio")


async def test_screen_warns_about_a_corrupt_file_and_leaves_it(store):
    saved = store.save(make_story())
    bad = store.root / "20200101-000000-dead.json"
    bad.write_bytes(b"\xff\xfe not json")
    app = LibraryTestApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_library(app, pilot)
        assert screen.query_one("#stories", DataTable).row_count == 1
        assert any("20200101-000000-dead.json" in m for m in app.notices)
    assert bad.read_bytes() == b"\xff\xfe not json"
    assert store.get(saved.id) == saved


async def test_markup_in_stories_and_file_names_is_shown_as_text(store):
    write(store, '[a="]bad.json', "not json")  # its warning names it
    write(store, "[link=a:b].json", json.dumps({"prompt": "[/b] [bold", "text": "[/] ok [red]x", "model": "[/i]"}))
    app = LibraryTestApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_library(app, pilot)
        assert cells(screen, 0)[1:] == ["[/i]", "0", "[/] ok [red]x"]
        assert "[/b] [bold[/] ok [red]x" in preview(screen)
        assert any('[a="]bad.json' in m for m in app.notices)
        await pilot.press("d")  # the question quotes the story
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: not (store.root / "[link=a:b].json").exists(), "the delete")
        assert any("Deleted “[/b] [bold[/] ok [red]x”" in m for m in app.notices)


async def test_escape_sequences_never_reach_the_screen(store):
    store.save(make_story(prompt=f"Hi {ESCAPES} ", text=f"there {ESCAPES} end", model=f"m{ESCAPES}"))
    write(store, f"x{ESCAPES}.json", "not json")
    app = LibraryTestApp(store)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await open_library(app, pilot)
        await pilot.press("c")
        shown = [*cells(screen, 0), preview(screen), *app.notices, *app.copied]
        assert not any(c in text for text in shown for c in "\x1b\x07\x9b"), shown
        assert "there" in cells(screen, 0)[3] and "\ufffd" in preview(screen)


async def test_a_huge_story_opens_capped_with_a_notice(store):
    saved = store.save(make_story(text="x" * 100))
    path = store.root / f"{saved.id}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["text"] = "word " * 1_000_000  # 5 MB: hand-edited, more than a story may hold
    path.write_text(json.dumps(data), encoding="utf-8")
    app = LibraryTestApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_library(app, pilot)
        assert "enter opens the whole story, 5.0 MB" in preview(screen)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.opened, "the story to open")
        (opened,) = app.opened
        assert len(opened.full_text) == MAX_STORY_CHARS and opened.text.startswith("word word")
        assert any("the studio shows the first 1,000,000" in m for m in app.notices)


async def test_a_story_deleted_behind_the_screen_is_reported(store):
    saved = store.save(make_story())
    app = LibraryTestApp(store)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_library(app, pilot)
        store.delete(saved.id)
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("is gone" in m for m in app.notices), "the notice")
        assert app.opened == [] and screen.query_one("#stories", DataTable).row_count == 0


@pytest.mark.slow
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
        await wait_for(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library")
        assert app.screen.stories == [saved]
        await pilot.press("enter")
        story = app.studio.story
        await wait_for(pilot, lambda: app.screen is app.studio and story.text == saved.text, "the story")
        assert (story.prompt, story.text) == (saved.prompt, saved.text)


@pytest.mark.slow
async def test_a_story_file_named_with_escapes_never_reaches_the_terminal(store, helium_home, tiny_bundle):
    name = "\x1b]0;TITLE\x07[b]"  # the file's name retitles a terminal that prints it
    write(store, f"{name}.json", json.dumps(make_story(text="a story from a hostile name.").to_dict()))
    app = HeliumApp(model=str(tiny_bundle), dtype="float32", stories_dir=store.root)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.session is not None, "the model to load")
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library")
        assert app.screen.selected is not None and app.screen.selected.id == name  # listed
        assert_no_control_characters(app)
        for key, fmt in (("m", "md"), ("t", "txt")):
            await pilot.press(key)
            await wait_for(pilot, lambda: isinstance(app.screen, AskDialog), "the export dialog")
            await pilot.pause()
            assert_no_control_characters(app)
            assert app.screen.query_one(Input).value.endswith(f"\ufffd]0;TITLE\ufffd[b].{fmt}")
            await pilot.press("end", "ctrl+v")  # nothing typed or pasted may bring one back either
            app.screen.query_one(Input).insert_text_at_cursor("\x1b]0;PASTED\x07")
            await pilot.pause()
            assert_no_control_characters(app)
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, LibraryScreen), "the library again")
        await pilot.press("d")  # the confirmation quotes the story, the notice too
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        assert_no_control_characters(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: not any(store.root.iterdir()), "the delete")
        assert_no_control_characters(app)
