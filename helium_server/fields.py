"""What clients send, checked: JSON bodies within limits, each field of the right type and range.

Every problem is an `ApiError` (a status, one line, the field), which each protocol answers in its own error
shape; nothing a client sends reaches the model unchecked.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

from engine.generation.sampling import MAX_NAME_BONUS, SamplingParams, settle

MAX_BODY = 1 << 20  # bytes of one request body (a prompt far past any context still fits)
MAX_TOKENS = 32_768  # tokens of one story over the API (the window slides past the context)
MAX_N = 16  # variants of one request
MAX_STOPS = 4
MAX_TOP_LOGPROBS = 20


class ApiError(Exception):
    """A request the server refuses: HTTP status, one-line message, the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object, read up to MAX_BODY bytes (413 past it, 400 for anything not an object)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, f"the request body is over {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"the request body is over {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks), parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _bad(name: str, what: str) -> ApiError:
    return ApiError(400, f"'{name}' must be {what}", param=name)


def whole(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    """An integer field from low to high (absent or null: default)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        raise _bad(name, f"a whole number from {low} to {high}")
    if not low <= value <= high:
        raise _bad(name, f"a whole number from {low} to {high}, got {value}")
    return int(value)


def number(body: dict, name: str, default: float | None, low: float, high: float) -> float | None:
    """A finite number field from low to high (absent or null: default)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(name, f"a number from {low:g} to {high:g}")
    if not low <= value <= high:
        raise _bad(name, f"a number from {low:g} to {high:g}, got {value:g}")
    return float(value)


def flag(body: dict, name: str, default: bool) -> bool:
    """A true/false field (absent or null: default)."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(name, "true or false")
    return value


def text(body: dict, name: str, default: str | None = None) -> str | None:
    """A string field (absent or null: default)."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _bad(name, "a string")
    return value


def obj(body: dict, name: str) -> dict:
    """An object field ({} when absent or null)."""
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(name, "an object")
    return value


def stops(body: dict, name: str = "stop") -> tuple[str, ...]:
    """Stop strings: a string or a list of up to MAX_STOPS non-empty strings."""
    value = body.get(name)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_STOPS or not all(isinstance(s, str) and s for s in items):
        raise _bad(name, f"a string or a list of up to {MAX_STOPS} non-empty strings")
    if any(len(s) > 100 for s in items):
        raise _bad(name, "strings of at most 100 characters")
    return tuple(items)


def message_text(content: Any, name: str) -> str:
    """A chat message's text: a string, or a list of parts whose text parts are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(name, "a string or a list of text parts")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(name, "a string or a list of text parts")


def last_user_message(body: dict) -> str:
    """The opening a chat request asks a story model to continue: its last user message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "a non-empty list of messages")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad("messages", "a list of objects with a 'role'")
    users = [m for m in messages if m["role"] == "user"]
    if not users:
        raise ApiError(400, "a story model continues the last user message, and there is none", param="messages")
    return message_text(users[-1].get("content"), "messages")


def knobs(body: dict, renamed: dict[str, str] | None = None) -> dict[str, object]:
    """The sampler's knobs both APIs take, each checked against its one range: {SamplingParams field: value or
    None (left out)}; renamed maps a field to the API's own name for it (Ollama's repeat_penalty)."""
    renamed = renamed or {}
    return {
        field: read(body, renamed.get(field, field), None, low, high)
        for field, (read, low, high) in (
            ("temperature", (number, 0, 100)),
            ("top_k", (whole, 0, 1 << 30)),
            ("top_p", (number, 0, 1)),
            ("repetition_penalty", (number, 0.01, 100)),
            ("repeat_last_n", (whole, -1, MAX_TOKENS)),
            ("frequency_penalty", (number, -2, 2)),
            ("presence_penalty", (number, -2, 2)),
            ("name_bonus", (number, 0, MAX_NAME_BONUS)),
        )
    }


def settings(model: dict | None, **chosen: object) -> SamplingParams:
    """A request's sampling settings over the model's recommended ones (`settle`); 400 for what the sampler
    refuses (None: left out)."""
    try:
        return settle(model, **chosen)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None

