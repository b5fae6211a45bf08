"""`helium import ...`: bring models from elsewhere into Helium bundles.

`helium import llama2c MODEL.bin --tokenizer TOK.bin (--out DIR | --name NAME)` converts a llama2.c checkpoint;
`helium import hf DIR_OR_REPO (--out DIR | --name NAME)` a transformers LlamaForCausalLM (a directory or a Hub repo);
`helium import heliumlm CKPT.pt --tokenizer TOK.json [--config CFG.json] (--out DIR | --name NAME)` the model card
author's own HeliumLM checkpoints.
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


@import_app.command("hf", help="Import a transformers LlamaForCausalLM: a local directory or a Hub repo (user/name).")
def hf(
    source: Annotated[
        str,
        typer.Argument(
            metavar="DIR_OR_REPO",
            help="A directory with config.json, model.safetensors and tokenizer.json, or a Hub repo id.",
            show_default=False,
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="Bundle directory to create (absent or empty).")] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Install under this name in the user models dir (use with --model NAME)."),
    ] = None,
) -> None:
    """Convert a Hugging Face Llama model into a Helium bundle and print a one-line summary."""
    if (out is None) == (name is None):
        raise fail("give exactly one of --out DIR or --name NAME")
    with user_errors():
        from engine.bundle_info import read_config, read_metadata
        from engine.hf_format import download_from_hub, import_hf
        from engine.install import installed_path

        if name is not None:
            out = installed_path(name)
        local = Path(source).expanduser()
        if not local.is_dir():
            if source.count("/") != 1 or source.startswith((".", "/", "~")):
                raise ValueError(f"{source}: no such directory (or give a Hub repo id such as user/name)")
            local = download_from_hub(source)
        path = import_hf(local, out, origin=source)
        config, _ = read_config(path)
        params = int(read_metadata(path).get("parameters", 0))
    use = f"--model {name}" if name is not None else f"--model {path}"
    print(f"imported {source}: {params:,} parameters, vocab {config.vocab_size} -> {path} (use {use})")


@import_app.command(
    "heliumlm", help="Import a HeliumLM checkpoint (the model card author's TinySLM state dict) and its tokenizer."
)
def heliumlm(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            metavar="CKPT.pt", help="The author's state dict, e.g. helium_nano_45m.pt.", show_default=False
        ),
    ],
    tokenizer: Annotated[
        Path, typer.Option(help="The author's tokenizer, e.g. heliumLM-nano-tokenizer.json.", show_default=False)
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            help="The author's config JSON (n_head, window_size, max_seq_len); default: the card's Helium-Nano "
            "(8 heads, window 128, context 512).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Bundle directory to create (absent or empty).")] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Install under this name in the user models dir (use with --model NAME)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle (--out) or model (--name).")] = False,
) -> None:
    """Convert CHECKPOINT + --tokenizer (+ --config) into a Helium bundle and print a one-line summary."""
    if (out is None) == (name is None):
        raise fail("give exactly one of --out DIR or --name NAME")
    with user_errors():
        import tempfile

        from engine.bundle_info import read_config, read_metadata
        from engine.heliumlm import import_heliumlm
        from engine.install import install_bundle, installed_path

        if name is None:
            path = import_heliumlm(checkpoint, tokenizer, out, config, force=force)
        else:
            target = installed_path(name)
            if (target.exists() or target.is_symlink()) and not force:
                raise ValueError(f"{target}: a model named {name!r} is already installed (use --force to replace it)")
            with tempfile.TemporaryDirectory(prefix="helium-import-") as tmp:
                built = import_heliumlm(checkpoint, tokenizer, Path(tmp) / name, config)
                name, path = install_bundle(built, name, force=force)
        model, _ = read_config(path)
        params = int(read_metadata(path).get("parameters", 0))
    use = f"--model {name}" if name is not None else f"--model {path}"
    print(
        f"imported {checkpoint.name}: {params:,} parameters, vocab {model.vocab_size}, "
        f"window {model.sliding_window}, context {model.context_length} -> {path} (use {use})"
    )
