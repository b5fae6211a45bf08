"""The server: both protocols' routes behind a Bearer check, errors in each protocol's shape, run by uvicorn.

`build_app(session, ...)` is the ASGI app (tests run it on a loopback port); `serve(...)` runs it until Ctrl-C
or SIGTERM, printing where it listens first. `session` is the model served from the start; with `others` every
installed model answers to its name too (`helium_server.models`). No request can make it answer 500 with a traceback: expected
problems are 4xx, anything else one logged line and a JSON 500.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import ipaddress
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.generation.session import Session
from engine.humanize import human_bytes
from helium_server.fields import ApiError
from helium_server.models import Loader, Models
from helium_server.ollama_api import Ollama
from helium_server.openai_api import OpenAI, error_body

log = logging.getLogger("helium.serve")
RETRY_AFTER_S = 1


def error_response(path: str, status: int, message: str, param: str | None = None, code: str | None = None) -> Response:
    """An error in the shape of the protocol the path belongs to (Ollama's under /api, else OpenAI's)."""
    body = {"error": message} if path.startswith("/api") else error_body(status, message, param, code)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status, headers=headers)


def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """The handler, with its ApiErrors answered in shape and anything unexpected a logged line and a 500."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(request.url.path, exc.status, exc.message, exc.param, exc.code)
        except Exception as exc:  # a bug: one line in the log, never a traceback to the client
            log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
            return error_response(request.url.path, 500, "internal error")

    return run


class BearerAuth:
    """Every route but GET / asks for `Authorization: Bearer KEY` when the server has a key."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key and scope["type"] == "http" and scope["path"] != "/":
            given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode("latin-1"), f"Bearer {self.key}".encode()):
                response = error_response(scope["path"], 401, "a valid API key is required (Authorization: Bearer KEY)")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)




class LocalCORS(CORSMiddleware):
    """Starlette's CORS, but a refused preflight (another site's page) is a JSON error in the protocol's shape."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                if response.status_code == 400:
                    detail = bytes(response.body).decode().lower()
                    response = error_response(scope["path"], 400, f"a web page may not call this server: {detail}")
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def is_loopback_name(name: str) -> bool:
    """localhost, or a loopback address (127.0.0.0/8, ::1, bracketed or not)."""
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


# browser pages served from this machine may call the API (as Ollama allows by default); other origins may not
LOCAL_ORIGINS = r"(https?|app|tauri)://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?|file://.*|null"
# the headers such pages may send: Ollama's list, with those the openai JS client adds (x-stainless-*)
ALLOWED_HEADERS = ["authorization", "content-type", "user-agent", "accept", "x-requested-with", "openai-beta"] + [
    f"x-stainless-{name}" for name in ("arch", "async", "custom-poll-interval", "helper-method", "lang", "os",
                                       "package-version", "poll-helper", "retry-count", "runtime", "runtime-version",
                                       "timeout")]  # fmt: skip


class LoopbackHosts:
    """A loopback server answers only requests addressed to a loopback name: a web page whose domain is
    re-pointed at 127.0.0.1 (DNS rebinding) sends its own name in Host and gets 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not is_loopback_name(name):
                await error_response(scope["path"], 403, "this server answers only requests to localhost")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(
    session: Session, max_batch: int = 8, max_queue: int | None = None, api_key: str | None = None,
    loopback: bool = True, others: bool = False, loader: Loader | None = None, budget: int | None = None,
) -> Starlette:  # fmt: skip
    """The ASGI app serving session's model (and, with others, every installed one by name, opened by loader,
    within budget bytes); the decode threads start and stop with the app's lifespan.

    loopback: requests must name a loopback host (a loopback server without a key: the key protects the rest,
    and a reverse proxy in front may pass on its own public Host)."""
    models = Models(session, max_batch, max_queue or 4 * max_batch, loader, others, budget)
    routes = [Route(r.path, guarded(r.endpoint), methods=r.methods) for r in OpenAI(models).routes() + Ollama(models).routes()]

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        message = "method not allowed" if status == 405 else f"no route {request.url.path}"
        return error_response(request.url.path, status, message)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        models.start()
        yield
        models.stop()

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found}, lifespan=lifespan)
    app.state.models = models
    app.state.scheduler = models.loaded[session.name].scheduler  # the first model's
    app.add_middleware(BearerAuth, key=api_key)
    if loopback:
        app.add_middleware(LoopbackHosts)
    app.add_middleware(LocalCORS, allow_origin_regex=LOCAL_ORIGINS, allow_methods=["GET", "POST", "HEAD"],
                       allow_headers=ALLOWED_HEADERS)  # fmt: skip
    return app


class StoppingServer(uvicorn.Server):
    """uvicorn's server, but Ctrl-C or SIGTERM is a clean stop (exit 0), not re-raised once it has stopped;
    a second Ctrl-C stops at once. The stories being told end at once (their requests answered 503), rather
    than being cut off without an answer when the graceful shutdown's time is up."""

    def __init__(self, config: uvicorn.Config, models: Models) -> None:
        super().__init__(config)
        self.models = models

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
        self.models.halt()


def serve(
    session: Session, host: str, port: int, max_batch: int, api_key: str | None, loopback: bool,
    others: bool = False, loader: Loader | None = None, budget: int | None = None,
) -> None:  # fmt: skip
    """Serve until Ctrl-C or SIGTERM (uvicorn's handlers), saying where first."""
    app = build_app(session, max_batch=max_batch, api_key=api_key, loopback=loopback, others=others, loader=loader,
                    budget=budget)  # fmt: skip
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=3, lifespan="on")  # fmt: skip
    server = StoppingServer(config, app.state.models)
    shown = f"[{host}]" if ":" in host else host
    auth = "API key required" if api_key else "no API key"
    more = ""
    if others:
        limit = f"within {human_bytes(budget)}" if budget else "no memory limit"
        more = f" and any installed model by name, loaded on first use ({limit})"
    print(f"helium: serving {session.name} ({session.device}, {session.precision}, batch {max_batch}, {auth}){more} "
          f"on http://{shown}:{port} (OpenAI: /v1, Ollama: /api); Ctrl-C stops", file=sys.stderr, flush=True)  # fmt: skip
    server.run()
    print("helium: server stopped", file=sys.stderr, flush=True)
