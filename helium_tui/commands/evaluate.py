"""`helium eval`: a model's cross-entropy on a text file (nats/token and bits per UTF-8 byte), or with --stories
the quality of its seeded stories under sampling settings (engine.generation.story_quality)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engine.devices import DEVICE_CHOICES
from engine.generation.threads import THREADS_HELP
from engine.humanize import plural
from helium_tui.errors import user_errors


def eval_cmd(
    model: Annotated[
        str, typer.Option(help="Model bundle: a path or an installed name (default model if empty).")
    ] = "",
    data: Annotated[
        Path | None, typer.Option(help="Text file: <|endoftext|>-separated stories, or one stream.")
    ] = None,
    stories: Annotated[
        int,
        typer.Option(
            help="Instead of --data: tell N seeded stories per setting from fixed prompts that name a character "
            "and report name kept, invented names, repeated 4-grams, loops, stories that end, length."
        ),
    ] = 0,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="With --stories: one setting to measure, KEY=VALUE[,KEY=VALUE...] over the model's defaults "
            "(e.g. temperature=0.5,repeat_last_n=64); repeat --set for a grid. None: the model's defaults.",
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="With --stories: most tokens a story.")] = 300,
    seed: Annotated[int, typer.Option(help="With --stories: the first story's seed (story i: seed + i).")] = 1,
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES}.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32 (default, exact) or bfloat16.")] = "float32",
    quantize: Annotated[
        str, typer.Option(help="Weights: int8, int4 (Q4_0), none, or auto (as the bundle stores them).")
    ] = "auto",
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a model on a text file: nats per token and bits per UTF-8 byte (tokenizer-independent); or, with
    --stories, the stories it tells."""
    if stories:
        with user_errors():
            if data is not None:
                raise ValueError("--data and --stories measure different things: give one")
            story_quality(model, stories, setting or [""], max_tokens, seed, device, dtype, quantize, threads,
                          as_json)  # fmt: skip
        return
    with user_errors():
        if data is None:
            raise ValueError("give --data FILE (a text to score) or --stories N (stories to tell and measure)")
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        from engine.generation.evaluate import evaluate_file
        from engine.generation.session import open_session
        from engine.model.quant import quantize_option

        if not data.is_file():
            raise ValueError(f"{data}: no such file" if not data.exists() else f"{data}: not a regular file")
        quant = quantize_option(quantize)
        session = open_session(model or None, device=device, dtype=dtype, quantize=quant, threads=threads)
        columns = [TextColumn("scoring"), BarColumn(), DownloadColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:  # stdout stays clean
            task = bar.add_task("eval", total=data.stat().st_size)
            result = evaluate_file(
                session.bundle.model,
                session.bundle.tokenizer,
                data,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    out = {"model": session.name, "data": str(data), "quantize": session.quantize, **result.to_dict()}
    if as_json:
        print(json.dumps(out))
        return
    weights = f" ({session.quantize} weights)" if session.quantize in ("int8", "int4") else ""
    print(
        f"{session.name}{weights} on {data.name}: {result.nats_per_token:.4f} nats/token, "
        f"{result.bits_per_byte:.4f} bits/byte ({plural(result.tokens, 'token', thousands=True)}, "
        f"{plural(result.bytes, 'byte', thousands=True)}, {plural(result.documents, 'document', thousands=True)})"
    )


YES, NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")  # a --set KEY=VALUE for a yes-or-no setting


def parse_setting(text: str) -> dict[str, object]:
    """KEY=VALUE[,KEY=VALUE...] as sampling settings, each parsed by its kind (ValueError naming a bad one)."""
    from engine.generation.sampling import MODEL_SETTINGS

    out: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        kind = MODEL_SETTINGS.get(key)
        if not sep or kind is None:
            raise ValueError(f"--set {part!r}: want KEY=VALUE with KEY one of {', '.join(MODEL_SETTINGS)}")
        word = value.strip().lower()
        if kind is bool and word not in YES + NO:
            raise ValueError(f"--set {part!r}: {value!r} is not true or false")
        try:
            out[key] = word in YES if kind is bool else kind(value)
        except ValueError:
            raise ValueError(f"--set {part!r}: {value!r} is not {kind.__name__}") from None
    return out


def story_quality(
    model: str, count: int, settings: list[str], max_tokens: int, seed: int, device: str, dtype: str,
    quantize: str, threads: int | None, as_json: bool,
) -> None:  # fmt: skip
    """Tell count stories per setting and print one row of measures per setting (or JSON)."""
    from engine.checks import check_seed
    from engine.generation.sampling import settle
    from engine.generation.session import open_session
    from engine.generation.story_quality import draw, score
    from engine.model.quant import quantize_option

    if not 1 <= count <= 10_000:
        raise ValueError(f"--stories must be from 1 to 10,000, got {count}")
    check_seed(seed)
    chosen = [parse_setting(s) for s in settings]
    for c in chosen:
        settle(max_new_tokens=max_tokens, **c)  # bad values fail before the model loads
    session = open_session(model or None, device=device, dtype=dtype, quantize=quantize_option(quantize),
                           threads=threads)  # fmt: skip
    rows = []
    for text, c in zip(settings, chosen, strict=True):
        params = settle(session.sampling, max_new_tokens=max_tokens, **c)
        result = score(draw(session.generator, params, count, seed))
        rows.append({"setting": text or "model defaults", "params": _shown(params), **result})
        if not as_json:
            _print_row(rows[-1], header=len(rows) == 1)
    if as_json:
        print(json.dumps({"model": session.name, "stories_per_setting": count, "first_seed": seed, "rows": rows}))


def _shown(params: object) -> str:
    """The settings that shape a story, short: 'T 0.8 top-p 0.95 rep 1.1 last 64 spare-prompt'."""
    p = params
    parts = [f"T {p.temperature:g}", f"top-k {p.top_k}" if p.top_k else "", f"top-p {p.top_p:g}",  # type: ignore[attr-defined]
             f"rep {p.repetition_penalty:g}", f"freq {p.frequency_penalty:g}" if p.frequency_penalty else "",  # type: ignore[attr-defined]
             f"pres {p.presence_penalty:g}" if p.presence_penalty else "",  # type: ignore[attr-defined]
             f"last {p.repeat_last_n}" if p.repeat_last_n >= 0 else "",  # type: ignore[attr-defined]
             f"names +{p.name_bonus:g}" if p.name_bonus else "",  # type: ignore[attr-defined]
             "" if p.penalize_prompt else "spare-prompt"]  # type: ignore[attr-defined]  # fmt: skip
    return " ".join(x for x in parts if x)


def _print_row(row: dict, header: bool) -> None:
    """One setting's measures, the setting last and whole (a cut one could hide what told two rows apart)."""
    if header:
        print(f"{'name kept':>9} {'new names':>9} {'rep 4-gr':>8} {'loops':>5} {'ended':>6} {'words':>6}  setting")
    print(f"{row['name_kept_pct']:>8.0f}% {row['invented_names']:>9.2f} {row['repeated_4grams_pct']:>7.1f}% "
          f"{row['loops']:>5} {row['ended_pct']:>5.0f}% {row['mean_words']:>6.0f}  {row['params']}", flush=True)  # fmt: skip
