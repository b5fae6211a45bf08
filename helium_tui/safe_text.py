"""Text that is safe to show in a terminal: story text and model output never reach it as control sequences.

`terminal_safe` keeps newlines and tabs and replaces every other control character (C0, DEL, C1, so ESC and
CSI/OSC introducers) and lone surrogates with a visible U+FFFD. Torch-free and Rich-free: the CLI uses it too.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"  # what an unsafe character becomes (shown as �)

# C0 controls except \t (0x09) and \n (0x0a), DEL, C1 controls (0x80-0x9f, e.g. CSI 0x9b, OSC 0x9d),
# and lone surrogates (from JSON "\ud800" escapes: a terminal cannot encode them)
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def terminal_safe(text: str) -> str:
    """text with \\r\\n as \\n and every other control character replaced by U+FFFD (\\n and \\t are kept)."""
    if not UNSAFE.search(text):
        return text  # the common case costs one scan
    return UNSAFE.sub(REPLACEMENT, text.replace("\r\n", "\n"))


def is_terminal_safe(text: str) -> bool:
    """True when text holds no character that terminal_safe would replace."""
    return UNSAFE.search(text) is None
