"""The Ollama-compatible API: /api/tags, /api/show, /api/ps, /api/version, /api/generate and /api/chat.

Streams NDJSON by default (one object a line, the last with `done: true` and the counts); `options` carries
temperature, top_k, top_p, repeat_penalty, seed, num_predict and stop. Errors are Ollama's `{"error": ...}`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.checks import MAX_SEED
from engine.generation.sampling import SamplingParams
from helium_server import fields as f
from helium_server.fields import ApiError
from helium_server.scheduler import End
from helium_server.service import Ask, Batch, Service
from helium_server.streaming import EventStream

VERSION = "0.6.0"  # the Ollama API version these routes follow
DONE = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop", "error": "stop"}


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def read_options(body: dict, model: dict | None = None) -> tuple[SamplingParams, tuple[str, ...]]:
    """Sampling settings and stop strings from a request's `options`; what it leaves out comes from the model's
    recommended settings (`model`, `Session.sampling`), else Helium's."""
    options = f.obj(body, "options")
    predict = f.whole(options, "num_predict", None, -2, f.MAX_TOKENS)
    max_tokens = None if predict is None or predict == 0 else predict
    if predict is not None and predict < 0:  # -1: until the story ends, -2: fill the context
        max_tokens = f.MAX_TOKENS
    seed = f.whole(options, "seed", None, -(1 << 62), MAX_SEED)
    params = f.settings(
        model,
        max_new_tokens=max_tokens,
        **f.knobs(options, {"repetition_penalty": "repeat_penalty"}),
        seed=seed if seed is None or seed >= 0 else None,  # Ollama's -1: a random seed
    )
    return params, f.stops(options)


class Ollama:
    """The /api routes over one Service."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.modified = now()

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root, methods=["GET", "HEAD"]),
            Route("/api/version", self.version, methods=["GET"]),
            Route("/api/tags", self.tags, methods=["GET"]),
            Route("/api/ps", self.ps, methods=["GET"]),
            Route("/api/show", self.show, methods=["POST"]),
            Route("/api/generate", self.generate, methods=["POST"]),
            Route("/api/chat", self.chat, methods=["POST"]),
        ]

    def _details(self) -> dict:
        session = self.service.session
        params = session.bundle.config.parameters
        size = f"{params / 1e6:.1f}M" if params < 1e9 else f"{params / 1e9:.1f}B"
        return {"parent_model": "", "format": "safetensors", "family": "helium", "families": ["helium"],
                "parameter_size": size, "quantization_level": session.quantize.upper() if session.quantize != "none"
                else session.dtype_name.upper()}  # fmt: skip

    def _entry(self) -> dict:
        session = self.service.session
        path = session.bundle.path
        weights = path / "model.safetensors" if path else None
        size = weights.stat().st_size if weights and weights.is_file() else 0
        return {"name": self.service.name, "model": self.service.name, "modified_at": self.modified, "size": size,
                "digest": "", "details": self._details()}  # fmt: skip

    async def root(self, request: Request) -> Response:
        return Response("Helium is running (Ollama-compatible API)", media_type="text/plain")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def tags(self, request: Request) -> Response:
        return JSONResponse({"models": [self._entry()]})

    async def ps(self, request: Request) -> Response:
        return JSONResponse({"models": [self._entry() | {"expires_at": "9999-12-31T00:00:00Z", "size_vram": 0}]})

    async def show(self, request: Request) -> Response:
        body = await f.read_json(request)
        self.service.check_model(f.text(body, "model") or f.text(body, "name"))
        cfg = self.service.session.bundle.config
        info = {"general.architecture": "helium", "general.parameter_count": cfg.parameters,
                "helium.context_length": cfg.context_length, "helium.embedding_length": cfg.d_model,
                "helium.block_count": cfg.n_layer}  # fmt: skip
        return JSONResponse({"modelfile": f"FROM {self.service.name}\n", "parameters": "", "template": "{{ .Prompt }}",
                             "details": self._details(), "model_info": info, "capabilities": ["completion"],
                             "modified_at": self.modified})  # fmt: skip

    async def generate(self, request: Request) -> Response:
        body = await f.read_json(request)
        self.service.check_model(f.text(body, "model"))
        prompt = f.text(body, "prompt", "")
        # system, template, suffix, format, keep_alive: accepted and ignored (a story model has no template)
        if not prompt and not body.get("messages"):
            return JSONResponse({"model": self.service.name, "created_at": now(), "response": "", "done": True,
                                 "done_reason": "load"})  # fmt: skip
        return await self._answer(request, body, prompt, chat=False)

    async def chat(self, request: Request) -> Response:
        body = await f.read_json(request)
        self.service.check_model(f.text(body, "model"))
        if body.get("messages") == []:
            return JSONResponse({"model": self.service.name, "created_at": now(),
                                 "message": {"role": "assistant", "content": ""}, "done": True,
                                 "done_reason": "load"})  # fmt: skip
        return await self._answer(request, body, f.last_user_message(body), chat=True)

    async def _answer(self, request: Request, body: dict, prompt: str, chat: bool) -> Response:
        params, stop = read_options(body, self.service.session.sampling)
        stream = f.flag(body, "stream", True)
        started = time.perf_counter_ns()
        batch = await self.service.tell(Ask(prompt, params, stop=stop))
        if stream:
            return EventStream(batch, self._lines(batch, chat, started), "application/x-ndjson")  # type: ignore[return-value]
        result = (await batch.collect(request))[0]
        if result.reason in ("cancelled", "error"):
            raise ApiError(503, "the server stopped before the story ended")
        end = End(0, result.reason, result.text, result.prompt_tokens, result.completion_tokens)
        return JSONResponse(self._final(end, chat, started, text=result.text))

    def _piece(self, text: str, chat: bool) -> dict:
        head = {"model": self.service.name, "created_at": now()}
        if chat:
            return head | {"message": {"role": "assistant", "content": text}, "done": False}
        return head | {"response": text, "done": False}

    def _final(self, end: End, chat: bool, started: int, text: str = "") -> dict:
        total = time.perf_counter_ns() - started
        return self._piece(text, chat) | {
            "done": True, "done_reason": DONE[end.reason], "total_duration": total, "load_duration": 0,
            "prompt_eval_count": end.prompt_tokens, "prompt_eval_duration": 0, "eval_count": end.completion_tokens,
            "eval_duration": total,
        }  # fmt: skip

    async def _lines(self, batch: Batch, chat: bool, started: int) -> AsyncIterator[bytes]:
        async for event in batch.events():
            if isinstance(event, End):
                if event.text:
                    yield json.dumps(self._piece(event.text, chat)).encode() + b"\n"
                yield json.dumps(self._final(event, chat, started)).encode() + b"\n"
            elif event.text:
                yield json.dumps(self._piece(event.text, chat)).encode() + b"\n"
