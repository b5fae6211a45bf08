"""`helium import ...`: bring models from elsewhere into Helium bundles.

`helium import llama2c MODEL.bin --tokenizer TOK.bin (--out DIR | --name NAME)` converts a llama2.c checkpoint;
`helium import hf DIR_OR_REPO (--out DIR | --name NAME)` a transformers LlamaForCausalLM (a directory or a Hub repo);
`helium import heliumlm CKPT.pt --tokenizer TOK.json [--config CFG.json] (--out DIR | --name NAME)` the model card
author's own HeliumLM checkpoints. Every importer validates its bundle and scores it on the reference text
(engine.bundles.reference), then writes it whole; `--force` replaces an earlier bundle or export (never a folder
of other files).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from helium_tui.errors import fail, user_errors
from helium_tui.safe_text import terminal_safe

import_app = typer.Typer(help="Import models from other formats as Helium bundles.", no_args_is_help=True)

OutOption = Annotated[Path | None, typer.Option(help="Bundle directory to create (absent or empty).")]
NameOption = Annotated[
    str | None, typer.Option(help="Install under this name in the user models dir (use with --model NAME).")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace an existing bundle (--out) or installed model (--name).")
]


def run_import(what: str, build: Callable[[Path], Path], out: Path | None, name: str | None, force: bool) -> None:
    """Build a bundle with build(new_dir) at --out, or install it as --name; print a one-line summary.

    The bundle is built and validated (opened as `helium tell` would) in a hidden temporary directory, and
    only then renamed into place: a bundle that would not load never appears, under --out or --name.
    """
    if (out is None) == (name is None):
        raise fail("give exactly one of --out DIR or --name NAME")
    with user_errors():
        from engine.bundles.info import read_config
        from engine.bundles.install import check_install_target, installed_path, validate_bundle
        from engine.bundles.reference import arrival_note, record
        from engine.errors import BundleError
        from engine.files import WriteError, atomic_directory
        from engine.formats.export_checks import check_parent_writable
        from engine.targets import DIR_KINDS, check_target

        if name is None:  # checked before any work: nothing is downloaded or converted for a refused target
            target, replace = out, check_target(out, force, DIR_KINDS)
            check_parent_writable(out)
        else:
            target = installed_path(name)
            replace = check_install_target(target, force)

        def stage(tmp: Path) -> None:
            staged = tmp / "bundle"
            try:
                built = build(staged)
            except WriteError as exc:
                if exc.path.is_relative_to(staged):  # name the file as it will be named: tmp/bundle/x is tmp/x
                    exc.path = tmp / exc.path.relative_to(staged)
                raise
            try:
                validate_bundle(built)
            except BundleError as exc:  # the converted bundle names no file the user has: say what failed
                detail = str(exc).replace(f"{built}{os.sep}", "")
                raise BundleError(f"{what}: not imported, the bundle it converts to would not load ({detail})") from None
            record(built)  # its bits per byte on the reference text, before the bundle is moved into place
            for path in built.iterdir():
                path.rename(tmp / path.name)
            built.rmdir()

        path = atomic_directory(target, stage, force=replace)
        config, _ = read_config(path)
    window = f", window {config.sliding_window}" if config.sliding_window else ""
    shown = terminal_safe(f"{path} (use --model {name or path})")
    print(
        f"imported {terminal_safe(what)}: {config.parameters:,} parameters, vocab {config.vocab_size}{window}, "
        f"context {config.context_length} -> {shown}"
    )
    print(terminal_safe(arrival_note(path)))


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
    out: OutOption = None,
    name: NameOption = None,
    force: ForceOption = False,
) -> None:
    """Convert MODEL_BIN + --tokenizer into a Helium bundle and print a one-line summary."""

    def build(target: Path) -> Path:
        from engine.formats.llama2c import import_llama2c

        return import_llama2c(model_bin, tokenizer, target)

    run_import(model_bin.name, build, out, name, force)


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
    out: OutOption = None,
    name: NameOption = None,
    force: ForceOption = False,
) -> None:
    """Convert a Hugging Face Llama model into a Helium bundle and print a one-line summary."""

    def build(target: Path) -> Path:
        from engine.formats.hf import import_hf
        from engine.hub.client import download_from_hub

        local = Path(source).expanduser()
        if not local.is_dir():
            if source.count("/") != 1 or source.startswith((".", "/", "~")):
                raise ValueError(f"{source}: no such directory (or give a Hub repo id such as user/name)")
            local = download_from_hub(source)
        return import_hf(local, target, origin=source)

    run_import(source, build, out, name, force)


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
    out: OutOption = None,
    name: NameOption = None,
    force: ForceOption = False,
) -> None:
    """Convert CHECKPOINT + --tokenizer (+ --config) into a Helium bundle and print a one-line summary."""

    def build(target: Path) -> Path:
        from engine.formats.heliumlm import import_heliumlm

        return import_heliumlm(checkpoint, tokenizer, target, config)

    run_import(checkpoint.name, build, out, name, force)
