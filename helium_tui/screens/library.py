"""The story library screen: browse saved stories, preview, reopen, delete, export and copy them.

Stories come from the `helium_tui.library.StoryStore` it is given, listed from a bounded read of each file and
opened whole only when asked; unreadable files are reported, never touched. User text is never markup. Opening a
story posts `LibraryScreen.Opened`: the app takes it to the studio.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from helium_tui.library import (
    MAX_STORY_CHARS,
    Story,
    StoryHead,
    StoryStore,
    capped,
    one_line,
    opening,
    short_date,
)
from helium_tui.names import cut
from helium_tui.safe_text import terminal_safe
from helium_tui.screens.dialogs import AskDialog, ConfirmDialog

EXPORT_DIR = "~/helium-stories"  # where exports go unless the user types another path
PREVIEW_CHARS = 4000  # the preview shows at most this much of a story (enter opens it whole)
DATE_WIDTH = 16  # "YYYY-MM-DD HH:MM"
MODEL_WIDTH = (5, 12)  # the model column's narrowest and widest
TOKENS_WIDTH = 6
MIN_STORY_WIDTH = 20  # the story column never gets narrower than this
HELP = """\
# Story library
Every finished story is saved as one JSON file in the stories folder. The list shows each story's date,
model, length and **opening** (what the model wrote after the prompt); the preview shows its start and how
it was made. **enter** opens it in the studio, ready to continue or retell.

Files that cannot be read are skipped with a warning and never touched; a story holds at most 1,000,000
characters (a longer one opens cut, with a notice).
"""


class LibraryScreen(Screen):
    """Saved stories in a table with a preview; keys reopen, delete, export and copy the selected one."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]  # preview under the list, or beside it
    HELP = HELP
    BINDINGS = [
        Binding("escape", "back", "Back", id="library.back", tooltip="Back to the studio"),
        Binding("enter", "open_story", "Open", id="library.open", priority=True,
                tooltip="Open the story in the studio, ready to continue or retell"),
        Binding("d", "delete", "Delete", id="library.delete", tooltip="Delete the story (asks first)"),
        Binding("m", "export('md')", "Export md", id="library.export_md", tooltip="Export it as Markdown"),
        Binding("t", "export('txt')", "Export txt", id="library.export_txt", tooltip="Export it as plain text"),
        Binding("c", "copy", "Copy", id="library.copy", tooltip="Copy the story to the clipboard"),
        Binding("r", "reload", "Reload", id="library.reload", show=False, tooltip="Read the library again"),
    ]  # fmt: skip

    has_story: reactive[bool] = reactive(False, bindings=True)  # a story is under the cursor

    @dataclass
    class Opened(Message):
        """To the app: the user opened story (whole, cut to MAX_STORY_CHARS) to continue or retell it."""

        story: Story

    def __init__(self, store: StoryStore) -> None:
        super().__init__()
        self.store = store  # where the stories come from
        self.heads: list[StoryHead] = []  # the stories listed, newest first
        self.warnings: list[str] = []  # files skipped or shown without invalid fields, from the last load
        self._story_width = 0  # the story column's width when the table was last filled

    @property
    def stories(self) -> list[Story]:
        """The listed stories as read for the list (prompt and text may be cut; see StoryHead)."""
        return [head.story for head in self.heads]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="library"):
            yield DataTable(id="stories", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="preview-pane"):
                yield Static(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Story library"
        self.reload()
        self.query_one("#stories", DataTable).focus()

    def on_resize(self, event: Resize) -> None:
        self.call_after_refresh(self._fit_columns)

    def reload(self) -> None:
        """Read the store again (heads only) and refill the table; warn about files skipped or cut."""
        keep = self.selected.id if self.selected is not None else None
        self.heads, self.warnings = self.store.scan()
        self._fill_table(keep)
        for warning in self.warnings:
            self._notify(warning, severity="warning", timeout=8)
        self._show_preview(self.selected)

    def _fit_columns(self) -> None:
        """Refill the table when its width changed the story column's."""
        if self._widths()[-1] != self._story_width:
            self._fill_table(self.selected.id if self.selected is not None else None)

    def _widths(self) -> tuple[int, int, int, int]:
        """Column widths (date, model, tokens, story) for the table's current size: the story gets the rest."""
        table = self.query_one("#stories", DataTable)
        models = max((len(h.story.model) for h in self.heads), default=0)
        model = min(max(models, MODEL_WIDTH[0]), MODEL_WIDTH[1])
        padding = 2 * 4 + 1  # one space each side of four columns, and the scrollbar
        story = table.size.width - DATE_WIDTH - model - TOKENS_WIDTH - padding
        return DATE_WIDTH, model, TOKENS_WIDTH, max(MIN_STORY_WIDTH, story)

    def _fill_table(self, keep: str | None) -> None:
        """Put the heads in the table; the cursor goes to the story `keep` when it is listed."""
        table = self.query_one("#stories", DataTable)
        date_w, model_w, tokens_w, story_w = self._widths()
        self._story_width = story_w
        table.clear(columns=True)
        table.add_column("date", width=date_w, key="date")
        table.add_column("model", width=model_w, key="model")
        table.add_column(Text("tokens", justify="right"), width=tokens_w, key="tokens")
        table.add_column("story (its opening)", width=story_w, key="story")
        for head in self.heads:
            story = head.story
            table.add_row(
                Text(short_date(story)),
                Text(cut(one_line(story.model or "?", 200), model_w)),
                Text(f"{story.tokens:,}"[:tokens_w], justify="right"),
                Text(opening(story, story_w)),
                key=story.id,
            )
        ids = [h.story.id for h in self.heads]
        if keep in ids:
            table.move_cursor(row=ids.index(keep), animate=False)
        self.has_story = bool(self.heads)

    @property
    def selected(self) -> Story | None:
        """The story under the table's cursor (as listed)."""
        head = self.selected_head
        return head.story if head is not None else None

    @property
    def selected_head(self) -> StoryHead | None:
        """The listed head under the table's cursor."""
        table = self.query_one("#stories", DataTable)
        if not self.heads or not 0 <= table.cursor_row < len(self.heads) or table.row_count != len(self.heads):
            return None
        return self.heads[table.cursor_row]

    @on(DataTable.RowHighlighted, "#stories")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_preview(self.selected)

    @on(DataTable.RowSelected, "#stories")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_story()

    def _show_preview(self, story: Story | None) -> None:
        """Show the start of the story (prompt in bold) and how it was made in the preview pane."""
        preview = self.query_one("#preview", Static)
        head = self.selected_head
        if story is None or head is None:
            preview.update(Text("No saved stories yet: save one from the studio.", style="dim"))
            return
        text = Text()
        prompt = terminal_safe(story.prompt[:PREVIEW_CHARS])
        text.append(prompt, style="bold")
        text.append(terminal_safe(story.text[: max(0, PREVIEW_CHARS - len(prompt))]))
        shown = len(story.prompt) + len(story.text)
        if not head.complete or shown > PREVIEW_CHARS:
            text.append(f" … (enter opens the whole story, {head.size / 1e6:.1f} MB)", style="dim italic")
        params = ", ".join(f"{k}={v}" for k, v in sorted(story.params.items()))
        seed = "none" if story.seed is None else story.seed
        meta = (
            f"\n\n{story.model or '?'} · {story.tokens:,} tokens · {story.finish_reason or '?'} · seed {seed}"
            f"\n{params}\n{story.created or '?'} · {story.id}"
        )
        if story.chars_cut:
            meta += f"\n{story.chars_cut:,} characters were cut when it was saved"
        text.append(terminal_safe(meta), style="dim")
        preview.update(text)

    def _notify(self, message: str, **kwargs: object) -> None:
        """A notification of plain text (file names and stories are never markup), terminal-safe."""
        self.notify(terminal_safe(message), title="Story library", markup=False, **kwargs)  # type: ignore[arg-type]

    def _open_whole(self) -> Story | None:
        """The selected story read whole from disk; None (and a notice) when it is gone or unreadable."""
        story = self.selected
        if story is None:
            return None
        try:
            return self.store.get(story.id)
        except KeyError:
            self._notify(f"{story.id} is gone from the library", severity="warning")
            self.reload()
        except (ValueError, OSError) as exc:
            self._notify(f"cannot open {story.id}: {exc}", severity="error")
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Open, delete, export and copy are dimmed while no story is selected."""
        if action in ("open_story", "delete", "export", "copy"):
            return True if self.has_story else None
        return True

    def action_back(self) -> None:
        """Return to the previous screen."""
        self.app.pop_screen()

    def action_reload(self) -> None:
        """Read the library again from disk."""
        self.reload()

    def action_open_story(self) -> None:
        """Open the selected story (whole, up to MAX_STORY_CHARS) in the studio: the app goes back to it."""
        story = self._open_whole()
        if story is None:
            return
        shown = capped(story)
        if shown.chars_cut > story.chars_cut:
            self._notify(
                f"The story is {len(story.full_text):,} characters long: the studio shows the first "
                f"{MAX_STORY_CHARS:,}.",
                severity="warning",
                timeout=8,
            )
        self.post_message(self.Opened(shown))

    def action_delete(self) -> None:
        """Delete the selected story after a confirmation."""
        story = self.selected
        if story is None:
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.store.delete(story.id)
            except KeyError:
                self._notify(f"{story.id} was already gone", severity="warning")
            except (ValueError, OSError) as exc:
                self._notify(f"could not delete {story.id}: {exc}", severity="error")
            else:
                self._notify(f"Deleted “{one_line(story.full_text, 40)}”")
            self.reload()

        self.app.push_screen(ConfirmDialog(f"Delete “{one_line(story.full_text, 50)}”?"), done)

    def action_export(self, fmt: str) -> None:
        """Ask for a path (default ~/helium-stories/<id>.<fmt>) and export the selected story there, whole."""
        story = self.selected
        if story is None:
            return

        def done(path: str | None) -> None:
            if not path:
                return
            whole = self._open_whole()
            if whole is None:
                return
            try:
                written = self.store.export(whole, path, fmt)
            except (OSError, ValueError) as exc:
                self._notify(f"export failed: {exc}", severity="error")
            else:
                self._notify(f"Exported to {written}")

        kind = "Markdown" if fmt == "md" else "plain text"
        default = f"{EXPORT_DIR}/{story.id}.{fmt}"
        self.app.push_screen(AskDialog(f"Export as {kind} to:", default), done)

    def action_copy(self) -> None:
        """Copy the selected story's text to the clipboard (OSC 52), terminal-safe."""
        story = self._open_whole()
        if story is None:
            return
        self.app.copy_to_clipboard(terminal_safe(capped(story).full_text))
        self._notify("Story copied to the clipboard")
