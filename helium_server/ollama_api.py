"""The Ollama-compatible API: /api/tags, /api/show, /api/ps, /api/version, /api/generate and /api/chat.

Streams NDJSON by default (one object a line, the last with `done: true` and the counts); `options` carries
temperature, top_k, top_p, repeat_penalty, seed, num_predict and stop. Errors are Ollama's `{"error": ...}`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.bundles.info import read_config
from engine.checks import MAX_SEED
from engine.generation.sampling import SamplingParams
from helium_server import fields as f
from helium_server.fields import ApiError
from helium_server.models import Listed, Models
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
    """The /api routes over the served models."""

    def __init__(self, models: Models) -> None:
        self.models = models
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

    def _details(self, model: Listed) -> dict:
        if model.service is not None:
            session = model.service.session
            params = session.bundle.config.parameters
            level = session.quantize.upper() if session.quantize != "none" else session.dtype_name.upper()
        else:  # not loaded: from its files
            params, level = read_config(model.path)[0].parameters, self.models.loader.precision(model.path)
        size = f"{params / 1e6:.1f}M" if params < 1e9 else f"{params / 1e9:.1f}B"
        return {"parent_model": "", "format": "safetensors", "family": "helium", "families": ["helium"],
                "parameter_size": size, "quantization_level": level}  # fmt: skip

    def _entry(self, model: Listed) -> dict:
        weights = model.path / "model.safetensors" if model.path else None
        size = weights.stat().st_size if weights and weights.is_file() else 0
        return {"name": model.name, "model": model.name, "modified_at": self.modified, "size": size,
                "digest": "", "details": self._details(model)}  # fmt: skip

    async def root(self, request: Request) -> Response:
        return Response("Helium is running (Ollama-compatible API)", media_type="text/plain")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def tags(self, request: Request) -> Response:
        return JSONResponse({"models": [self._entry(m) for m in self.models.listed()]})

    async def ps(self, request: Request) -> Response:
        """The loaded models, most recently used first, with the memory each holds (unloaded only to make room)."""
        loaded = [m for m in self.models.listed() if m.service is not None][::-1]
        return JSONResponse({"models": [self._entry(m) | {"size": self.models.sizes[m.name], "size_vram": 0,
                                                          "expires_at": "9999-12-31T00:00:00Z"} for m in loaded]})  # fmt: skip

    async def show(self, request: Request) -> Response:
        body = await f.read_json(request)
        model = self.models.find(f.text(body, "model") or f.text(body, "name"))
        cfg = model.service.session.bundle.config if model.service else read_config(model.path)[0]
        info = {"general.architecture": "helium", "general.parameter_count": cfg.parameters,
                "helium.context_length": cfg.context_length, "helium.embedding_length": cfg.d_model,
                "helium.block_count": cfg.n_layer}  # fmt: skip
        return JSONResponse({"modelfile": f"FROM {model.name}\n", "parameters": "", "template": "{{ .Prompt }}",
                             "details": self._details(model), "model_info": info, "capabilities": ["completion"],
                             "modified_at": self.modified})  # fmt: skip

    async def generate(self, request: Request) -> Response:
        body = await f.read_json(request)
        prompt = f.text(body, "prompt", "")
        # system, template, suffix, format: accepted and ignored (a story model has no template)
        if not prompt and not body.get("messages"):
            return await self._load_or_unload(body, {"response": ""})
        return await self._answer(request, body, prompt, chat=False)

    async def chat(self, request: Request) -> Response:
        body = await f.read_json(request)
        if body.get("messages") == []:
            return await self._load_or_unload(body, {"message": {"role": "assistant", "content": ""}})
        return await self._answer(request, body, f.last_user_message(body), chat=True)

    async def _load_or_unload(self, body: dict, empty: dict) -> Response:
        """An empty request loads the model (`ollama run`'s first call), or with keep_alive 0 unloads it
        (`ollama stop`)."""
        name = f.text(body, "model")
        started = time.perf_counter_ns()
        if unloads(body.get("keep_alive")):
            await self.models.unload(name)
            reason = "unload"
        else:
            async with self.models.use(name):
                reason = "load"
        return JSONResponse({"model": self.models.find(name).name, "created_at": now()} | empty | {
            "done": True, "done_reason": reason, "load_duration": time.perf_counter_ns() - started})  # fmt: skip

    async def _answer(self, request: Request, body: dict, prompt: str, chat: bool) -> Response:
        started = time.perf_counter_ns()
        async with self.models.use(f.text(body, "model")) as service:  # loads the model on first use
            timing = (started, time.perf_counter_ns() - started)
            response = await self._told(request, body, prompt, chat, service, timing)
        if unloads(body.get("keep_alive")) and not isinstance(response, EventStream):
            await self._unload_after(service.name)
        return response

    async def _unload_after(self, name: str) -> None:
        """keep_alive 0 with a prompt: unload once the story is told, as Ollama does (unless another request
        holds the model)."""
        with contextlib.suppress(ApiError):
            await self.models.unload(name)

    async def _told(
        self, request: Request, body: dict, prompt: str, chat: bool, service: Service, timing: tuple[int, int]
    ) -> Response:  # fmt: skip
        """timing: when the request began (perf_counter_ns) and the nanoseconds it spent loading the model."""
        params, stop = read_options(body, service.session.sampling)
        stream = f.flag(body, "stream", True)
        batch = await service.tell(Ask(prompt, params, stop=stop))
        if stream:
            lines = self._lines(batch, service.name, chat, timing, unloads(body.get("keep_alive")))
            return EventStream(batch, lines, "application/x-ndjson")  # type: ignore[return-value]
        result = (await batch.collect(request))[0]
        if result.reason in ("cancelled", "error"):
            raise ApiError(503, "the server stopped before the story ended")
        end = End(0, result.reason, result.text, result.prompt_tokens, result.completion_tokens)
        return JSONResponse(self._final(service.name, end, chat, timing, text=result.text))

    @staticmethod
    def _piece(model: str, text: str, chat: bool) -> dict:
        head = {"model": model, "created_at": now()}
        if chat:
            return head | {"message": {"role": "assistant", "content": text}, "done": False}
        return head | {"response": text, "done": False}

    def _final(self, model: str, end: End, chat: bool, timing: tuple[int, int], text: str = "") -> dict:
        started, load = timing
        total = time.perf_counter_ns() - started
        return self._piece(model, text, chat) | {
            "done": True, "done_reason": DONE[end.reason], "total_duration": total, "load_duration": load,
            "prompt_eval_count": end.prompt_tokens, "prompt_eval_duration": 0, "eval_count": end.completion_tokens,
            "eval_duration": total - load,
        }  # fmt: skip

    async def _lines(
        self, batch: Batch, model: str, chat: bool, timing: tuple[int, int], unload: bool
    ) -> AsyncIterator[bytes]:  # fmt: skip
        async for event in batch.events():
            if isinstance(event, End):
                if event.text:
                    yield json.dumps(self._piece(model, event.text, chat)).encode() + b"\n"
                yield json.dumps(self._final(model, event, chat, timing)).encode() + b"\n"
                if unload:
                    await self._unload_after(model)
            elif event.text:
                yield json.dumps(self._piece(model, event.text, chat)).encode() + b"\n"


def unloads(keep_alive: object) -> bool:
    """Whether Ollama's keep_alive asks to unload now: 0, "0", "0s", "0m" (other values keep the model loaded)."""
    if isinstance(keep_alive, bool) or not isinstance(keep_alive, (int, float, str)):
        return False
    text = str(keep_alive).strip().lower().rstrip("smh")
    try:
        return float(text) == 0
    except ValueError:
        return False
