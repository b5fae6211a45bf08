"""`helium import ...`: bring models from elsewhere into Helium bundles.

`helium import llama2c MODEL.bin --tokenizer TOK.bin (--out DIR | --name NAME)` converts a llama2.c checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from helium_tui.errors import fail, user_errors

import_app = typer.Typer(help="Import models from other formats as Helium bundles.", no_args_is_help=True)


@import_app.command(
    "llama2c", help="Import a karpathy/llama2.c checkpoint (.bin, version 0 or 1) and its tokenizer."
)
def llama2c(
    model_bin: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL.bin", help="llama2.c checkpoint, e.g. stories260K.bin.", show_default=False
        ),
    ],
    tokenizer: Annotated[
        Path,
        typer.Option(help="llama2.c tokenizer file, e.g. tok512.bin or tokenizer.bin.", show_default=False),
    ],
    out: Annotated[Path | None, typer.Option(help="Bundle directory to create (absent or empty).")] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Install under this name in the user models dir (use with --model NAME)."),
    ] = None,
) -> None:
    """Convert MODEL_BIN + --tokenizer into a Helium bundle and print a one-line summary."""
    if (out is None) == (name is None):
        raise fail("give exactly one of --out DIR or --name NAME")
    with user_errors():
        from engine.bundle_info import read_config, read_metadata
        from engine.llama2c import import_llama2c
        from engine.paths import user_models_dir

        if name is not None:
            if not name.strip() or name in {".", ".."} or os.sep in name or "/" in name:
                raise ValueError(f"{name!r}: not a valid model name (no slashes)")
            out = user_models_dir() / name
        path = import_llama2c(model_bin, tokenizer, out)
        config, _ = read_config(path)
        params = int(read_metadata(path).get("parameters", 0))
    use = f"--model {name}" if name is not None else f"--model {path}"
    print(
        f"imported {model_bin.name}: {params:,} parameters, vocab {config.vocab_size} -> {path} (use {use})"
    )
