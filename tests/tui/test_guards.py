"""The studio under input floods and hostile text: ctrl+q ahead of a backlog of keys, the prompt's cap, and no
control character drawn, whatever reaches a notification, a title, an input or a label.

Keys are sent the way the terminal's input thread sends them (`driver.send_message` from another thread), so a
backlog builds up exactly as it does in a real terminal. Every wait has a deadline; no test asserts a timing.
"""

from __future__ import annotations

import asyncio
import threading
import time

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.widgets import Static

from helium_tui.guarded_app import GuardedApp
from helium_tui.widgets.prompt_area import MAX_PROMPT_CHARS, PromptArea
from helium_tui.widgets.safe_input import SafeInput
from tests.tui.conftest import (
    DEADLINE_S,
    assert_no_control_characters,
    loaded,
    make_app,
    terminal_output,
    until,
)

SIZE = (100, 32)
BACKLOG = 2000  # keys queued ahead of ctrl+q (the studio handles a few dozen while they arrive)
OSC = "\x1b]0;PWNED\x07"  # retitles a terminal


def notices(app) -> list[str]:
    return [f"{n.title} {n.message}" for n in app._notifications]


async def prompt_ready(app, pilot, text: str) -> PromptArea:
    await loaded(app, pilot)
    app.studio.prompt_text = text
    area = app.studio.query_one(PromptArea)
    area.focus()
    await pilot.pause()
    return area


async def test_ctrl_q_quits_ahead_of_a_backlog_of_keys_and_a_long_prompt(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        area = await prompt_ready(app, pilot, "word " * 1600)  # 8,000 characters on one line
        before = len(area.text)
        driver = app._driver

        def terminal() -> None:  # the input thread: keys come faster than the studio handles them
            for i in range(BACKLOG):
                driver.send_message(events.Key("x", "x"))
                if i % 100 == 99:
                    time.sleep(0.01)  # some keys reach the prompt's queue before ctrl+q arrives
            driver.send_message(events.Key("ctrl+q", None))

        threading.Thread(target=terminal, daemon=True).start()
        deadline = time.monotonic() + DEADLINE_S
        while app.is_running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not app.is_running, f"ctrl+q did not quit within {DEADLINE_S:.0f} s"
        typed = len(area.text) - before
    assert typed < BACKLOG // 2, f"ctrl+q waited for {typed} of the {BACKLOG} keys typed before it"


async def test_a_queued_key_does_nothing_once_ctrl_q_arrived(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        await prompt_ready(app, pilot, "Once upon a time")
        app.cancel_input()  # what ctrl+q does first, from the input thread
        await pilot.press("ctrl+g", "x")  # neither tells a story nor types
        assert app.studio.run is None and app.studio.prompt_text == "Once upon a time"
        assert app.quitting


async def test_a_paste_beyond_the_cap_is_cut_and_says_so(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        area = await prompt_ready(app, pilot, "Once upon a time ")
        app._driver.send_message(events.Paste("abc defg " * 11_112))  # 100,008 characters, as terminals paste
        await until(pilot, lambda: len(area.text) > 20, "the paste")
        assert len(area.text) == MAX_PROMPT_CHARS and area.text.startswith("Once upon a time abc defg")
        assert any(f"at most {MAX_PROMPT_CHARS:,} characters" in n for n in notices(app)), notices(app)
        await pilot.press("x", "y")  # a full prompt takes no more
        assert len(area.text) == MAX_PROMPT_CHARS
        await pilot.press("backspace", "z")
        assert len(area.text) == MAX_PROMPT_CHARS and area.text.endswith("z")

        # a whole prompt set at once (a reopened or continued story) keeps its end: what the model reads
        app.studio.prompt_text = "A" * 10 + "B" * MAX_PROMPT_CHARS
        assert app.studio.prompt_text == "B" * MAX_PROMPT_CHARS
        await pilot.pause()
        assert any("the first 10 characters were left out" in n for n in notices(app))


async def test_pasted_control_characters_become_plain_text(tiny_bundle):
    app = make_app(tiny_bundle)
    async with app.run_test(size=SIZE) as pilot:
        area = await prompt_ready(app, pilot, "")
        app._driver.send_message(events.Paste(f"one\r\ntwo\rthree {OSC}\x9b31m"))
        await until(pilot, lambda: "three" in area.text, "the paste")
        assert area.text == "one\ntwo\nthree \ufffd]0;PWNED\ufffd\ufffd31m"
        assert_no_control_characters(app)


class Plain(GuardedApp):
    """A bare GuardedApp showing one label (hostile text reaches it unsanitized, as a bug would)."""

    def compose(self) -> ComposeResult:
        yield Static(Text(f"label {OSC} end"), id="raw")
        yield SafeInput(f"path/{OSC}.md", placeholder=f"hint {OSC}", id="field")


async def test_the_app_never_draws_a_control_character_that_reached_a_widget():
    app = Plain()
    async with app.run_test(size=(60, 10)) as pilot:
        assert "label ]0;PWNED end" in terminal_output(app)  # drawn without its ESC and BEL
        app.title, app.sub_title = f"t {OSC}", f"s {OSC}"
        app.notify(f"note {OSC}", title=f"title {OSC}")
        field = app.query_one(SafeInput)
        field.value = f"set {OSC}"
        assert field.value == "set \ufffd]0;PWNED\ufffd"
        field.focus()
        app._driver.send_message(events.Paste(f"pasted {OSC}"))
        await pilot.pause()
        assert field.value.endswith("pasted \ufffd]0;PWNED\ufffd")
        assert app.title == "t \ufffd]0;PWNED\ufffd" and "note \ufffd]0;PWNED\ufffd" in notices(app)[0]
        app.query_one("#raw", Static).update("")  # the one widget given raw text on purpose
        await pilot.pause()
        assert_no_control_characters(app)
