"""`helium models`: list installed model bundles, install one by name, pull one from the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from helium_tui.errors import fail, user_errors
from helium_tui.safe_text import terminal_safe

models_app = typer.Typer(
    help="Model bundles: list the installed ones, install one by name, pull one from the Hugging Face Hub.",
    no_args_is_help=True,
)


@models_app.command("list")
def list_cmd(
    score: Annotated[
        bool,
        typer.Option(
            "--score",
            help="Measure bits per byte on the reference text for models that lack it (a few seconds each; models "
            "arrive measured); your installed models keep the number.",
        ),
    ] = False,
) -> None:
    """Bundles that `--model NAME` finds: the user models dir first, then the shipped ones; each with its bits per
    byte on one reference text (the same stories for every model, measured when the model arrived)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from engine.bundles.reference import REFERENCE_NAME, stored_score
    from engine.bundles.registry import list_models
    from engine.paths import user_models_dir
    from helium_tui.names import cut_apart

    def cell(value: object) -> Text:  # a name or path as plain text: no control sequences, no Rich markup
        return Text(terminal_safe(str(value)))

    models = list_models()
    names = cut_apart((terminal_safe(m.name) for m in models), NAME_WIDTH)
    table = Table(title=cell(f"installed models (user dir: {user_models_dir()})"),
                  caption=f"bits/byte: on {REFERENCE_NAME} (16 stories written for Helium; lower is better)"
                  + ("" if score else "; – : not measured yet (helium models list --score)"))  # fmt: skip
    table.add_column("name", no_wrap=True, min_width=max(map(len, names.values()), default=4))  # cut once
    for col in ("params", "vocab", "source", "bits/byte"):
        table.add_column(col, justify="right" if col != "source" else "left", no_wrap=True)
    table.add_column("path", overflow="fold")
    for m in models:
        bpb = stored_score(m.metadata)
        if bpb is None and score:
            bpb = _score(m)
        table.add_row(
            names[terminal_safe(m.name)], f"{m.parameters / 1e6:.2f}M", f"{m.vocab_size:,}", m.source,
            f"{bpb:.4f}" if bpb is not None else "–", cell(m.path),
        )  # fmt: skip
    Console().print(table)


NAME_WIDTH = 22  # `models list` cuts longer names with '…' (helium_tui.names), so the table fits 80 columns


def _score(model: object) -> float | None:
    """Measure a model on the reference text; a user-dir bundle keeps the number in its metadata.json."""
    import json

    from engine.bundles.info import METADATA
    from engine.bundles.reference import METADATA_KEY, measure
    from engine.files import atomic_write_text

    entry = measure(model.path)  # type: ignore[attr-defined]
    if model.source == "user":  # type: ignore[attr-defined]  # Helium's own models dir; shipped ones stay as shipped
        meta = {**model.metadata, METADATA_KEY: entry}  # type: ignore[attr-defined]
        try:
            atomic_write_text(model.path / METADATA, json.dumps(meta, indent=2) + "\n")  # type: ignore[attr-defined]
        except OSError:
            pass  # a read-only bundle: the number is still shown
    return entry["bits_per_byte"]


@models_app.command("install")
def install_cmd(
    source: Annotated[
        Path, typer.Argument(help="A bundle directory (e.g. RUN_DIR/bundle) or an installed name (helium-default).")
    ],
    name: Annotated[str, typer.Option(help="Name to install it under (`--model NAME`).")],
    dtype: Annotated[
        str,
        typer.Option(
            help="Weights dtype to store: keep, float32, bfloat16 (half the size), int8 (a quarter) or int4 (Q4_0 "
            "blocks, about a seventh)."
        ),
    ] = "keep",
    force: Annotated[bool, typer.Option(help="Replace an installed bundle of that name.")] = False,
) -> None:
    """Copy a bundle into the user models dir, optionally storing its weights in bfloat16, int8 or int4."""
    with user_errors():
        from engine.bundles.install import install_bundle
        from engine.bundles.reference import arrival_note
        from engine.bundles.registry import resolve_model

        name, path = install_bundle(resolve_model(str(source)), name, dtype=None if dtype == "keep" else dtype, force=force)
        note = arrival_note(path)
    print(terminal_safe(f"installed {source} as {name!r} -> {path}"))
    print(terminal_safe(note))


@models_app.command("pull")
def pull_cmd(
    name: Annotated[
        str | None,
        typer.Argument(help="Catalog model to download and install, e.g. stories15M.", show_default=False),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="Show the catalog: sizes and what is installed.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Download and install again even if it is installed.")] = False,
) -> None:
    """Download a TinyStories model from the Hugging Face Hub (HF_ENDPOINT), convert it and install it by name."""
    if list_:
        if name is not None:
            raise fail("give a model NAME or --list, not both")
        _print_catalog()
        return
    if name is None:
        raise fail("which model? give a NAME (`helium models pull --list` shows the catalog)")
    from rich.console import Console

    with user_errors():
        from engine.hub.catalog import get_entry, human_bytes
        from engine.hub.pull import pull

        entry = get_entry(name)
        console = Console(stderr=True)
        try:
            with _PullBar(console, f"{entry.name} ({human_bytes(entry.download_bytes)})") as bar:
                result = pull(entry, force=force, progress=bar)
        except KeyboardInterrupt:
            raise fail("interrupted; nothing was installed", code=130) from None
    if not result.pulled:
        print(terminal_safe(f"{result.name} is already installed at {result.path} (--force pulls it again)"))
        return
    from engine.bundles.reference import arrival_note

    done = f"pulled {result.name}: {entry.params:,} parameters -> {result.path} (use --model {result.name})"
    print(terminal_safe(done))
    print(terminal_safe(arrival_note(result.path)))


def _print_catalog() -> None:
    """The catalog as a table: name, parameters, context, download size, installed or not."""
    from rich.console import Console
    from rich.table import Table

    from engine.hub.catalog import CATALOG, human_bytes, is_installed

    table = Table(title="helium models pull NAME — TinyStories models on the Hugging Face Hub")
    for col in ("name", "params", "context", "download", "installed", "about"):
        table.add_column(col, justify="right" if col in ("params", "context", "download") else "left")
    for m in CATALOG.values():
        table.add_row(
            m.name, f"{m.params / 1e6:.1f}M" if m.params >= 1e6 else f"{m.params / 1e3:.0f}K", str(m.seq_len),
            human_bytes(m.download_bytes), "yes" if is_installed(m) else "no", m.about,
        )  # fmt: skip
    Console().print(table)


class _PullBar:
    """A rich progress bar fed with engine.hub.pull's PullProgress reports; off a terminal, one line per stage."""

    STAGES = {"convert": "converting", "install": "installing"}

    def __init__(self, console, label: str) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.label = label
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=console, disable=not console.is_terminal,
        )  # fmt: skip
        self.task = self.bar.add_task(f"downloading {label}", total=None)
        self.console = console
        self.stage = ""  # the last stage shown

    def __enter__(self) -> _PullBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, p) -> None:
        """Show one PullProgress: bytes while downloading, then the stage name."""
        words = "downloading" if p.stage == "download" else self.STAGES.get(p.stage, p.stage)
        if p.stage != self.stage and self.bar.disable:  # logs and pipes: no bar, a line per stage
            self.console.print(f"{words} {self.label}…", highlight=False)
        self.stage = p.stage
        if p.stage == "download":
            self.bar.update(self.task, completed=p.done, total=p.total)
        else:
            self.bar.update(self.task, description=f"{words} {self.label}")
