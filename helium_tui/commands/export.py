"""`helium export gguf|hf`: a Helium model as one GGUF file (llama.cpp, Ollama) or a transformers directory.

`--push REPO` uploads the transformers directory to the Hugging Face Hub (token from the environment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helium_tui.errors import fail, user_errors
from helium_tui.safe_text import terminal_safe

export_app = typer.Typer(
    help="Export a model for other tools: GGUF (llama.cpp, Ollama) or the Hugging Face layout (transformers).",
    no_args_is_help=True,
)
INTEROP_HINT = "pip install 'helium-studio[interop]'"
ModelArg = Annotated[str, typer.Argument(metavar="MODEL", help="Model bundle: a path or an installed name.")]
Force = Annotated[bool, typer.Option(help="Replace an existing output.")]


def _load(model: str):
    """The bundle for MODEL in float32 on the CPU (every stored dtype converts to it exactly)."""
    from engine.bundles.bundle import load_bundle
    from engine.bundles.registry import resolve_model

    return load_bundle(resolve_model(model))


def _require(module: str) -> None:
    """A one-line error naming the missing package instead of an ImportError."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise fail(f"the {module!r} package is needed for this export: {INTEROP_HINT}")


@export_app.command("gguf", help="Write one GGUF file that llama.cpp and Ollama run.")
def gguf_cmd(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="The .gguf file to write.", show_default=False)],
    dtype: Annotated[
        str, typer.Option(help="auto (as the bundle stores it), f32, f16, bf16, q8_0 (8-bit, ~4x smaller than f32) or q4_0 (4-bit, Helium's int4).")
    ] = "auto",
    force: Force = False,
) -> None:
    """Export MODEL as a GGUF file and print how to run it."""
    _require("gguf")
    with user_errors():
        from engine.formats.gguf import GGUF_DTYPES, check_output, export_gguf, resolve_dtype

        if dtype not in GGUF_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (use {', '.join(GGUF_DTYPES)})")
        check_output(out, force)
        bundle = _load(model)
        chosen = resolve_dtype(dtype, bundle)
        path = export_gguf(bundle, out, chosen, force=force)
    size = path.stat().st_size / 1e6
    name, shown = terminal_safe(bundle.name), terminal_safe(str(path))
    print(f"exported {name} ({bundle.model.num_params():,} parameters, {chosen}) -> {shown} ({size:.1f} MB)")
    print(f'run it: llama-completion -m {shown} -p "Once upon a time" -n 200   (Ollama: docs/models.md, "Taking a Helium model elsewhere")')


@export_app.command("hf", help="Write a transformers LlamaForCausalLM directory (optionally push it to the Hub).")
def hf_cmd(
    model: ModelArg,
    out: Annotated[Path, typer.Option(help="The directory to write (absent or empty).", show_default=False)],
    dtype: Annotated[
        str, typer.Option(help="auto (as the bundle stores it), float32, bfloat16 or float16.")
    ] = "auto",
    push: Annotated[
        str | None,
        typer.Option(metavar="REPO", help="Upload to this Hub repo (user/name); the token comes from HF_TOKEN."),
    ] = None,
    force: Force = False,
) -> None:
    """Export MODEL in the Hugging Face layout, then push it when asked."""
    with user_errors():
        from engine.formats.hf import HF_DTYPES, check_out_dir, export_hf
        from engine.hub.client import check_token, push_to_hub

        if dtype != "auto" and dtype not in HF_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (use auto, {', '.join(HF_DTYPES)})")
        check_out_dir(out, force)
        if push is not None:
            check_token()
        bundle = _load(model)
        path = export_hf(bundle, out, dtype, force=force, repo=push)
    shown = terminal_safe(str(path))
    print(f"exported {terminal_safe(bundle.name)} ({bundle.model.num_params():,} parameters) -> {shown}")
    if push is None:
        print(f'load it: AutoModelForCausalLM.from_pretrained("{shown}")')
        return
    with user_errors():
        url = push_to_hub(path, push)
    print(f"pushed to {terminal_safe(str(url))}")
