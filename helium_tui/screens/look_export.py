"""Exporting the "Look inside" view (e): ask where (AskDialog, the story library's folder by default), then write
the HTML page (`helium_tui.inspect_html`) and an SVG screenshot beside it, each atomically; a failure is one notice.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from engine.files import atomic_write
from helium_tui.app_state import AppState, app_state
from helium_tui.inspect_html import View, look_html
from helium_tui.safe_text import terminal_safe
from helium_tui.screens.dialogs import AskDialog

if TYPE_CHECKING:
    from helium_tui.screens.look_inside import LookInsideScreen

HTML_SUFFIXES = (".html", ".htm")


def export_name() -> str:
    """A file name for an export: look-inside-YYYYmmdd-HHMMSS.html."""
    return f"look-inside-{datetime.now():%Y%m%d-%H%M%S}.html"


def export_dir(state: AppState) -> Path:
    """Where exports go by default: the story library's folder."""
    return Path(state.store.root)


def target_path(answer: str, name: str) -> Path:
    """The HTML file for what the user typed: a folder gets name inside it, a file without .html gets it."""
    path = Path(answer).expanduser()
    if path.is_dir():
        return path / name
    return path if path.suffix.lower() in HTML_SUFFIXES else path.with_name(path.name + ".html")


def write_export(path: Path, page: str, svg: str) -> Path:
    """Write page at path and svg beside it (same name, .svg), each atomically; returns the SVG's path."""
    svg_path = path.with_suffix(".svg")
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    atomic_write(svg_path, lambda tmp: tmp.write_text(svg, encoding="utf-8"))
    return svg_path


def current_view(screen: LookInsideScreen) -> View | None:
    """What the screen shows now (None before the first look)."""
    look, session = screen.look, screen.session
    if look is None:
        return None
    name = session.name if session is not None else "model"
    return View(
        name, look, screen.selected, screen.attn_layer, screen.attn_head, screen.all_heads, screen.reading
    )


def export_view(screen: LookInsideScreen) -> None:
    """Ask for a path and save the view there (the screenshot is taken now, before the dialog covers it)."""
    view = current_view(screen)
    if view is None:
        screen.notify("Nothing to export yet: the view is still being computed.", severity="warning")
        return
    app = screen.app
    svg = app.export_screenshot(title="Helium · Look inside")
    default = export_dir(app_state(screen)) / export_name()

    def chosen(answer: str | None) -> None:
        if answer is None:
            return
        path = target_path(answer, default.name)
        try:
            svg_path = write_export(path, look_html(view), svg)
        except (OSError, ValueError) as exc:
            screen.notify(terminal_safe(f"Could not export the view: {exc}"), severity="error", markup=False)
            return
        screen.last_export = path
        screen.notify(terminal_safe(f"Saved {path} and {svg_path.name}"), timeout=6, markup=False)

    app.push_screen(
        AskDialog("Save this view as an HTML page (an SVG screenshot goes beside it):", str(default)), chosen
    )
