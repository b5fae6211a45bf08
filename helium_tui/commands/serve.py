"""`helium serve`: the model over HTTP (OpenAI- and Ollama-compatible); helium_server loads only when it runs."""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Annotated

import typer

from engine.devices import DEVICE_CHOICES, DTYPE_CHOICES
from engine.generation.threads import THREADS_HELP
from helium_tui.errors import fail, user_errors

MAX_BATCH = 64


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    model: Annotated[str, typer.Option(help="Model bundle: a path or an installed name.")] = "",
    host: Annotated[str, typer.Option(help="Address to listen on (other than loopback needs --api-key or --no-auth).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 11435,
    api_key: Annotated[str, typer.Option(help="Require 'Authorization: Bearer KEY' on every request.")] = "",
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Allow a non-loopback --host without an API key.")] = False,
    max_batch: Annotated[int, typer.Option(help="Most stories decoded at once (more wait in a queue).")] = 8,
    device: Annotated[str, typer.Option(help=f"{DEVICE_CHOICES}.")] = "auto",
    dtype: Annotated[str, typer.Option(help=f"{DTYPE_CHOICES}.")] = "auto",
    quantize: Annotated[str, typer.Option(help="Weights of every model it loads: int8, int4, none, or auto (as each bundle stores them).")] = "auto",
    threads: Annotated[int | None, typer.Option(help=THREADS_HELP)] = None,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="Accepted as by `tell`; the batched decode step runs eagerly for now, so it has no effect yet.")] = False,
    studio: Annotated[bool, typer.Option("--studio", help="Serve the story studio to a web browser instead of the API.")] = False,
    one_model: Annotated[bool, typer.Option("--one-model", help="Answer only for --model, not for every installed model by name.")] = False,
    memory_budget: Annotated[str, typer.Option(help="Memory the loaded models may hold together, e.g. 2GiB; past it the least recently used idle model is unloaded. auto: a quarter of this machine's memory.")] = "auto",
) -> None:
    """Serve models over HTTP (the help is cli.py's): --model is loaded at start; a request naming another installed
    model loads it on first use (as Ollama does)."""
    if studio:
        serve_studio(model, host, port, bool(api_key), no_auth)
        return
    if not 1 <= port <= 65535:
        raise fail(f"--port must be from 1 to 65535, got {port}")
    if not 1 <= max_batch <= MAX_BATCH:
        raise fail(f"--max-batch must be from 1 to {MAX_BATCH}, got {max_batch}")
    if not is_loopback(host) and not api_key and not no_auth:
        raise fail(f"--host {host} is reachable from other machines: give --api-key KEY, or --no-auth to serve openly")
    budget = read_budget(memory_budget)
    with user_errors():
        from engine.generation.session import open_session
        from engine.model.quant import quantize_option

        # the batched step is eager: compile=False keeps the eager-only fast paths (prepacked bf16 linears)
        session = open_session(model or None, device=device, dtype=dtype, compile=False,
                               quantize=quantize_option(quantize), threads=threads)  # fmt: skip
        if compile:
            print("helium: --compile has no effect on the batched server yet; decoding eagerly", file=sys.stderr)
        from helium_server.app import serve as run_server
        from helium_server.models import Loader

        loader = Loader(device, dtype, quantize_option(quantize), threads)
        run_server(session, host, port, max_batch, api_key or None, loopback=is_loopback(host) and not api_key,
                   others=not one_model, loader=loader, budget=budget)  # fmt: skip


def read_budget(text: str) -> int:
    """--memory-budget in bytes: a size ('2GiB'), or auto: a quarter of the machine's memory (1 GiB where unknown)."""
    from engine.humanize import parse_bytes

    if text != "auto":
        try:
            return parse_bytes(text)
        except ValueError as exc:
            raise fail(f"--memory-budget: {exc}") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (AttributeError, ValueError, OSError):
        return 1 << 30


def serve_studio(model: str, host: str, port: int, api_key: bool, no_auth: bool) -> None:
    """The Textual studio in a browser through textual-serve: each browser tab runs its own `helium` studio."""
    if not 1 <= port <= 65535:
        raise fail(f"--port must be from 1 to 65535, got {port}")
    if api_key:
        raise fail("the browser studio has no API key check: serve it on loopback, or with --no-auth")
    if not is_loopback(host) and not no_auth:
        raise fail(f"--host {host} would give other machines the whole studio (files, training): add --no-auth to do so")
    try:
        from textual_serve.server import Server
    except ImportError:
        raise fail("the browser studio needs textual-serve: pip install textual-serve") from None
    import shlex

    command = shlex.join([sys.executable, "-m", "helium_tui.cli", *(["--model", model] if model else [])])
    shown = f"[{host}]" if ":" in host else host
    print(f"helium: serving the studio on http://{shown}:{port} (one studio per browser tab); Ctrl-C stops",
          file=sys.stderr, flush=True)  # fmt: skip
    Server(command, host=host, port=port, title="Helium").serve()
