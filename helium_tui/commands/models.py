"""`helium models`: list installed model bundles and install one by name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helium_tui.errors import user_errors

models_app = typer.Typer(help="Installed model bundles: list them, install one by name.", no_args_is_help=True)


@models_app.command("list")
def list_cmd() -> None:
    """Bundles that `--model NAME` finds: the user models dir first, then the shipped ones."""
    from rich.console import Console
    from rich.table import Table

    from engine.paths import user_models_dir
    from engine.registry import list_models

    table = Table(title=f"installed models (user dir: {user_models_dir()})")
    for col in ("name", "parameters", "vocab", "source", "val loss", "path"):
        table.add_column(col)
    for m in list_models():
        val = m.metadata.get("val_loss")
        table.add_row(
            m.name, f"{m.parameters / 1e6:.2f}M", f"{m.vocab_size:,}", m.source,
            f"{val:.3f}" if isinstance(val, (int, float)) else "–", str(m.path),
        )  # fmt: skip
    Console().print(table)


@models_app.command("install")
def install_cmd(
    source: Annotated[Path, typer.Argument(help="A bundle directory (e.g. RUN_DIR/bundle).")],
    name: Annotated[str, typer.Option(help="Name to install it under (`--model NAME`).")],
    dtype: Annotated[
        str, typer.Option(help="Weights dtype to store: keep, float32 or bfloat16 (half the size).")
    ] = "keep",
    force: Annotated[bool, typer.Option(help="Replace an installed bundle of that name.")] = False,
) -> None:
    """Copy a bundle into the user models dir, optionally storing its weights in bfloat16."""
    with user_errors():
        from engine.install import install_bundle

        name, path = install_bundle(source, name, dtype=None if dtype == "keep" else dtype, force=force)
    print(f"installed {source} as {name!r} -> {path}")
