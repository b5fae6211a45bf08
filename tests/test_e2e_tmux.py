"""End to end in a real terminal: `helium --model BUNDLE` inside tmux, type a prompt, watch the story stream,
reopen a saved story full of escape sequences (the terminal's title and screen stay untouched), quit mid-story;
quit under a flood of keys; export a story whose file name is an escape sequence (the title stays).

Drives the installed console script through a private tmux server (its own socket); every wait is bounded.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

WIDTH, HEIGHT = 100, 30  # terminal size
START_S = 90.0  # most seconds for the app to import torch and load the model on a loaded CI box
STORY_S = 90.0  # most seconds for a story to finish
EXIT_S = 30.0  # most seconds for the app to quit
QUIT_MID_STORY_S = 10.0  # most seconds to quit mid-way through a 2048-token story (it used to wait for the end;
# tests/tui/test_studio.py checks the exact promise against a story stuck for 120 s)
QUIT_FLOOD_S = 10.0  # most seconds to quit with hundreds of keys queued and a long prompt (it took 20-90 s)


class Tmux:
    """A private tmux server (own socket) with one session running a command."""

    def __init__(self, socket: str) -> None:
        self.socket = socket  # the -L socket name, unique per test

    def __call__(self, *args: str) -> str:
        """Run a tmux command against this server and return its stdout."""
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20, check=False
        )
        return done.stdout

    def screen(self) -> str:
        """The visible pane as text."""
        return self("capture-pane", "-p", "-t", "helium")

    def wait(self, condition: Callable[[str], bool], what: str, limit_s: float) -> str:
        """Poll the pane until condition(text) holds; fail with the last screen after limit_s."""
        deadline = time.monotonic() + limit_s
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if condition(text):
                return text
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}; last screen:\n{text}")


def helium_command() -> list[str]:
    """The installed `helium` script beside this Python, else `python -m helium_tui.cli`."""
    script = Path(sys.executable).with_name("helium")
    return [str(script)] if script.exists() else [sys.executable, "-m", "helium_tui.cli"]


def tokens_shown(screen: str) -> int:
    """The token count in the studio's status bar (`│ 12 tokens │`), 0 when absent."""
    found = re.search(r"(\d+) tokens", screen)
    return int(found.group(1)) if found else 0


@pytest.fixture
def tmux(tmp_path):
    server = Tmux(f"helium-test-{uuid.uuid4().hex[:8]}")
    yield server
    server("kill-server")  # ends only this test's private server


def evil_story(home: Path) -> None:
    """A saved story (the newest in the library) whose text retitles, clears and writes the clipboard, and
    whose settings tell a long greedy story."""
    from helium_tui.library import Story, StoryStore

    params = {"temperature": 0.0, "max_new_tokens": 2048, "repetition_penalty": 1.0, "stop_at_eos": False}
    text = " \x1b]0;PWNED\x07 was \x1b[2J here \x1b]52;c;aGk=\x1b\\ [bold]end"
    story = Story("Evil", text, params, "tiny-bundle", created="2099-01-01T00:00:00+00:00", tokens=5,
                  finish_reason="eos", id="20990101-000000-beef")  # fmt: skip
    StoryStore(home / "stories").save(story)


@pytest.mark.slow
def test_studio_streams_a_story_and_quits_cleanly(tmp_path, tiny_bundle, tmux):
    home = tmp_path / "home"
    exit_file = tmp_path / "exit.txt"
    app = shlex.join([*helium_command(), "--model", str(tiny_bundle), "--dtype", "float32"])
    script = f"HELIUM_HOME={shlex.quote(str(home))} {app}; echo EXIT=$? > {shlex.quote(str(exit_file))}"
    tmux("new-session", "-d", "-s", "helium", "-x", str(WIDTH), "-y", str(HEIGHT), "bash", "-c", script)

    tmux.wait(lambda s: "ready" in s and "tiny-bundle" in s, "the studio with the model loaded", START_S)
    tmux("send-keys", "-t", "helium", "End")
    tmux("send-keys", "-t", "helium", "-l", " there was a dog")
    tmux.wait(lambda s: "Once upon a time there was a dog" in s, "the typed prompt", 10)

    tmux("send-keys", "-t", "helium", "C-g")
    seen: list[int] = []  # token counts observed while the story streams

    def grown_and_done(screen: str) -> bool:
        seen.append(tokens_shown(screen))
        return "Story" in screen and tokens_shown(screen) > 0 and "generating" not in screen

    final = tmux.wait(grown_and_done, "the story to stream and finish", STORY_S)
    assert seen == sorted(seen), f"token count went backwards: {seen}"  # the story only ever grows
    assert "ready" in final and "Once upon a time there was a dog" in final

    stories = sorted((home / "stories").glob("*.json"))
    assert len(stories) == 1, "the finished story was saved in HELIUM_HOME/stories"
    saved = json.loads(stories[0].read_text(encoding="utf-8"))
    assert saved["prompt"] == "Once upon a time there was a dog" and saved["tokens"] == tokens_shown(final)

    # a saved story full of escape sequences, reopened from the library: shown as text, never obeyed
    title = tmux("display-message", "-p", "-t", "helium", "#{pane_title}")
    evil_story(home)
    tmux("send-keys", "-t", "helium", "C-l")
    tmux.wait(lambda s: "Evil" in s, "the library with the evil story", 30)
    tmux("send-keys", "-t", "helium", "Enter")
    in_studio = lambda s: "PWNED" in s and "Sampling" in s and "Story library" not in s  # noqa: E731 (the library previews it too)
    shown = tmux.wait(in_studio, "the evil story in the studio", 30)
    assert "[bold]end" in shown and "Once upon a time there was a dog" not in shown  # text, not markup
    assert tmux("display-message", "-p", "-t", "helium", "#{pane_title}") == title, "the title was not changed"

    # quit while a 2048-token story streams (its settings came with the reopened story)
    tmux("send-keys", "-t", "helium", "C-g")
    tmux.wait(lambda s: "generating" in s and tokens_shown(s) > 0, "a long story to stream", STORY_S)
    tmux("send-keys", "-t", "helium", "C-q")
    asked = time.monotonic()
    deadline = asked + EXIT_S
    while not exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exit_file.exists(), f"helium did not quit; last screen:\n{tmux.screen()}"
    took = time.monotonic() - asked
    assert took < QUIT_MID_STORY_S, f"quitting took {took:.1f} s: it waited for the story"
    assert exit_file.read_text().strip() == "EXIT=0"


def start_studio(tmux: Tmux, tmp_path: Path, tiny_bundle: Path, home: Path) -> Path:
    """`helium --model BUNDLE` in the tmux session; returns the file its exit status is written to."""
    exit_file = tmp_path / "exit.txt"
    app = shlex.join([*helium_command(), "--model", str(tiny_bundle), "--dtype", "float32"])
    script = f"HELIUM_HOME={shlex.quote(str(home))} {app}; echo EXIT=$? > {shlex.quote(str(exit_file))}"
    script += "; sleep 600"  # the pane outlives the app: its title can be read after quitting
    tmux("new-session", "-d", "-s", "helium", "-x", str(WIDTH), "-y", str(HEIGHT), "bash", "-c", script)
    tmux.wait(lambda s: "ready" in s and "tiny-bundle" in s, "the studio with the model loaded", START_S)
    return exit_file


def seconds_to_exit(exit_file: Path, tmux: Tmux) -> float:
    """Wait (at most EXIT_S) for the app to end after a quit key; how long it took."""
    asked = time.monotonic()
    while not exit_file.exists() and time.monotonic() < asked + EXIT_S:
        time.sleep(0.05)
    assert exit_file.exists(), f"helium did not quit; last screen:\n{tmux.screen()}"
    assert exit_file.read_text().strip() == "EXIT=0"
    return time.monotonic() - asked


@pytest.mark.slow
def test_ctrl_q_quits_at_once_under_a_flood_of_keys(tmp_path, tiny_bundle, tmux):
    exit_file = start_studio(tmux, tmp_path, tiny_bundle, tmp_path / "home")
    paste = tmp_path / "paste.txt"
    paste.write_text("abc defg " * 11_112)  # 100,008 characters on one line
    tmux("load-buffer", str(paste))
    tmux("paste-buffer", "-p", "-t", "helium")  # a bracketed paste, as terminals send it
    tmux.wait(lambda s: "at most" in s, "the notice that the paste was cut", 30)
    tmux("send-keys", "-t", "helium", "C-g")
    tmux("send-keys", "-t", "helium", "-l", "x" * 400)  # a few hundred keys at once
    tmux("resize-window", "-t", "helium", "-x", str(WIDTH + 20), "-y", str(HEIGHT + 6))
    tmux("send-keys", "-t", "helium", *["F3", "+", "+", "-", "m"] * 30)
    tmux("send-keys", "-t", "helium", "C-q")
    took = seconds_to_exit(exit_file, tmux)
    assert took < QUIT_FLOOD_S, f"quitting took {took:.1f} s: it waited for the keys queued before ctrl+q"


@pytest.mark.slow
def test_exporting_a_story_whose_file_name_holds_escapes_keeps_the_title(tmp_path, tiny_bundle, tmux):
    home = tmp_path / "home"
    stories = home / "stories"
    stories.mkdir(parents=True)
    story = {"prompt": "Once", "text": " upon a hostile name.", "model": "tiny-bundle", "tokens": 4}
    (stories / "\x1b]0;RETITLED\x07[b].json").write_text(json.dumps(story), encoding="utf-8")
    exit_file = start_studio(tmux, tmp_path, tiny_bundle, home)
    title = tmux("display-message", "-p", "-t", "helium", "#{pane_title}")
    tmux("send-keys", "-t", "helium", "C-l")
    tmux.wait(lambda s: "upon a hostile name" in s, "the library with the story", 30)
    for key in ("m", "t"):
        tmux("send-keys", "-t", "helium", key)
        tmux.wait(lambda s: "Export as" in s and "]0;RETITLED" in s, "the export dialog with the name", 30)
        assert "RETITLED" not in tmux("display-message", "-p", "-t", "helium", "#{pane_title}")
        tmux("send-keys", "-t", "helium", "Escape")
        tmux.wait(lambda s: "Export as" not in s, "the dialog to close", 30)
    tmux("send-keys", "-t", "helium", "C-q")
    seconds_to_exit(exit_file, tmux)
    assert tmux("display-message", "-p", "-t", "helium", "#{pane_title}") == title, "the title changed"
