"""The "Look inside" view (f4 in the studio) end to end: what it shows is what engine.inspect gives for the story's
tokens (attention argmax, the logit lens, a knock-out's probability), it follows a story being told, exports a
safe HTML page, fits 80x24 and uses a larger terminal. A real tiny model on CPU; every wait has a deadline.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from textual.widgets import Static

from engine.inspect import logit_lens, run_with_cache
from helium_tui.app_state import ShowStory
from helium_tui.look_data import story_ids
from helium_tui.safe_text import terminal_safe
from helium_tui.screens.dialogs import AskDialog
from helium_tui.screens.help import HelpScreen
from helium_tui.screens.look_inside import LookInsideScreen
from helium_tui.widgets.attention_map import AttentionMap
from helium_tui.widgets.inspector import visible
from helium_tui.widgets.knockout_panel import KnockoutPanel
from helium_tui.widgets.lens_table import LensTable
from helium_tui.widgets.look_story import LookStory
from tests.tui.conftest import (
    CONTROL,
    HeldGenerator,
    assert_no_control_characters,
    greedy,
    loaded,
    make_app,
    tell,
    until,
)

SIZE = (100, 30)


async def open_look(pilot, key: str = "f4") -> LookInsideScreen:
    """Press f4 in the studio and wait for the first look to be drawn."""
    app = pilot.app
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, LookInsideScreen), "the look-inside screen")
    screen = app.screen
    await until(pilot, lambda: screen.look is not None and not screen.running, "the first look")
    await pilot.pause()
    return screen


async def told_and_opened(pilot, tokens: int = 24) -> LookInsideScreen:
    """A greedy story of `tokens` tokens told in the studio, then the view opened on it."""
    await loaded(pilot.app, pilot)
    greedy(pilot.app.studio, tokens)
    await tell(pilot)
    return await open_look(pilot)


def rendered(widget) -> str:
    """What a widget draws (its render() at its width), as plain text."""
    console = widget.app.console
    options = console.options.update_width(widget.content_size.width or 80)
    renderable = widget.content if isinstance(widget, Static) else widget.render()
    lines = console.render_lines(renderable, options, pad=False)
    return "\n".join("".join(segment.text for segment in line) for line in lines)


def studio_ids(app) -> list[int]:
    """The ids the studio's story was told from: the prompt as the model read it, then the sampled ids."""
    story, tok = app.studio.story, app.session.bundle.tokenizer
    return tok.encode(story.prompt) + [p.token.id for p in story.pieces if p.token is not None]


async def test_opens_on_the_told_story_and_shows_the_apis_attention_and_lens(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        screen = await told_and_opened(pilot)
        model = app.session.bundle.model
        ids = studio_ids(app)
        assert screen.look.ids == ids and screen.selected == len(ids)  # the next-token slot first
        cache = run_with_cache(model, ids)
        lens = logit_lens(model, cache)
        await pilot.press("left", "h", "left")  # three tokens back: the 3rd last token is selected
        for keys, layer, head in (
            ((), 0, 0),
            (("right_square_bracket",), 1, 0),
            (("full_stop", "full_stop"), 1, 2),
        ):
            await pilot.press(*keys)
            assert (screen.attn_layer, screen.attn_head, screen.selected) == (layer, head, len(ids) - 3)
            query = len(ids) - 4  # the selected token was written from the position before it
            row = cache.attention[layer, head, query, : query + 1]
            top = int(row.argmax())
            caption = rendered(screen.query_one(AttentionMap)).splitlines()[0]
            first = caption.removeprefix("attends to: ").split()[0]
            assert first == visible(app.session.bundle.tokenizer.token_text(ids[top]))[:10]
            assert f"{float(row[top]):.2f}" in caption
        table = rendered(screen.query_one(LensTable))
        tok = app.session.bundle.tokenizer
        for layer in range(model.config.n_layer + 1):
            top1 = int(lens.ids[layer, query, 0])
            assert screen.reading.lens[layer][1] == top1
            assert abs(screen.reading.lens[layer][2] - float(lens.probs[layer, query, 0])) < 1e-5
            assert visible(tok.token_text(top1))[:8] in table
        written = lens.prob_of(model.config.n_layer, query, ids[len(ids) - 3])
        assert f"{written:.2f}" in table
        await pilot.press("escape")
        assert app.screen is app.studio


@pytest.mark.slow
async def test_a_knock_out_shows_the_probability_the_api_gives_with_it(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        screen = await told_and_opened(pilot)
        model, ids = app.session.bundle.model, screen.look.ids
        base = run_with_cache(model, ids).logits[-1].softmax(-1)
        target = int(base.argmax())  # the next-token slot: the model's own next token
        heads = [
            (layer, head) for layer in range(model.config.n_layer) for head in range(model.config.n_head)
        ]
        after = {
            h: float(run_with_cache(model, ids, ablate=[h]).logits[-1].softmax(-1)[target]) for h in heads
        }
        layer, head = max(
            heads, key=lambda h: abs(after[h] - float(base[target]))
        )  # the head that matters most
        await pilot.press(*["right_square_bracket"] * layer, *["full_stop"] * head, "k")
        await until(
            pilot, lambda: screen.look.ablated == ((layer, head),) and not screen.running, "the knock-out"
        )
        await pilot.pause()
        shown = rendered(screen.query_one(KnockoutPanel))
        expected = f"{float(base[target]):.3f} → {after[(layer, head)]:.3f}"
        assert expected in shown, shown
        assert f"off: L{layer}.H{head}" in shown
        assert abs(float(screen.look.probs(len(ids) - 1)[target]) - after[(layer, head)]) < 1e-6
        await until(pilot, lambda: ((layer, head),) in screen.look.continuation, "the retold continuation")
        await pilot.press("k")  # on again: back to the model's own numbers
        await until(pilot, lambda: screen.look.ablated == () and not screen.running, "the head back on")
        assert abs(float(screen.look.probs(len(ids) - 1)[target]) - float(base[target])) < 1e-6


async def test_the_view_follows_a_story_being_told(tiny_bundle, monkeypatch):
    monkeypatch.setattr("helium_tui.screens.look_inside.WATCH_S", 0.05)
    monkeypatch.setattr("helium_tui.streaming.FRAME_S", 0.0)  # every delta reaches the pane before the hold
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        studio = app.studio
        greedy(studio, 30)
        held = app.session.generator = HeldGenerator(app.session.generator, hold_at=5)
        await pilot.press("ctrl+g")
        await until(pilot, lambda: held.holding.is_set() and len(studio.story.pieces) == 5, "5 tokens told")
        screen = await open_look(pilot)
        assert screen.look.ids == studio_ids(app)
        held.release.set()
        await until(pilot, lambda: not studio.generating, "the story to end")
        await until(
            pilot,
            lambda: screen.look.ids == studio_ids(app) and not screen.running,
            "the look at the whole story",
        )
        assert screen.selected == screen.look.length  # the next-token slot stayed selected as the story grew
        assert not screen.look.continuation  # continuations are told for knock-outs only


@pytest.mark.slow
async def test_before_any_story_it_looks_at_the_prompt_and_follows_a_model_switch(
    tiny_bundle, installed_second
):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        app.studio.prompt_text = ""  # nothing written: the start token alone, and what the model would write
        screen = await open_look(pilot)
        tok = app.session.bundle.tokenizer
        assert screen.look.ids == [tok.bos_id] and screen.selected == 1
        await pilot.press("full_stop", "full_stop", "full_stop", "k")  # head 3 exists in this model only
        await until(pilot, lambda: screen.look.ablated == ((0, 3),) and not screen.running, "the knock-out")
        app.load_model(str(installed_second))  # ctrl+o works from any screen
        await until(pilot, lambda: app.session.name == "tiny-two", "tiny-two to load")
        await until(
            pilot,
            lambda: (
                screen.look is not None
                and screen.look.model is app.session.bundle.model
                and not screen.running
            ),
            "a look with tiny-two",
        )
        assert screen.look.n_head == 2 and screen.look.ablated == () and screen.attn_head == 1
        await pilot.press("right", "left", "a", "left_square_bracket")
        assert_no_control_characters(app)


@pytest.mark.slow
async def test_export_writes_a_safe_html_page_and_a_screenshot(tiny_bundle, tmp_path):
    stories = tmp_path / "stories"
    app = make_app(tiny_bundle, stories_dir=stories)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(app, pilot)
        prompt = "Tom\x1b]0;owned\x07 had a \x9b31mball"  # control characters a story file could hold
        app.studio.post_message(ShowStory(prompt, " and a\x00 cat.", {}, 7))
        await pilot.pause()
        screen = await open_look(pilot)
        assert_no_control_characters(app)
        await pilot.press("left", "e")
        await until(pilot, lambda: isinstance(app.screen, AskDialog), "the export dialog")
        default = Path(app.screen.query_one("#answer").value)
        assert default.parent == stories and default.suffix == ".html"
        await pilot.press("enter")
        await until(pilot, lambda: screen.last_export is not None, "the export")
        page = default.read_text(encoding="utf-8")
        assert not CONTROL.search(page), "control characters in the page"
        assert "<script" not in page and "http://" not in page.replace(
            'xmlns="http://www.w3.org/2000/svg"', ""
        )
        check_balanced(page)
        for piece in screen.look.pieces:
            if terminal_safe(piece).strip():
                assert escape(piece) in page, piece
        svg = default.with_suffix(".svg").read_text(encoding="utf-8")
        assert svg.lstrip().startswith("<svg") and "Look" in svg
        assert app.state.store.list()[1] == []  # the library still reads (only its .json files)
        screen.last_export = None
        await pilot.press("a", "e")  # every head's map, to a path typed without .html
        await until(pilot, lambda: isinstance(app.screen, AskDialog), "the export dialog again")
        app.screen.query_one("#answer").value = str(tmp_path / "grid")
        await pilot.press("enter")
        await until(pilot, lambda: screen.last_export == tmp_path / "grid.html", "the grid's export")
        grid = (tmp_path / "grid.html").read_text(encoding="utf-8")
        check_balanced(grid)
        assert grid.count("<svg") == screen.look.n_head and (tmp_path / "grid.svg").is_file()


def escape(text: str) -> str:
    import html

    return html.escape(terminal_safe(text), quote=True)


VOID = {"meta", "br", "rect", "img", "hr", "input", "link"}


def check_balanced(page: str) -> None:
    """Every element of page is closed in order (void elements and self-closed SVG shapes aside)."""

    class Checker(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []

        def handle_starttag(self, tag, attrs) -> None:
            if tag not in VOID:
                self.stack.append(tag)

        def handle_startendtag(self, tag, attrs) -> None:
            pass

        def handle_endtag(self, tag) -> None:
            assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
            self.stack.pop()

    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [], checker.stack
    assert page.startswith("<!DOCTYPE html>")


async def test_fits_80x24_and_uses_a_larger_terminal(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await told_and_opened(pilot, tokens=40)
        text = app.export_screenshot().replace("&#160;", " ")
        for words in (
            "Look inside",
            "Story",
            "Attention",
            "Logit lens",
            "Back",
            "Knock out",
            "Export",
            "Help",
        ):
            assert words in text, words
        small_map = screen.query_one(AttentionMap).size
        assert not screen.has_class("-wide")
        assert screen.query_one("#look-attr-pane").display is False  # one side pane at a time
        await pilot.press("tab", "tab", "tab")  # story -> map -> lens -> attribution
        assert screen.query_one("#look-attr-pane").display is True and screen.focused.id == "look-attr-pane"
        await pilot.press("a")  # every head as a grid
        await pilot.pause()
        assert rendered(screen.query_one(AttentionMap)).count("h3") == 1
        await pilot.resize_terminal(160, 48)
        await pilot.pause()
        await pilot.pause()
        assert screen.has_class("-wide")
        for pane in ("#look-lens-pane", "#look-attr-pane", "#look-knock-pane"):
            assert screen.query_one(pane).region.width > 30 and screen.query_one(pane).region.height > 10
        big_map = screen.query_one(AttentionMap).size
        assert big_map.width > small_map.width and big_map.height > small_map.height
        assert screen.query_one(LookStory).region.width > 60
        assert_no_control_characters(app)


async def test_the_studio_lists_it_in_help_and_the_palette(tiny_bundle):
    """f4 is in the footer ("Look", all 80 columns hold), f1's key list and the palette (its help says more)."""
    app = make_app(tiny_bundle)
    async with app.run_test(size=(80, 24)) as pilot:
        await loaded(app, pilot)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        assert "Look inside" in commands["Look"].help and "(f4)" in commands["Look"].help
        footer = app.export_screenshot().replace("&#160;", " ")
        assert ">f4<" in footer and "Look" in footer
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        keys = rendered(app.screen.query_one("#help-keys"))
        assert re.search(r"f4\s+Look", keys)


async def test_help_of_the_view_lists_its_keys(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await told_and_opened(pilot, tokens=8)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        keys = rendered(app.screen.query_one("#help-keys"))
        for words in (
            "Switch the selected head off",
            "Save the view as an HTML page",
            "Every head of the layer",
        ):
            assert words in keys


def test_the_continuation_without_knock_outs_is_the_greedy_story(tiny_bundle):
    """The knock-out pane's continuation (a full forward pass a token) tells what the generator tells greedily."""
    from engine.generation.sampling import SamplingParams
    from engine.generation.session import open_session
    from helium_tui.look_data import continuation
    from tests.stories import told

    session = open_session(str(tiny_bundle), "cpu", "float32")
    model, tok = session.bundle.model, session.bundle.tokenizer
    prompt = "Tom had a ball"
    direct = told(session.generator, prompt, SamplingParams(max_new_tokens=12, temperature=0))
    assert continuation(model, tok, tok.encode(prompt), ()) == direct.text


def test_story_ids_use_the_sampled_tokens(tiny_bundle):
    from engine.bundles.bundle import load_bundle

    tok = load_bundle(tiny_bundle).tokenizer
    assert story_ids(tok, "Tom", " ran", [5, 6]) == tok.encode("Tom") + [5, 6]
    assert story_ids(tok, "Tom", " ran", None) == tok.encode("Tom ran")


@pytest.mark.parametrize("size", [(100, 30)])
@pytest.mark.slow
def test_snapshot(snap_compare, tiny_bundle, size):
    from tests.tui.test_snapshots import quiet, settle

    async def looked(pilot) -> None:
        await settle(pilot)
        app = pilot.app
        greedy(app.studio, 40)
        await tell(pilot)
        screen = await open_look(pilot)
        await pilot.press("left", "left", "left", "k")
        await until(pilot, lambda: screen.look.ablated and not screen.running, "the knock-out")
        await until(
            pilot,
            lambda: screen.look.ablated in screen.look.continuation and not screen.telling,
            "both continuations",
        )
        screen.look.seconds = 0.042  # the one number that depends on the machine
        screen.redraw()
        await quiet(pilot)

    assert snap_compare(make_app(tiny_bundle), terminal_size=size, run_before=looked)
