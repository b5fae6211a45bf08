"""The "Look inside" view (f4 in the studio): attention, the logit lens, attribution and head knock-outs on the
story just told or being told; e exports the view as an HTML page and an SVG screenshot.

The forward pass runs on a daemon thread (`helium_tui.streaming`, so quitting never waits for torch), one at a
time: a request made meanwhile runs when it ends. Results come back as messages; the story is watched as it grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from helium_tui.app_state import Source, app_state
from helium_tui.look_data import (
    Head,
    Look,
    Reading,
    compute,
    continuation,
    read,
    story_ids,
    window,
)
from helium_tui.safe_text import terminal_safe
from helium_tui.streaming import start_daemon
from helium_tui.widgets.attention_map import AttentionMap, attends_caption
from helium_tui.widgets.attribution_panel import AttributionPanel
from helium_tui.widgets.knockout_panel import KnockoutPanel, head_text
from helium_tui.widgets.lens_table import LensTable
from helium_tui.widgets.look_story import LookStory

if TYPE_CHECKING:
    from engine.generation.session import Session

PANES = ["look-story-pane", "look-map", "look-lens-pane", "look-attr-pane", "look-knock-pane"]  # tab's order
SIDE = {"look-lens-pane", "look-attr-pane", "look-knock-pane"}  # share one column in a small terminal
WIDE = (140, 36)  # from this size on every pane shows at once
WATCH_S = 0.5  # how often the story is checked for new tokens
TOKEN, LAYER, HEAD = (Binding.Group(name, compact=True) for name in ("Token", "Layer", "Head"))  # footer keys

HELP = """\
# Look inside
What the model did when it wrote each token of the story. **← →** (or **h l**) select a token: the views show the
position it was written from, so the selected token is the one being *written* (the last slot, *next?*, is the
token the model would write after the story).

- **Story**: the earlier tokens shaded by how much that position attends to them (layer and head above the map).
- **Attention map**: the whole story's pattern for the layer and head, queries down, keys across (▶ the
  selected row); **a** shows every head of the layer as a grid. **[ ]** or **- +** change the layer, **, .** the head.
- **Logit lens**: what each layer would have written there (the final norm and the unembedding applied to the
  stream after it) and how likely it found the written token: where the right word appears.
- **Attribution**: how much each head and MLP pushed the written token's logit up (orange) or down (blue), and
  which earlier tokens mattered most through attention.
- **Knock-out**: **k** switches the selected head off (zeroes its output everywhere) or on again, **c** all back
  on; the views and the next-token list are recomputed with the heads off, and a short greedy continuation
  after the story is told with and without them.

**tab** moves between the panes (in a small terminal the right column shows one at a time), **r** recomputes,
**e** exports the view as an HTML page and an SVG screenshot, **escape** goes back to the studio.
A story longer than the model's context is looked at over its last tokens only.
"""


class LookInsideScreen(Screen[None]):
    """Attention, lens, attribution and knock-outs on the studio's story."""

    # fmt: off
    BINDINGS = [  # the footer fits 80 columns; the rest is in f1 and the palette
        Binding("escape", "back", "Back", id="look-back", tooltip="Back to the studio"),
        Binding("left", "move(-1)", "Token", key_display="←", group=TOKEN, priority=True,
                tooltip="The token before"),  # priority: before the panes' own scrolling keys
        Binding("right", "move(1)", "Token", key_display="→", group=TOKEN, priority=True,
                tooltip="The token after"),
        Binding("h", "move(-1)", "Token before", show=False),
        Binding("l", "move(1)", "Token after", show=False),
        Binding("home", "move_to(1)", "First token", show=False, priority=True, tooltip="The first token"),
        Binding("end", "move_to(-1)", "Next token", show=False, priority=True, tooltip="The slot after the story"),
        Binding("left_square_bracket", "layer(-1)", "Layer", key_display="[", group=LAYER,
                tooltip="The layer before"),
        Binding("right_square_bracket", "layer(1)", "Layer", key_display="]", group=LAYER,
                tooltip="The layer after"),
        Binding("minus", "layer(-1)", "Layer before", key_display="-", show=False),
        Binding("plus,equals_sign", "layer(1)", "Layer after", key_display="+", show=False),
        Binding("comma", "head(-1)", "Head", key_display=",", group=HEAD, tooltip="The head before"),
        Binding("full_stop", "head(1)", "Head", key_display=".", group=HEAD, tooltip="The head after"),
        Binding("a", "all_heads", "All heads", show=False, tooltip="Every head of the layer as a grid"),
        Binding("k", "knock", "Knock out", tooltip="Switch the selected head off (or on again)"),
        Binding("c", "clear_knocks", "All on", show=False, tooltip="Switch every head back on"),
        Binding("r", "recompute", "Recompute", show=False, tooltip="Run the story through the model again"),
        Binding("e", "export", "Export", tooltip="Save the view as an HTML page and an SVG screenshot"),
        Binding("tab", "pane(1)", "Pane", show=False, priority=True, tooltip="The next pane"),
        Binding("shift+tab", "pane(-1)", "Pane before", show=False, priority=True, tooltip="The pane before"),
    ]
    # fmt: on
    HELP = HELP

    @dataclass
    class Computed(Message):
        """A look finished (posted by its thread)."""

        seq: int  # which request (only the newest counts)
        look: Look | None  # None: it failed
        error: str = ""  # one line for the user

    @dataclass
    class Continued(Message):
        """A greedy continuation finished (posted by its thread)."""

        look: Look  # the look it continues
        ablated: tuple[Head, ...]  # the knock-outs it was told with
        text: str  # what it told

    def __init__(self) -> None:
        super().__init__(id="look")
        self.look: Look | None = None  # the last finished look
        self.selected = -1  # the selected token (look.length: the next-token slot; -1: not chosen yet)
        self.attn_layer, self.attn_head, self.all_heads = 0, 0, False  # what the map and the shading show
        self.knocked: set[Head] = set()  # heads switched off
        self.seq = 0  # counts requests; a result counts only if no newer one was made
        self.running = False  # a look is being computed
        self.again = False  # another request came while one ran
        self.telling = False  # a continuation is being told
        self.source: Source | None = None  # what the last request looked at
        self.side = "look-lens-pane"  # the side pane shown in a small terminal
        self.reading: Reading | None = None  # the selected token's lens and attribution
        self.last_export: Path | None = None  # the HTML page written last

    @property
    def session(self) -> Session | None:
        """The loaded model."""
        return app_state(self).session

    def compose(self) -> ComposeResult:
        yield Static(id="look-head")
        with Horizontal(id="look-body"):
            with Vertical(id="look-left"):
                yield VerticalScroll(LookStory(id="look-story"), id="look-story-pane", classes="look-pane")
                yield AttentionMap(id="look-map")
            with Vertical(id="look-side"):
                yield VerticalScroll(
                    LensTable(id="look-lens"), id="look-lens-pane", classes="look-pane -side"
                )
                yield VerticalScroll(
                    AttributionPanel(id="look-attr"), id="look-attr-pane", classes="look-pane -side"
                )
                yield VerticalScroll(
                    KnockoutPanel(id="look-knock"), id="look-knock-pane", classes="look-pane -side"
                )
        yield Footer(compact=True)

    def on_mount(self) -> None:
        titles = {"look-story-pane": "Story", "look-map": "Attention", "look-lens-pane": "Logit lens",
                  "look-attr-pane": "Attribution", "look-knock-pane": "Knock-out"}  # fmt: skip
        for pane, title in titles.items():
            self.query_one(f"#{pane}").border_title = title
        self.show_side(self.side)
        self.query_one("#look-story-pane").focus()
        self.request()
        self.set_interval(WATCH_S, self.watch_story)

    def on_resize(self, event: Resize) -> None:
        self.set_class(event.size.width >= WIDE[0] and event.size.height >= WIDE[1], "-wide")

    # ---- computing -------------------------------------------------------------------------------------

    def request(self) -> None:
        """Look at the studio's story with the current knock-outs (after the look in flight, if any)."""
        if self.running:
            self.again = True
            return
        session = self.session
        if session is None:
            self.head_line("no model is loaded")
            return
        self.source = source = app_state(self).shown
        model, tok = session.bundle.model, session.bundle.tokenizer
        ids, cut = window(
            story_ids(tok, source.prompt, source.text, source.sampled), model.config.context_length
        )
        if not ids:
            self.head_line("nothing to look at: write a prompt or tell a story first")
            return
        if self.look is not None and self.look.model is not model:  # another model loaded meanwhile
            self.look, self.knocked = None, set()
        self.seq += 1
        seq, knocked, base = self.seq, tuple(sorted(self.knocked)), self.look
        self.running, self.again = True, False
        self.head_line("computing…")

        def work() -> None:
            try:
                look = compute(model, tok, ids, cut, knocked, base)
            except Exception as exc:  # noqa: BLE001 - a failure is one line on screen, the app keeps going
                lines = str(exc).strip().splitlines()
                self.post_message(
                    self.Computed(seq, None, f"{type(exc).__name__}: {lines[0] if lines else ''}")
                )
            else:
                self.post_message(self.Computed(seq, look))

        start_daemon("look", work)

    @on(Computed)
    def _computed(self, message: Computed) -> None:
        self.running = False
        if message.look is not None and message.seq == self.seq:
            old, look = self.look, message.look
            self.look = look
            if self.selected < 0 or old is None or self.selected >= old.length:
                self.selected = look.length  # the next-token slot stays selected as the story grows
            else:
                self.selected += old.cut - look.cut  # the same token when earlier ones slid out of the window
            self.selected = max(1, min(self.selected, look.length))
            self.attn_layer, self.attn_head = (
                min(self.attn_layer, look.n_layer - 1),
                min(self.attn_head, look.n_head - 1),
            )
            self.redraw()
            self.call_after_refresh(self.tell_continuation)  # the view is drawn first
        elif message.look is None:
            self.head_line(terminal_safe(message.error))
        if self.again:
            self.request()

    def tell_continuation(self) -> None:
        """Tell the greedy continuations the knock-out pane lacks (one thread at a time; not while the story is
        being told: it would only grow past them, and they cost a dozen forward passes)."""
        look = self.look
        if look is None or self.telling or app_state(self).telling:  # the story is still changing
            return
        wanted = ((), look.ablated) if look.ablated else ()  # none without knock-outs: a dozen forward passes
        missing = [key for key in wanted if key not in look.continuation]
        if not missing:
            return
        self.telling = True
        model, tok, key = look.model, look.tok, missing[0]

        def work() -> None:
            try:
                text = continuation(model, tok, look.ids, key)
            except Exception as exc:  # noqa: BLE001 - shown in place of the continuation
                text = f"({type(exc).__name__})"
            self.post_message(self.Continued(look, key, text))

        start_daemon("look-continue", work)

    @on(Continued)
    def _continued(self, message: Continued) -> None:
        self.telling = False
        message.look.continuation[message.ablated] = message.text
        look = self.look
        if look is not None and look.model is message.look.model and look.ids == message.look.ids:
            look.continuation.setdefault(message.ablated, message.text)
            self.redraw_knockout()
        self.tell_continuation()

    def watch_story(self) -> None:
        """Look again when the studio's story has changed (it grows while a story is told)."""
        if self.running or self.source is None:
            return
        session = self.session
        switched = (
            session is not None and self.look is not None and self.look.model is not session.bundle.model
        )
        if switched or app_state(self).shown != self.source:
            self.request()
        else:
            self.tell_continuation()  # the story ended after its last look

    # ---- drawing ---------------------------------------------------------------------------------------

    def head_line(self, state: str = "") -> None:
        """The line at the top: model, layer and head, the selected token, what the view is doing."""
        name = self.session.name if self.session is not None else ""
        where = (self.attn_layer, None if self.all_heads else self.attn_head)
        self.query_one("#look-head", Static).update(head_text(name, self.look, where, self.selected, state))

    def redraw(self) -> None:
        """Every pane, for the current look, token, layer and head."""
        look = self.look
        if look is None:
            return
        query = look.query(self.selected)
        head = None if self.all_heads else self.attn_head
        weights = look.attention(self.attn_layer, head, query).tolist()
        self.query_one(LookStory).show(look.pieces, weights, self.selected, look.cut)
        self.query_one(AttentionMap).show(
            look.cache.attention[self.attn_layer], self.attn_head, self.all_heads, query,
            {h for layer, h in self.knocked if layer == self.attn_layer}, attends_caption(look, weights),
        )  # fmt: skip
        self.reading = read(look, self.selected)
        self.query_one(LensTable).show(look, self.selected, self.reading, self.attn_layer)
        chosen = (self.attn_layer, self.attn_head)
        self.query_one(AttributionPanel).show(look, self.selected, self.reading, chosen, self.knocked)
        self.redraw_knockout()
        self.query_one("#look-map").border_title = f"Attention L{self.attn_layer} " + (
            "all heads" if self.all_heads else f"H{self.attn_head}"
        )
        self.head_line("computing…" if self.running else "")

    def redraw_knockout(self) -> None:
        """The knock-out pane alone (a continuation arrived)."""
        self.query_one(KnockoutPanel).show(self.look, self.selected, (self.attn_layer, self.attn_head))

    def show_side(self, pane: str) -> None:
        """In a small terminal, the side pane shown (the others hide)."""
        self.side = pane
        for name in SIDE:
            self.query_one(f"#{name}").set_class(name == pane, "-current")

    # ---- actions ---------------------------------------------------------------------------------------

    def action_back(self) -> None:
        """Back to the studio."""
        self.dismiss(None)

    def action_move(self, step: int) -> None:
        """Select the token step tokens away."""
        if self.look is not None:
            self.action_move_to(max(1, min(self.look.length, self.selected + step)))

    def action_move_to(self, index: int) -> None:
        """Select token index (-1: the next-token slot)."""
        if self.look is not None:
            self.selected = self.look.length if index < 0 else max(1, min(self.look.length, index))
            self.redraw()

    @on(LookStory.Selected)
    def _clicked(self, message: LookStory.Selected) -> None:
        self.action_move_to(message.index)

    def action_layer(self, step: int) -> None:
        """The attention layer step layers away (wrapping)."""
        if self.look is not None:
            self.attn_layer = (self.attn_layer + step) % self.look.n_layer
            self.redraw()

    def action_head(self, step: int) -> None:
        """The head step heads away (wrapping); leaves the all-heads grid."""
        if self.look is not None:
            self.attn_head = (self.attn_head + step) % self.look.n_head
            self.redraw()

    def action_all_heads(self) -> None:
        """One head's map, or every head of the layer as a grid."""
        self.all_heads = not self.all_heads
        self.redraw()

    def action_knock(self) -> None:
        """Switch the selected head off, or on again; everything is recomputed."""
        self.knocked ^= {(self.attn_layer, self.attn_head)}
        self.request()

    def action_clear_knocks(self) -> None:
        """Every head back on."""
        if self.knocked:
            self.knocked.clear()
            self.request()

    def action_recompute(self) -> None:
        """Run the story through the model again."""
        self.request()

    def action_pane(self, step: int) -> None:
        """Focus the next (or previous) pane; in a small terminal a side pane shows when it gets focus."""
        current = next((p for p in PANES if self.focused is not None and self.focused.id == p), PANES[0])
        pane = PANES[(PANES.index(current) + step) % len(PANES)]
        if pane in SIDE:
            self.show_side(pane)
        self.query_one(f"#{pane}").focus()

    def action_export(self) -> None:
        """Ask where to save the view, then write the HTML page and the SVG screenshot."""
        from helium_tui.screens.look_export import export_view

        export_view(self)
