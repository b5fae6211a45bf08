"""What the studio app's screens share: one `AppState` the app owns (the loaded model, the story library, the
last training run), and the two messages the app sends the studio when that state changes under it.

Screens read the state (`app_state(self)`) and never each other: an event that crosses screens is a message
nested in the screen that sends it (`LibraryScreen.Opened`, `CompareScreen.Kept`), handled by the app.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from textual.message import Message

from helium_tui.library import Story, StoryStore

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from engine.generation.sampling import SamplingParams
    from engine.generation.session import Session


@dataclass(frozen=True)
class Source:
    """What the studio shows, for the views that look at it: a prompt and its story (the sampled ids when every
    story token is known; None for a story reopened as text)."""

    prompt: str
    text: str
    sampled: tuple[int, ...] | None


@dataclass
class AppState:
    """The state the app's screens share; the app changes the model fields, screens the ones their docs say."""

    store: StoryStore  # the story library: the studio and the compare view save into it, the library lists it
    session: Session | None = None  # the loaded model (None until the first load succeeds)
    loading: str | None = None  # what is being loaded, as the studio shows it (None: no load in flight)
    compare_session: Session | None = None  # the other model the compare view loaded last (it keeps it here)
    last_run_dir: Path | None = None  # the run the training monitor watched last (it re-attaches to it)
    shown: Source = Source("", "", ())  # what the studio shows (the studio keeps it; the look-inside view reads it)
    telling: bool = False  # the studio is telling a story (the studio keeps it)

    def save_story(
        self,
        prompt: str,
        text: str,
        params: SamplingParams,
        model: str,
        tokens: int,
        finish_reason: str,
        extra: dict[str, object] | None = None,
    ) -> str | None:
        """Keep a story in the library (extra adds to its params); None when saved, else one line saying why not."""
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        saved = {**asdict(params), **(extra or {})}
        story = Story(prompt=prompt, text=text, params=saved, model=model, seed=params.seed, created=created,
                      tokens=tokens, finish_reason=finish_reason)  # fmt: skip
        try:
            self.store.save(story)
        except (OSError, ValueError) as exc:
            return f"Could not save the story: {exc}"
        return None


class HoldsState(Protocol):
    """An app that owns an AppState: HeliumApp, or a test's stand-in host."""

    state: AppState


def app_state(node: DOMNode) -> AppState:
    """The AppState of the app node runs in."""
    return cast("HoldsState", node.app).state


class ModelChanged(Message, bubble=False):
    """To the studio: a model load began, got further, ended or failed; AppState's `loading` and `session` say
    which."""


@dataclass
class ShowStory(Message, bubble=False):
    """To the studio: show this story, ready to continue or retell (from the library or a kept variant)."""

    prompt: str
    text: str
    params: dict[str, object]  # SamplingParams fields as saved (the sliders take what fits)
    seed: object  # the seed to fix (None: the studio keeps its own)
