"""`helium tell PROMPT`: stream one story to stdout."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from engine.devices import DEVICE_CHOICES, DTYPE_CHOICES
from engine.generation.sampling import MODEL_SETTINGS, SamplingParams, settle
from engine.generation.threads import THREADS_HELP
from helium_tui.errors import fail, user_errors
from helium_tui.safe_text import terminal_safe


def read_prompt(prompt: str) -> str:
    """The prompt argument, or stdin's text for '-'; ValueError when either is not valid UTF-8."""
    if prompt == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8").rstrip("\n")
        except UnicodeDecodeError as exc:
            raise ValueError(f"the prompt on stdin is not UTF-8 text (byte {exc.start})") from None
    try:
        prompt.encode("utf-8")  # argv bytes that were not UTF-8 arrive as lone surrogates
    except UnicodeEncodeError:
        raise ValueError("the prompt is not UTF-8 text (check the terminal's encoding)") from None
    return prompt


DEFAULTS = SamplingParams()


def _d(name: str) -> str:
    """A sampling option's help tail: the model's recommended value wins over the engine's default."""
    value = getattr(DEFAULTS, name)
    shown = str(value).lower() if isinstance(value, bool) else f"{value:g}"
    return f". Default: the model's, else {shown}."


def tell(
    prompt: Annotated[
        str, typer.Argument(help="Story opening; '-' reads it from stdin.")
    ] = "Once upon a time",
    model: Annotated[str, typer.Option(help="Model bundle: a path or an installed name.")] = "",
    max_tokens: Annotated[int | None, typer.Option(help=f"Most tokens to generate{_d('max_new_tokens')}")] = None,
    temperature: Annotated[float | None, typer.Option(help=f"Randomness; 0 = greedy{_d('temperature')}")] = None,
    top_k: Annotated[int | None, typer.Option(help=f"Keep the k likeliest tokens (0 = off){_d('top_k')}")] = None,
    top_p: Annotated[float | None, typer.Option(help=f"Nucleus sampling mass in (0, 1]{_d('top_p')}")] = None,
    repetition_penalty: Annotated[
        float | None, typer.Option(help=f"Penalty on tokens already seen (1 = off){_d('repetition_penalty')}")
    ] = None,
    frequency_penalty: Annotated[
        float | None,
        typer.Option(help=f"Minus this × a token's count so far, -2 to 2 (0 = off){_d('frequency_penalty')}"),
    ] = None,
    presence_penalty: Annotated[
        float | None,
        typer.Option(help=f"Minus this once a token has occurred, -2 to 2 (0 = off){_d('presence_penalty')}"),
    ] = None,
    repeat_last_n: Annotated[
        int | None,
        typer.Option(help=f"The penalties look at the last n tokens (-1 = the context, 0 = off){_d('repeat_last_n')}"),
    ] = None,
    penalize_prompt: Annotated[
        bool | None,
        typer.Option(
            "--penalize-prompt/--spare-prompt",
            help=f"Whether the prompt's tokens count for the penalties (spare it: its names may come back)"
            f"{_d('penalize_prompt')}",
            show_default=False,
        ),
    ] = None,
    name_bonus: Annotated[
        float | None,
        typer.Option(
            help="Keep the story's characters: names (one capitalised word, not a common one) are never penalized "
            f"and those already in the text get this added to their logits, 0 to 10 (0 = off){_d('name_bonus')}"
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for a reproducible story.")] = None,
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES}.")] = "auto",
    dtype: Annotated[str, typer.Option(help=f"{DTYPE_CHOICES}.")] = "auto",
    compile: Annotated[
        bool,
        typer.Option("--compile/--no-compile", help="torch.compile the decode step (slow to start on CPU)."),
    ] = False,
    quantize: Annotated[
        str,
        typer.Option(
            help="Weights: int8 (weight-only, faster on CPUs), int4 (Q4_0 blocks, smallest), none, or auto (as the "
            "bundle stores them)."
        ),
    ] = "auto",
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object at the end instead of streaming.")
    ] = False,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Write the model's text exactly, control characters included (the default on a terminal "
            "replaces them with �, so a story can never retitle, clear or script your terminal).",
        ),
    ] = False,
) -> None:
    """Tell a story: stream the continuation of PROMPT to stdout."""
    with user_errors():
        prompt = read_prompt(prompt)
        chosen = dict(
            max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, repeat_last_n=repeat_last_n, penalize_prompt=penalize_prompt,
            name_bonus=name_bonus, seed=seed,
        )  # fmt: skip
        settle(**chosen)  # bad values fail before the model loads
        from engine.generation.session import open_session
        from engine.model.quant import quantize_option

        session = open_session(
            model or None, device=device, dtype=dtype, compile=compile, quantize=quantize_option(quantize),
            threads=threads,
        )  # fmt: skip
        params = settle(session.sampling, **chosen)
        compile_s = compile_first(session)
        stream = session.generator.stream(prompt, params)
        show = (lambda text: text) if raw or not sys.stdout.isatty() else terminal_safe
        if not as_json:
            sys.stdout.write(show(prompt))
            sys.stdout.flush()
        try:
            for delta in stream:
                if not as_json:
                    sys.stdout.write(show(delta.text))
                    sys.stdout.flush()
        except KeyboardInterrupt:
            if not as_json:
                sys.stdout.write("\n")  # the error starts its own line, not the story's last one
                sys.stdout.flush()
            raise fail("interrupted", code=130) from None
    result = stream.result
    if as_json:
        print(
            json.dumps(
                {
                    "text": result.text,
                    "prompt": prompt,
                    "prompt_tokens": result.prompt_tokens,
                    "generated_tokens": result.generated_tokens,
                    "finish_reason": result.finish_reason,
                    "sampling": {name: getattr(params, name) for name in MODEL_SETTINGS} | {"seed": params.seed},
                    "ttft_s": round(result.ttft_s, 4),
                    "tokens_per_s": round(result.tokens_per_s, 2),
                    "model": session.name,
                    "device": str(session.device),
                    "dtype": session.dtype_name,
                    "quantize": session.quantize,
                    "threads": session.threads,
                    "compiled": session.compile and session.generator.compile_failed is None,
                    "compile_s": round(compile_s, 2),  # before the story: not in ttft_s, not in tokens_per_s
                },
                ensure_ascii=False,
            )
        )
    else:
        sys.stdout.write("\n")
        if session.compile:  # not where --compile does nothing (the native runtime)
            print(f"helium: decoded {result.tokens_per_s:,.0f} tok/s (compiling took {compile_s:.1f} s before)",
                  file=sys.stderr)  # fmt: skip


def compile_first(session) -> float:
    """With --compile: compile the decode step before the story, saying so on stderr; its seconds (0 without).
    Where the native runtime decodes, say that --compile does nothing there."""
    if session.compile_note:
        print(f"helium: note: {session.compile_note}", file=sys.stderr, flush=True)
    if not session.compile:
        return 0.0
    import os

    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # engine.generation.runtime.use_compile_cache set it
    print(
        f"helium: compiling the decode step (kept in {cache} for the next run)...",
        file=sys.stderr,
        flush=True,
    )
    seconds = session.compile_now()
    failed = session.generator.compile_failed
    print(f"helium: compile failed, decoding eagerly: {failed}" if failed else f"helium: compiled in {seconds:.1f} s",
          file=sys.stderr, flush=True)  # fmt: skip
    return seconds
