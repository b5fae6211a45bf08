"""The studio app's guards: a quit key is obeyed ahead of queued input, and no control character is drawn.

`GuardedApp` is HeliumApp's base. Textual handles input in arrival order, so a backlog of keys (a flood, a slow
edit) would hold up ctrl+q; here the quit key cancels every input event not yet handled, then exits. Every
notification and title passes through `helium_tui.safe_text`, and a line filter drops any control character
left in a rendered line (a backstop: widgets are given safe text first).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Coroutine
from typing import Any

from rich.segment import Segment
from textual import events
from textual.app import App
from textual.color import Color
from textual.filter import LineFilter
from textual.message import Message
from textual.notifications import SeverityLevel

from helium_tui.safe_text import UNSAFE, terminal_safe

QUIT_KEYS = frozenset({"ctrl+q"})  # acted on when they arrive, before any queued input
INPUT_EVENTS = (events.InputEvent, events.Paste, events.Resize)  # what the terminal sends (keys, mouse, ...)
MAX_TRACKED = 20_000  # input events remembered so a quit can cancel those still queued


class ControlFilter(LineFilter):
    """Drop control characters (ESC, BEL, C1, ...) from rendered text: a line can never emit an escape sequence.

    They are dropped, not replaced, so every line keeps the width it was laid out with (they have none).
    """

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        if not any(UNSAFE.search(s.text) for s in segments if not s.control):
            return segments  # the common case: one scan, no copy
        return [s if s.control else Segment(UNSAFE.sub("", s.text), s.style) for s in segments]


class GuardedApp(App[Any]):
    """An App whose quit keys pre-empt queued input and whose text never reaches the terminal as control codes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.quitting = False  # a quit key arrived: input still queued is dropped (set from any thread)
        self._pending_input: deque[Message] = deque(maxlen=MAX_TRACKED)  # arrived, maybe not handled yet
        self._input_lock = threading.Lock()  # guards quitting and _pending_input
        self._control_filter = ControlFilter()

    def _post_message(self, message: Message) -> Coroutine[Any, Any, bool]:
        """The driver's hand-off, called in its input thread: the one place a key is seen before the event loop.

        Textual's widgets drain their queues without yielding, so a backlog of slow keys can keep the loop from
        even receiving ctrl+q; here it cancels the queued input at once, and the loop then only has to exit.
        """
        if isinstance(message, events.Key) and message.key in QUIT_KEYS and not message.is_forwarded:
            self.cancel_input()
        return super()._post_message(message)

    def post_message(self, message: Message) -> bool:
        """Take input from the terminal; a quit key exits now, ahead of the input queued before it."""
        if isinstance(message, INPUT_EVENTS) and not message.is_forwarded:
            if isinstance(message, events.Key) and message.key in QUIT_KEYS:
                self.cancel_input()
                self.exit()
                return True
            with self._input_lock:
                if self.quitting:
                    return False
                self._pending_input.append(message)
        return super().post_message(message)

    def cancel_input(self) -> None:
        """From now on no input is handled (any thread): every input event not handled yet becomes a no-op."""
        with self._input_lock:
            self.quitting = True
            for event in self._pending_input:
                event.prevent_default()  # no handler runs for it, in the app or in any widget queue it waits in
                event.stop()  # and it bubbles no further
            self._pending_input.clear()

    async def on_event(self, event: events.Event) -> None:
        if self.quitting and isinstance(event, INPUT_EVENTS):
            return  # bindings are checked here before handlers: a queued ctrl+g must not start a story now
        await super().on_event(event)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification of the app (and of its screens and widgets) is shown terminal-safe."""
        super().notify(
            terminal_safe(str(message)), title=terminal_safe(str(title)), severity=severity, timeout=timeout,
            markup=markup,
        )  # fmt: skip

    def validate_title(self, title: Any) -> str:
        return terminal_safe(super().validate_title(title))

    def validate_sub_title(self, sub_title: Any) -> str:
        return terminal_safe(super().validate_sub_title(sub_title))

    def get_line_filters(self) -> list[LineFilter]:
        """Textual's filters (colours, NO_COLOR), then the control-character backstop."""
        return [*super().get_line_filters(), self._control_filter]
