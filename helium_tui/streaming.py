"""Background work of the studio: daemon threads, and a buffer that lets a fast model redraw once a frame.

Torch work (loading a model, telling stories) runs on daemon threads, not Textual thread workers: those run
in asyncio's default executor, which is joined when the app's loop closes, so a long prefill or a compiling
first step would hold up ctrl+q. Threads hand results to the UI with `post_message` (thread-safe, and a no-op
once the app has closed); `exit_now_if_busy` ends the process at quit instead of waiting for them.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

FRAME_S = 1 / 15  # redraw at most 15 times a second: at 30 the UI thread slows sampling ~20%
THREAD_PREFIX = "helium-"  # names of the daemon threads started here
WIND_DOWN_S = 0.5  # at quit, how long threads may take to notice their cancel flag


def start_daemon(name: str, target: Callable[[], None]) -> threading.Thread:
    """Run target on a new daemon thread called helium-<name>."""
    thread = threading.Thread(target=target, name=THREAD_PREFIX + name, daemon=True)
    thread.start()
    return thread


def busy_threads() -> list[threading.Thread]:
    """The daemon threads started by start_daemon that are still running."""
    return [
        t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.daemon and t.is_alive()
    ]


def exit_now_if_busy(code: int = 0) -> None:
    """After the app has quit: give busy threads WIND_DOWN_S to finish their token, then end the process.

    A thread inside a long torch call (prefill, compilation) cannot be interrupted, and letting the
    interpreter finalize under it can abort; the terminal is already restored, stories already saved.
    """
    deadline = time.monotonic() + WIND_DOWN_S
    for thread in busy_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    if busy_threads():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class FrameBuffer(Generic[T]):
    """Items a thread produces for the UI; `push` says when to post a redraw message (one a frame at most)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards everything below
        self.pending: list[T] = []  # items not yet shown
        self.flush_posted = False  # a redraw message is on its way to the UI
        self.last_post = 0.0  # when push last asked for a redraw

    def push(self, item: T) -> bool:
        """Buffer item; True when the caller should post a redraw (none on its way, a frame has passed)."""
        now = time.perf_counter()
        with self.lock:
            self.pending.append(item)
            if self.flush_posted or now - self.last_post < FRAME_S:
                return False  # the next item (or the final message) will flush it
            self.flush_posted, self.last_post = True, now
            return True

    def drain(self) -> list[T]:
        """Take everything buffered (UI thread)."""
        with self.lock:
            self.flush_posted = False
            out, self.pending = self.pending, []
            return out
