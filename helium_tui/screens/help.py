"""The help screen (f1): every key of the screen it was opened on, then that screen's guide.

Keys come from the screen's and the app's `BINDINGS` (a binding's tooltip, else its description), so each
screen's help stays true to its keys; the guide is the screen's `HELP` Markdown (its first line the title).
A modal page; escape, f1 or q closes it.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown, Static

PALETTE_ROW = ("ctrl+p", "Command palette: every action of this screen by name")


def node_bindings(node: DOMNode) -> list[Binding]:
    """The bindings a node's class declares, its own before its bases' (a key declared twice: the first)."""
    out: list[Binding] = []
    seen: set[str] = set()
    for cls in type(node).__mro__:
        for binding in Binding.make_bindings(cls.__dict__.get("BINDINGS", [])):
            if binding.key not in seen:
                seen.add(binding.key)
                out.append(binding)
    return out


def key_rows(screen: Screen, app: App) -> list[tuple[str, str]]:
    """(keys, what they do) for screen, then the app; keys of one action share a row, system keys left out."""
    rows: dict[str, tuple[list[str], str]] = {}  # action -> (keys, text)
    taken: set[str] = set()  # a key the screen binds hides the app's binding of it
    for node in (screen, app):
        for binding in node_bindings(node):
            if binding.system or not binding.description or binding.key in taken:
                continue
            taken.add(binding.key)
            action = binding.action if "." in binding.action or node is screen else f"app.{binding.action}"
            keys, text = rows.setdefault(action, ([], binding.tooltip or binding.description))
            keys.append(binding.key_display or binding.key)
    return [("  ".join(keys), text) for keys, text in rows.values()] + [PALETTE_ROW]


def keys_table(rows: list[tuple[str, str]]) -> Table:
    """The key list as a two-column grid (plain Text: never markup)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold #ffa62b", no_wrap=True)
    table.add_column()
    for keys, text in rows:
        table.add_row(Text(keys), Text(text))
    return table


class HelpScreen(ModalScreen[None]):
    """The keys and the guide of the screen beneath."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("f1", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self.about = screen  # the screen whose keys are shown
        guide = (screen.HELP or "").strip()
        first, _, rest = guide.partition("\n")
        self.heading = first.lstrip("# ").strip() if first.startswith("#") else "Helium"  # the page's title
        self.guide = rest.strip() if first.startswith("#") else guide  # Markdown below the keys

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(
                Text.assemble((self.heading, "bold"), ("  f1 or escape closes this", "dim")), id="help-title"
            )
            yield Static(keys_table(key_rows(self.about, self.app)), id="help-keys")
            if self.guide:
                yield Markdown(self.guide, id="help-guide")

    def action_close(self) -> None:
        """Back to where we were."""
        self.dismiss(None)
