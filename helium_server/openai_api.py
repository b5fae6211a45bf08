"""The OpenAI-compatible API: /v1/models, /v1/completions, /v1/chat/completions (JSON, or SSE with stream).

A story model has no chat template: a chat request's last user message is the story's opening and the
assistant's reply is its continuation. Helium's own `top_k` and `repetition_penalty` (and vLLM's `ignore_eos`) ride as extra fields.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.checks import MAX_SEED
from engine.generation.telling import TokenInfo
from helium_server import fields as f
from helium_server.fields import ApiError
from helium_server.models import Listed, Models
from helium_server.scheduler import End, Piece
from helium_server.service import Ask, Batch, Result, Service
from helium_server.streaming import EventStream

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop", "error": "stop"}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error shape."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    if status == 401:
        kind = "authentication_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def read_ask(body: dict, prompt: str, chat: bool, model: dict | None = None) -> tuple[Ask, int | None]:
    """The story a request asks for, and how many alternatives its logprobs list (None: no logprobs). A setting
    the request leaves out comes from the model's recommended ones (`model`, `Session.sampling`), else Helium's."""
    max_tokens = f.whole(body, "max_tokens", None, 1, f.MAX_TOKENS)
    if chat:
        max_tokens = f.whole(body, "max_completion_tokens", max_tokens, 1, f.MAX_TOKENS)
    f.text(body, "user")
    if f.flag(body, "echo", False):
        raise ApiError(400, "'echo' is not supported", param="echo")
    params = f.settings(
        model,
        max_new_tokens=max_tokens,
        **f.knobs(body),
        penalize_prompt=f.flag(body, "penalize_prompt", None),
        seed=f.whole(body, "seed", None, 0, MAX_SEED),
        stop_at_eos=not f.flag(body, "ignore_eos", False),  # vLLM's and llama.cpp's name: benchmarks use it
    )
    if chat:
        top = f.whole(body, "top_logprobs", 0, 0, f.MAX_TOP_LOGPROBS) if f.flag(body, "logprobs", False) else None
        if top is None and body.get("top_logprobs") is not None:  # as OpenAI: not silently dropped
            raise ApiError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
    else:
        top = f.whole(body, "logprobs", None, 0, 5)
    n = f.whole(body, "n", 1, 1, f.MAX_N)
    ask = Ask(prompt, params, n=n, stop=f.stops(body), top=0 if top is None else max(top, 1))
    return ask, top


def logprob(p: float) -> float:
    return math.log(max(p, 1e-45))


def completion_logprobs(tokens: list[TokenInfo], top: int, offset: int = 0) -> dict:
    """The legacy completions' logprobs object."""
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [logprob(t.prob) for t in tokens],
        "top_logprobs": [{text: logprob(p) for text, _, p in t.top[:top]} for t in tokens],
        "text_offset": offsets,
    }


def chat_logprobs(tokens: list[TokenInfo], top: int) -> dict:
    """Chat completions' logprobs object."""
    def entry(text: str, p: float) -> dict:
        return {"token": text, "logprob": logprob(p), "bytes": list(text.encode("utf-8", "replace"))}

    return {"content": [entry(t.text, t.prob) | {"top_logprobs": [entry(s, p) for s, _, p in t.top[:top]]}
                        for t in tokens]}  # fmt: skip


class OpenAI:
    """The /v1 routes over the served models."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self.created = int(time.time())

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{name:path}", self.model, methods=["GET"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
        ]

    def _card(self, model: Listed) -> dict:
        return {"id": model.name, "object": "model", "created": self.created, "owned_by": "helium"}

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._card(m) for m in self.models.listed()]})

    async def model(self, request: Request) -> Response:
        return JSONResponse(self._card(self.models.find(request.path_params["name"])))

    async def completions(self, request: Request) -> Response:
        body = await f.read_json(request)
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "'prompt' must be a string (or a list of one string)", param="prompt")
        return await self._answer(request, body, prompt, chat=False)

    async def chat(self, request: Request) -> Response:
        body = await f.read_json(request)
        return await self._answer(request, body, f.last_user_message(body), chat=True)

    async def _answer(self, request: Request, body: dict, prompt: str, chat: bool) -> Response:
        async with self.models.use(f.text(body, "model")) as service:
            return await self._told(request, body, prompt, chat, service)

    async def _told(self, request: Request, body: dict, prompt: str, chat: bool, service: Service) -> Response:
        ask, top = read_ask(body, prompt, chat, service.session.sampling)
        stream = f.flag(body, "stream", False)
        usage_in_stream = f.flag(f.obj(body, "stream_options"), "include_usage", False)
        batch = await service.tell(ask)
        head = {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, "created": int(time.time()),
                "model": service.name}  # fmt: skip
        if stream:
            chunks = self._chunks(batch, head, chat, top, usage_in_stream)
            return EventStream(batch, chunks, "text/event-stream")  # type: ignore[return-value]
        results = await batch.collect(request)
        if any(r.reason in ("cancelled", "error") for r in results):
            raise ApiError(503, "the server stopped before the story ended")
        choices = [self._choice(i, r, chat, top) for i, r in enumerate(results)]
        obj = "chat.completion" if chat else "text_completion"
        return JSONResponse(head | {"object": obj, "choices": choices, "usage": usage(results)})

    @staticmethod
    def _choice(i: int, r: Result, chat: bool, top: int | None) -> dict:
        finish = FINISH[r.reason]
        if chat:
            lp = chat_logprobs(r.tokens, top) if top is not None else None
            return {"index": i, "message": {"role": "assistant", "content": r.text}, "logprobs": lp,
                    "finish_reason": finish}  # fmt: skip
        lp = completion_logprobs(r.tokens, top) if top is not None else None
        return {"index": i, "text": r.text, "logprobs": lp, "finish_reason": finish}

    async def _chunks(self, batch: Batch, head: dict, chat: bool, top: int | None, with_usage: bool) -> AsyncIterator[bytes]:
        obj = "chat.completion.chunk" if chat else "text_completion"
        counts = [0] * len(batch.jobs)

        def chunk(choice: dict, **extra) -> bytes:
            return b"data: " + json.dumps(head | {"object": obj, "choices": [choice]} | extra).encode() + b"\n\n"

        if chat:
            for i in range(len(batch.jobs)):
                yield chunk({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None})  # fmt: skip
        async for event in batch.events():
            tokens = [event.token] if isinstance(event, Piece) and event.token is not None else []
            if not event.text and not tokens and isinstance(event, Piece):
                continue
            finish = FINISH[event.reason] if isinstance(event, End) else None
            if isinstance(event, End):
                counts[event.index] = event.completion_tokens
            lp = None
            if top is not None and tokens:
                lp = chat_logprobs(tokens, top) if chat else completion_logprobs(tokens, top)
            if chat:
                delta = {"content": event.text} if event.text or not finish else {}
                yield chunk({"index": event.index, "delta": delta, "logprobs": lp, "finish_reason": finish})
            else:
                yield chunk({"index": event.index, "text": event.text, "logprobs": lp, "finish_reason": finish})
        if with_usage:
            done = sum(counts)
            yield b"data: " + json.dumps(head | {"object": obj, "choices": [], "usage": {
                "prompt_tokens": batch.prompt_tokens, "completion_tokens": done,
                "total_tokens": batch.prompt_tokens + done}}).encode() + b"\n\n"  # fmt: skip
        yield b"data: [DONE]\n\n"


def usage(results: list[Result]) -> dict:
    prompt = results[0].prompt_tokens
    done = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
