"""Help text fixes for the `helium` CLI: flags are shown without a value type; bracketed notes are printed.

Typer's rich help prints every option's type, flags included (`--json <bool>`, even `--help <bool>`), as if a
flag took a value; its plain help leaves flags bare. `hide_flag_types()` makes the rich help do the same. Help
text is Rich markup, so a default written `[on for CUDA only]` would be taken for a style and vanish: `note()`.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from typer.core import TyperOption


def note(text: str) -> str:
    """A bracketed note for a help text (a default: `[auto]`), escaped so Rich prints it instead of taking it
    for a style."""
    return escape(f"[{text}]")


def hide_flag_types() -> None:
    """Show no type after flags (`--json`, `--compile/--no-compile`, `--help`) in every command's help."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "hides_flags", False):
        return  # already done

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None  # a flag takes no value
        return shown(self, ctx)

    display_type_rich.hides_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
