"""The story library screen: browse saved stories, preview, reopen, delete, export and copy them.

Stories come from `app.store` (a `helium_tui.library.StoryStore`); unreadable files are reported, never touched.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from helium_tui.library import Story, StoryStore, first_words

EXPORT_DIR = "~/helium-stories"  # where exports go unless the user types another path


class ConfirmDialog(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True for yes."""

    DEFAULT_CSS = """
    ConfirmDialog { align: center middle; }
    ConfirmDialog > Vertical { width: 60; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    ConfirmDialog Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ConfirmDialog Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question  # the text shown above the buttons

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, id="question")
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Close the dialog with the answer."""
        self.dismiss(yes)


class PathDialog(ModalScreen["str | None"]):
    """Ask for a file path; dismisses with the path, or None when cancelled."""

    DEFAULT_CSS = """
    PathDialog { align: center middle; }
    PathDialog > Vertical { width: 80; height: auto; border: thick $primary; background: $surface; padding: 1 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, default: str) -> None:
        super().__init__()
        self.title_text = title  # the question above the input
        self.default = default  # the pre-filled path

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            yield Input(self.default, id="path")
            yield Label("[dim]enter: save · escape: cancel[/]")

    @on(Input.Submitted, "#path")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """Close without a path."""
        self.dismiss(None)


class LibraryScreen(Screen):
    """Saved stories in a table with a preview; keys reopen, delete, export and copy the selected one."""

    DEFAULT_CSS = """
    LibraryScreen #library { height: 1fr; }
    LibraryScreen #stories { width: 3fr; height: 1fr; }
    LibraryScreen #preview-pane { width: 2fr; height: 1fr; border-left: solid $primary; padding: 0 1; }
    LibraryScreen #empty { padding: 1 2; color: $text-muted; }
    """
    BINDINGS = [
        Binding("escape", "back", "Back", id="library.back"),
        Binding("enter", "open_story", "Open", id="library.open", priority=True),
        Binding("d", "delete", "Delete", id="library.delete"),
        Binding("m", "export('md')", "Export .md", id="library.export_md"),
        Binding("t", "export('txt')", "Export .txt", id="library.export_txt"),
        Binding("c", "copy", "Copy", id="library.copy"),
        Binding("r", "reload", "Reload", id="library.reload"),
    ]

    def __init__(self, store: StoryStore | None = None) -> None:
        super().__init__()
        self._store = store  # an explicit store; None = the app's
        self.stories: list[Story] = []  # the stories listed, newest first
        self.warnings: list[str] = []  # unreadable files from the last load

    @property
    def store(self) -> StoryStore:
        """The store the stories come from."""
        return self._store if self._store is not None else self.app.store

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="library"):
            yield DataTable(id="stories", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="preview-pane"):
                yield Static(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Story library"
        table = self.query_one("#stories", DataTable)
        table.add_column("date", key="date")
        table.add_column("model", key="model")
        table.add_column("tokens", key="tokens")
        table.add_column("story", key="story")
        self.reload()
        table.focus()

    def reload(self) -> None:
        """Read the store again and refill the table; warn about unreadable files."""
        self.stories, self.warnings = self.store.list()
        table = self.query_one("#stories", DataTable)
        table.clear()
        for story in self.stories:
            table.add_row(
                _short_date(story.created),
                story.model or "?",
                str(story.tokens),
                first_words(story.full_text, 6),
                key=story.id,
            )
        for warning in self.warnings:
            self.notify(warning, title="Story library", severity="warning", timeout=8)
        self._show_preview(self.selected)

    @property
    def selected(self) -> Story | None:
        """The story under the table's cursor."""
        table = self.query_one("#stories", DataTable)
        if not self.stories or not 0 <= table.cursor_row < len(self.stories):
            return None
        return self.stories[table.cursor_row]

    @on(DataTable.RowHighlighted, "#stories")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_preview(self.selected)

    @on(DataTable.RowSelected, "#stories")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_story()

    def _show_preview(self, story: Story | None) -> None:
        """Show story (prompt in bold) and how it was made in the preview pane."""
        preview = self.query_one("#preview", Static)
        if story is None:
            preview.update(Text("No saved stories yet: save one from the studio.", style="dim"))
            return
        text = Text()
        text.append(story.prompt, style="bold")
        text.append(story.text)
        params = ", ".join(f"{k}={v}" for k, v in sorted(story.params.items()))
        seed = "none" if story.seed is None else story.seed
        text.append(
            f"\n\n{story.model or '?'} · {story.tokens} tokens · {story.finish_reason or '?'} · seed {seed}"
            f"\n{params}\n{story.created} · {story.id}",
            style="dim",
        )
        preview.update(text)

    def action_back(self) -> None:
        """Return to the previous screen."""
        self.app.pop_screen()

    def action_reload(self) -> None:
        """Read the library again from disk."""
        self.reload()

    def action_open_story(self) -> None:
        """Load the selected story into the studio and go back to it."""
        story = self.selected
        if story is None:
            return
        self.app.pop_screen()
        self.app.open_story(story)

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
            except (KeyError, OSError) as exc:
                self.notify(f"could not delete {story.id}: {exc}", severity="error")
            else:
                self.notify(f"Deleted “{first_words(story.full_text, 5)}”")
            self.reload()

        self.app.push_screen(ConfirmDialog(f"Delete “{first_words(story.full_text, 8)}”?"), done)

    def action_export(self, fmt: str) -> None:
        """Ask for a path (default ~/helium-stories/<id>.<fmt>) and export the selected story there."""
        story = self.selected
        if story is None:
            return

        def done(path: str | None) -> None:
            if not path:
                return
            try:
                written = self.store.export(story, path, fmt)
            except (OSError, ValueError) as exc:
                self.notify(f"export failed: {exc}", severity="error")
            else:
                self.notify(f"Exported to {written}")

        kind = "Markdown" if fmt == "md" else "plain text"
        default = f"{EXPORT_DIR}/{story.id}.{fmt}"
        self.app.push_screen(PathDialog(f"Export as {kind} to:", default), done)

    def action_copy(self) -> None:
        """Copy the selected story's text to the clipboard (OSC 52)."""
        story = self.selected
        if story is None:
            return
        self.app.copy_to_clipboard(story.full_text)
        self.notify("Story copied to the clipboard")


def _short_date(created: str) -> str:
    """An ISO time as local 'YYYY-MM-DD HH:MM' (the raw text when it does not parse)."""
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        return created
    return f"{when.astimezone() if when.tzinfo else when:%Y-%m-%d %H:%M}"
