"""helium_tui.safe_text: no control sequence survives, ordinary text (newlines, tabs, any script) is untouched."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from helium_tui.safe_text import REPLACEMENT, is_terminal_safe, terminal_safe

ATTACKS = [
    "\x1b]0;TITLE\x1b\\",  # retitle the terminal (OSC 0)
    "\x1b[2J",  # clear the screen (CSI)
    "\x1b]52;c;aGVsbG8=\x1b\\",  # write the clipboard (OSC 52)
    "\x9b2J",  # C1 CSI
    "\x9d0;t\x07",  # C1 OSC ended by BEL
]


def test_attacks_become_visible_placeholders():
    for attack in ATTACKS:
        safe = terminal_safe("before " + attack + " after")
        assert "\x1b" not in safe and "\x9b" not in safe and "\x9d" not in safe and "\x07" not in safe
        assert safe.startswith("before ") and safe.endswith(" after") and REPLACEMENT in safe
    assert terminal_safe("\x1b[2J") == REPLACEMENT + "[2J"  # the rest of the sequence stays, as plain text


def test_newlines_tabs_and_any_script_are_kept():
    text = "Once upon a time,\n\tthere was a cat. Ünïcödé 日本語 🐈 — «quoted»"
    assert terminal_safe(text) is text
    assert terminal_safe("a\r\nb\rc") == "a\nb" + REPLACEMENT + "c"  # CRLF is a newline; a lone CR could overwrite


def test_lone_surrogates_are_replaced():
    assert terminal_safe("a\ud800b") == f"a{REPLACEMENT}b"


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF) | st.characters()))
def test_no_control_character_survives(text):
    safe = terminal_safe(text)
    assert is_terminal_safe(safe)
    assert terminal_safe(safe) == safe  # idempotent
    for ch in safe:
        code = ord(ch)
        assert ch in "\n\t" or not (code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF)
    assert safe.count("\n") == text.count("\n") and safe.count("\t") == text.count("\t")


def test_torch_free():
    code = "import sys, helium_tui.safe_text; assert 'torch' not in sys.modules and 'rich' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
