"""`helium data download|prepare`: fetch TinyStories and turn text into token shards for training.

Heavy work lives in `trainer.download` and `trainer.prepare`; this module only parses options and shows progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.errors import first_line
from helium_tui.errors import fail, user_errors
from helium_tui.safe_text import terminal_safe

data_app = typer.Typer(
    name="data",
    help="Download TinyStories and prepare token shards for `helium train`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@data_app.command(help="Download TinyStories (train + valid text) from the Hugging Face Hub.")
def download(
    variant: Annotated[str, typer.Option(help="v2 (GPT-4 stories, ~2.2 GB) or v1 (~1.9 GB).")] = "v2",
    out: Annotated[
        Path | None, typer.Option(help="Directory for the files (default: <user data dir>/data/tinystories).")
    ] = None,
) -> None:
    """Fetch the variant's train and valid files (resumes partial downloads)."""
    from trainer.download import download as fetch

    try:  # not user_errors(): it imports torch, and offline runs must fail fast
        paths = fetch(variant, out)
    except (ValueError, OSError) as exc:
        raise fail(first_line(exc, 10_000)) from None
    train, valid = paths
    print(terminal_safe(f"downloaded {train} and {valid}"))
    print(terminal_safe(f"next: helium data prepare {train} --val {valid} --out DIR"))


@data_app.command(
    help="Normalize stories, train a BPE tokenizer (or use a model's), write uint16 token shards + manifest.json."
)
def prepare(
    files: Annotated[
        list[Path],
        typer.Argument(help="Story files: <|endoftext|>-separated, blank-line-separated or .jsonl."),
    ],
    out: Annotated[
        Path, typer.Option(help="Output directory (tokenizer.json, *.bin shards, manifest.json).")
    ],
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size to train (257..65535).")] = 4096,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL_OR_JSON",
            help="Use a model's tokenizer instead of training one (an installed name or a bundle dir; stories "
            "get the model's own start/end tokens, so the data fits it for `helium train --init-from`), "
            "or a tokenizer.json with <|endoftext|>.",
        ),
    ] = None,
    val: Annotated[
        Path | None, typer.Option(help="Validation file (without story markers it is read as one document).")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(help="Share of stories held out for validation when no --val.")
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the hash-based train/val split.")] = 0,
    workers: Annotated[int, typer.Option(help="Encoding threads (0 = all cores).")] = 0,
    format: Annotated[
        str, typer.Option("--format", help="Input format: auto, eot, blank, jsonl or stream.")
    ] = "auto",
    val_format: Annotated[
        str, typer.Option(help="Format of --val: auto (eot, jsonl or stream), eot, blank, jsonl, stream.")
    ] = "auto",
    shard_tokens: Annotated[
        int, typer.Option(help="Tokens per shard file (a shard ends at a story boundary).")
    ] = 1 << 26,
) -> None:
    """Prepare OUT from FILES; prints "up to date" when nothing changed since the last run."""
    from rich.console import Console

    from trainer.prepare import PrepareOptions
    from trainer.prepare import prepare as run_prepare

    opts = PrepareOptions(
        vocab_size=vocab_size,
        tokenizer=tokenizer,
        val=val,
        val_fraction=val_fraction,
        seed=seed,
        fmt=format,
        val_format=val_format,
        shard_tokens=shard_tokens,
        workers=workers,
    )
    with user_errors(), _progress(Console(stderr=True)) as progress:
        result = run_prepare(files, out, opts, progress)
    console = Console()
    if result.up_to_date:
        splits = result.manifest["splits"]
        console.print(
            f"{out}: up to date ({splits['train']['tokens']:,} train tokens, {splits['val']['tokens']:,} val tokens)"
        )
        return
    console.print(summary_line(result.manifest, out, result.seconds), soft_wrap=True, markup=False, highlight=False)
    console.print(summary_table(result.manifest))
    if not result.manifest["splits"]["val"]["stories"]:
        console.print(
            "note: no story was held out for validation (too few stories); training needs some: "
            "add more stories or give a --val FILE",
            soft_wrap=True, markup=False, highlight=False,
        )  # fmt: skip
    if result.manifest.get("tokenizer_model"):
        console.print(f"next: helium train --init-from {tokenizer} --data {out} --out RUN_DIR")


class _progress:
    """A rich Progress driven by `trainer.prepare`'s progress(stage, done, total) callback."""

    LABELS = {
        "hashing": "hashing inputs",
        "reading": "reading stories",
        "tokenizer": "training tokenizer",
        "encoding train": "encoding train",
        "encoding val": "encoding val",
    }

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,  # no bar debris in logs and pipes
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> _progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        """Create the stage's bar on first sight, set its total when given, advance it by done."""
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(self.LABELS.get(stage, stage), total=total)
        task = self.tasks[stage]
        if total is not None:
            self.bar.update(task, total=total)
        self.bar.advance(task, done)


def summary_line(manifest: dict, out: Path, seconds: float) -> str:
    """One line: where, how long, what was read and dropped, the vocabulary."""
    from engine.humanize import plural

    stats = manifest["stats"]
    return (
        f"prepared {terminal_safe(str(out))} in {seconds:.1f} s: read {plural(stats['stories_read'], 'story', 'stories', thousands=True)}, "
        f"dropped {stats['empty_dropped']:,} empty and {plural(stats['duplicates_dropped'], 'duplicate', thousands=True)}; "
        f"vocab {manifest['vocab_size']:,}"
    )


def summary_table(manifest: dict):
    """A rich table: stories, tokens, shards and bytes/token per split."""
    from rich.table import Table

    from trainer.prepare import bytes_per_token, markers_per_story

    table = Table()
    for column in ("split", "stories", "tokens", "shards", "bytes/token"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, split in manifest["splits"].items():
        bpt = bytes_per_token(split, markers_per_story(manifest))
        table.add_row(
            name,
            f"{split['stories']:,}",
            f"{split['tokens']:,}",
            str(len(split["shards"])),
            f"{bpt:.2f}" if bpt else "-",
        )
    return table
