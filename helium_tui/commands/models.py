"""`helium models`: list installed model bundles and install one by name."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from helium_tui.errors import fail, user_errors

models_app = typer.Typer(help="Installed model bundles: list them, install one by name.", no_args_is_help=True)


@models_app.command("list")
def list_cmd() -> None:
    """Bundles that `--model NAME` finds: the user models dir first, then the shipped ones."""
    from rich.console import Console
    from rich.table import Table

    from engine.registry import list_models, user_models_dir

    table = Table(title=f"installed models (user dir: {user_models_dir()})")
    for col in ("name", "parameters", "vocab", "source", "val loss", "path"):
        table.add_column(col)
    for m in list_models():
        val = m.metadata.get("val_loss")
        table.add_row(
            m.name, f"{m.parameters / 1e6:.2f}M", f"{m.vocab_size:,}", m.source,
            f"{val:.3f}" if isinstance(val, (int, float)) else "–", str(m.path),
        )
    Console().print(table)


@models_app.command("install")
def install_cmd(
    source: Annotated[Path, typer.Argument(help="A bundle directory (e.g. RUN_DIR/bundle).")],
    name: Annotated[str, typer.Option(help="Name to install it under (`--model NAME`).")],
    dtype: Annotated[str, typer.Option(help="Weights dtype to store: keep, float32 or bfloat16 (half the size).")] = "keep",
    force: Annotated[bool, typer.Option(help="Replace an installed bundle of that name.")] = False,
) -> None:
    """Copy a bundle into the user models dir, optionally storing its weights in bfloat16."""
    from engine.registry import user_models_dir

    if not name or "/" in name or name.startswith("."):
        raise fail(f"bad model name {name!r}")
    target = user_models_dir() / name
    if target.exists() and not force:
        raise fail(f"{target}: already installed (use --force to replace it)")
    with user_errors():
        out = install_bundle(source, target, dtype)
    print(f"installed {source} as {name!r} -> {out}")


def install_bundle(source: Path, target: Path, dtype: str) -> Path:
    """Load source (validating it), write it to a temp sibling of target, then swap it into place."""
    import torch

    from engine.checkpoint import load_bundle, save_bundle
    from engine.runtime import DTYPES

    if dtype != "keep" and dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use keep, float32 or bfloat16)")
    bundle = load_bundle(source, dtype=torch.float32)
    weights_dtype = None if dtype == "keep" else DTYPES[dtype]
    tmp = target.with_name(f".{target.name}.installing")
    shutil.rmtree(tmp, ignore_errors=True)
    meta = {k: v for k, v in bundle.metadata.items() if k not in ("created_at", "parameters")}
    save_bundle(tmp, bundle.model, bundle.tokenizer, meta, weights_dtype=weights_dtype)
    for extra in source.glob("*.md"):  # a model card travels with its bundle
        shutil.copy2(extra, tmp / extra.name)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
