"""`helium serve` under bad input and misbehaving clients: 4xx in the protocol's shape (never a 500 or a logged
traceback), 429 with Retry-After when the queue is full, a disconnect frees its row, the API key, the CLI's rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest
import torch
from typer.testing import CliRunner

from engine.bundles.bundle import save_bundle
from engine.generation.sampling import SamplingParams
from engine.generation.session import open_session
from engine.model.tinyslm import TinySLM
from helium_server.app import build_app
from helium_server.background import BackgroundServer
from helium_server.scheduler import Job
from helium_tui.cli import app as cli
from tests.conftest import TINY

NAME = "tiny-limits"


@pytest.fixture(scope="module")
def session(tmp_path_factory, tiny_tokenizer):
    torch.manual_seed(0)
    model = TinySLM(TINY.with_(vocab_size=tiny_tokenizer.vocab_size)).eval()
    path = save_bundle(tmp_path_factory.mktemp("limits") / NAME, model, tiny_tokenizer, {"data": "synthetic"})
    return open_session(str(path), device="cpu", dtype="float32", threads=1)


@pytest.fixture(scope="module")
def served(session):
    app = build_app(session, max_batch=1, max_queue=1)
    with BackgroundServer(app) as url:
        yield url, app.state.scheduler


def wait_idle(scheduler, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if scheduler.active == 0 and scheduler.inbox.empty():
            return True
        time.sleep(0.01)
    return False


OK = {"model": NAME, "prompt": "Tom", "max_tokens": 3}
BAD_OPENAI = [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    (json.dumps(OK | {"max_tokens": 10**12}).encode(), 400),
    (json.dumps(OK | {"n": 10**6}).encode(), 400),
    (json.dumps(OK | {"temperature": "hot"}).encode(), 400),
    (b'{"model": "tiny-limits", "prompt": "Tom", "temperature": NaN}', 400),
    (json.dumps(OK | {"temperature": 1e308 * 10}).replace("Infinity", "1e999").encode(), 400),
    (json.dumps(OK | {"top_p": 0}).encode(), 400),
    (json.dumps(OK | {"prompt": 42}).encode(), 400),
    (json.dumps(OK | {"stop": ["a"] * 10}).encode(), 400),
    (json.dumps(OK | {"seed": -1}).encode(), 400),
    (json.dumps(OK | {"max_tokens": True}).encode(), 400),
    (json.dumps(OK | {"logprobs": 99}).encode(), 400),
    (json.dumps(OK | {"model": "other"}).encode(), 404),
    (b"[" * 100_000 + b"]" * 100_000, 400),
    (json.dumps(OK | {"prompt": "x" * (10 << 20)}).encode(), 413),
]


@pytest.mark.parametrize("body, status", BAD_OPENAI)
def test_bad_openai_requests_get_4xx_in_openai_shape(served, caplog, capfd, body, status):
    url, _ = served
    with caplog.at_level(logging.WARNING):
        r = httpx.post(url + "/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["type"] == "invalid_request_error"
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {"model": NAME, "messages": "hi"}),
        ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "system", "content": "x"}]}),
        ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": 5}]}),
        ("/api/generate", {"model": NAME, "prompt": "x", "options": {"temperature": "x"}}),
        ("/api/generate", {"model": NAME, "prompt": "x", "options": [1]}),
        ("/api/generate", {"model": NAME, "prompt": "x", "options": {"num_predict": 10**12}}),
        ("/api/chat", {"model": NAME, "messages": [{"content": "x"}]}),
        ("/api/generate", {"model": NAME, "prompt": ["x"]}),
        ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
    ],
)
def test_bad_fields_everywhere_get_400(served, path, body):
    r = httpx.post(served[0] + path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert isinstance(error, str) if path.startswith("/api") else isinstance(error["message"], str)


def test_unknown_routes_and_methods_answer_json(served):
    url, _ = served
    r = httpx.get(url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(url + "/v1/completions")
    assert r.status_code == 405 and r.json()["error"]["message"] == "method not allowed"
    assert httpx.get(url + "/api/nothing").json() == {"error": "no route /api/nothing"}


def test_full_queue_answers_429_with_retry_after(served):
    url, scheduler = served
    loop = asyncio.new_event_loop()  # never run: the jobs' events just pile up
    hog, waiting = (Job([0, 5], SamplingParams(max_new_tokens=30_000, seed=1), loop, asyncio.Queue()) for _ in range(2))
    try:
        scheduler.submit([hog])
        deadline = time.monotonic() + 5
        while scheduler.active == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        scheduler.submit([waiting])  # the one place in the queue
        r = httpx.post(url + "/v1/completions", json=OK)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert httpx.post(url + "/api/generate", json={"model": NAME, "prompt": "x"}).status_code == 429
    finally:
        hog.cancelled.set()
        waiting.cancelled.set()
        assert wait_idle(scheduler)
        loop.close()


def test_a_stream_that_disconnects_frees_its_row(served):
    url, scheduler = served
    body = {"model": NAME, "prompt": "Lily", "max_tokens": 30_000, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", url + "/v1/completions", json=body) as r:
        assert r.status_code == 200
        lines = (line for line in r.iter_lines() if line)
        for _ in range(5):
            assert next(lines).startswith("data: ")
        assert scheduler.active == 1
    assert wait_idle(scheduler, timeout=2)
    r = httpx.post(url + "/api/generate", json={"model": NAME, "prompt": "Tom", "stream": False,
                                                "options": {"num_predict": 3}})  # fmt: skip
    assert r.status_code == 200 and r.json()["eval_count"] == 3


def test_a_waiting_client_that_gives_up_frees_its_row(served):
    url, scheduler = served
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json=OK | {"max_tokens": 30_000, "ignore_eos": True}, timeout=0.5)
    assert wait_idle(scheduler, timeout=3)


@pytest.mark.slow
def test_api_key_is_required_when_set(session):
    with BackgroundServer(build_app(session, max_batch=1, api_key="s3cret")) as url:
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url + "/api/tags").json()["error"].startswith("a valid API key")
        r = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["data"][0]["id"] == NAME


@pytest.mark.parametrize(
    "args, message",
    [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from other machines: give --api-key KEY"),
        (["--port", "0"], "--port must be from 1 to 65535"),
        (["--max-batch", "0"], "--max-batch must be from 1 to 64"),
        (["--model", "no-such-model"], "no such model bundle"),
    ],
)
def test_serve_refuses_bad_options_in_one_line(helium_home, args, message):
    r = CliRunner().invoke(cli, ["serve", *args])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1


def test_a_loopback_server_refuses_other_host_names(served):
    """DNS rebinding: a page whose domain now points at 127.0.0.1 still sends its own name in Host."""
    url, _ = served
    r = httpx.get(url + "/v1/models", headers={"Host": "evil.example"})
    assert r.status_code == 403 and "localhost" in r.json()["error"]["message"]
    assert httpx.get(url + "/api/tags", headers={"Host": "localhost"}).status_code == 200


def test_local_pages_may_call_the_api_and_others_may_not(served):
    url, _ = served
    asks = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = httpx.options(url + "/v1/completions", headers={"Origin": "http://localhost:3000"} | asks)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"
    r = httpx.get(url + "/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    stainless = "authorization, content-type, x-stainless-lang, x-stainless-os, x-stainless-retry-count, x-stainless-timeout"
    ok = httpx.options(url + "/v1/chat/completions", headers={"Origin": "http://localhost:5173"} | asks | {
        "Access-Control-Request-Headers": stainless})  # the openai JS client in a local page, as Ollama allows
    assert ok.status_code == 200, ok.text
    for path in ("/v1/completions", "/api/generate"):  # a refused preflight is an error in the protocol's shape
        r = httpx.options(url + path, headers={"Origin": "https://evil.example"} | asks)
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        error = r.json()["error"]
        assert "origin" in (error if path.startswith("/api") else error["message"])
