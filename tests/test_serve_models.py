"""`helium serve` with several models: installed models answer to their names, load on first use, and past the
memory budget the least recently used idle one is unloaded; a name is never a path; two models decode at once.
"""

from __future__ import annotations

import gc
import json
import re
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("openai")
pytest.importorskip("ollama")

import ollama  # noqa: E402
import openai  # noqa: E402

from engine.bundles.bundle import save_bundle  # noqa: E402
from engine.generation.session import open_session  # noqa: E402
from engine.humanize import human_bytes, parse_bytes  # noqa: E402
from engine.model.tinyslm import TinySLM  # noqa: E402
from helium_server.app import build_app  # noqa: E402
from helium_server.background import BackgroundServer  # noqa: E402
from helium_server.models import Loader  # noqa: E402
from helium_tui.cli import app as cli  # noqa: E402
from tests.conftest import TINY  # noqa: E402

A, B = "tiny-a", "tiny-b"
LOADER = Loader("cpu", "float32", None, 1)
GREEDY = {"temperature": 0, "extra_body": {"repetition_penalty": 1.0}}


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_tokenizer):
    """A HELIUM_HOME with two installed models whose weights differ."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HELIUM_HOME", str(home))
        for seed, name in enumerate((A, B)):
            torch.manual_seed(seed)
            model = TinySLM(TINY.with_(vocab_size=tiny_tokenizer.vocab_size)).eval()
            with torch.no_grad():
                for weight in model.parameters():  # bold random weights: greedy stories that differ, not " a a a"
                    weight.normal_(0, 0.5)
            save_bundle(home / "models" / name, model, tiny_tokenizer, {"data": "synthetic"})
        yield home


def first_session(home):
    return LOADER.open(home / "models" / A)


def serve(home, **options):
    return BackgroundServer(build_app(first_session(home), max_batch=2, others=options.pop("others", True),
                                      loader=LOADER, **options))  # fmt: skip


def greedy(url: str, model: str, prompt: str = "Lily had a", tokens: int = 30) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    return client.completions.create(model=model, prompt=prompt, max_tokens=tokens, **GREEDY).choices[0].text


def told(home, model: str, prompt: str = "Lily had a", tokens: int = 30) -> str:
    r = CliRunner().invoke(cli, ["tell", prompt, "--model", model, "--device", "cpu", "--dtype", "float32", "--json",
                                 "--temperature", "0", "--repetition-penalty", "1.0", "--max-tokens", str(tokens)],
                           env={"HELIUM_HOME": str(home)})  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["text"]


def loaded(url: str) -> list[str]:
    return [m["name"] for m in httpx.get(url + "/api/ps").json()["models"]]


def one_model_bytes(home) -> int:
    session = first_session(home)
    session.generator.ensure_cache(2)
    return session.memory_bytes()


def test_an_installed_model_loads_on_first_use_and_tells_its_own_story(home):
    with serve(home) as url:
        names = [m.id for m in openai.OpenAI(base_url=url + "/v1", api_key="x").models.list()]
        assert names[0] == A and B in names  # the loaded one first, then every installed one
        assert {m["name"] for m in httpx.get(url + "/api/tags").json()["models"]} >= {A, B}
        assert loaded(url) == [A]
        assert greedy(url, B) == told(home, B) != told(home, A)
        assert loaded(url) == [B, A]  # most recently used first, as Ollama lists them
        assert greedy(url, A + ":latest") == told(home, A)


def test_past_the_budget_the_least_recently_used_idle_model_is_unloaded(home):
    budget = one_model_bytes(home) * 3 // 2  # room for one model, not two
    with serve(home, budget=budget) as url:
        assert greedy(url, B) == told(home, B)
        assert loaded(url) == [B]
        assert greedy(url, A) == told(home, A)  # the first model comes back from its bundle
        assert loaded(url) == [A]
        ps = httpx.get(url + "/api/ps").json()["models"][0]
        assert 0 < ps["size"] <= budget


def test_a_model_in_use_is_never_unloaded_and_the_request_is_told_to_retry(home):
    budget = one_model_bytes(home) * 3 // 2
    with serve(home, budget=budget) as url:
        body = {"model": A, "prompt": "Tom", "max_tokens": 20_000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as streaming:
            lines = streaming.iter_lines()
            assert next(lines).startswith("data: ")  # A is telling a story
            r = httpx.post(url + "/v1/completions", json={"model": B, "prompt": "Tom", "max_tokens": 3})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "try again when their stories end" in r.json()["error"]["message"]
            assert loaded(url) == [A]
        deadline = time.monotonic() + 10  # the client left: A's row frees, and B may load
        while (r := httpx.post(url + "/v1/completions", json={"model": B, "prompt": "Tom", "max_tokens": 3})).status_code == 503:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.status_code == 200 and loaded(url) == [B]


def test_a_model_bigger_than_the_whole_budget_is_refused_in_one_line(home):
    with serve(home, budget=1024) as url:
        r = httpx.post(url + "/api/generate", json={"model": B, "prompt": "Tom", "stream": False})
        assert r.status_code == 503
        assert "more than the server's memory budget (1.0 KiB, --memory-budget)" in r.json()["error"]
        assert greedy(url, A, tokens=5) == told(home, A, tokens=5)  # the first model still serves


@pytest.mark.parametrize("name", ["../models/tiny-b", "tiny-b/", "./tiny-b", "/tmp", "tiny-b/../tiny-a", "TINY-B"])
def test_a_requested_name_is_looked_up_never_opened_as_a_path(home, name):
    with serve(home) as url:
        r = httpx.post(url + "/v1/completions", json={"model": name, "prompt": "Tom", "max_tokens": 3})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert "this server serves: tiny-a" in r.json()["error"]["message"]
        absolute = str(home / "models" / B)
        assert httpx.post(url + "/api/show", json={"model": absolute}).status_code == 404
        assert loaded(url) == [A]


def test_a_request_without_a_model_gets_the_first_one_as_in_the_readme(home):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    body = json.loads(re.search(r"-d '(\{\"prompt\".*?\})'", readme).group(1))
    assert "model" not in body
    with serve(home) as url:
        r = httpx.post(url + "/v1/completions", json=body | {"max_tokens": 5})
        assert r.status_code == 200 and r.json()["model"] == A
        r = httpx.post(url + "/api/generate", json={"prompt": "Tom", "stream": False, "options": {"num_predict": 3}})
        assert r.status_code == 200 and r.json()["model"] == A


def test_one_model_serves_only_its_model(home):
    with serve(home, others=False) as url:
        assert [m.id for m in openai.OpenAI(base_url=url + "/v1", api_key="x").models.list()] == [A]
        r = httpx.post(url + "/v1/completions", json={"model": B, "prompt": "Tom", "max_tokens": 3})
        assert r.status_code == 404


def test_ollama_show_describes_an_unloaded_model_and_keep_alive_zero_unloads(home):
    with serve(home) as url:
        client = ollama.Client(host=url)
        shown = client.show(B)
        assert shown.details.parameter_size and shown.details.quantization_level == "FLOAT32"
        assert loaded(url) == [A]  # show reads the files, it loads nothing
        assert client.generate(model=B).done_reason == "load" and loaded(url) == [B, A]
        assert client.generate(model=B, keep_alive=0).done_reason == "unload"
        assert loaded(url) == [A]
        assert client.generate(model=B, prompt="Tom", options={"temperature": 0, "num_predict": 4}).response


def test_an_unloaded_model_is_freed(home):
    app = build_app(first_session(home), max_batch=2, others=True, loader=LOADER)
    with BackgroundServer(app) as url:
        assert greedy(url, B, tokens=5)
        model = weakref.ref(app.state.models.loaded[B].session.bundle.model)
        assert httpx.post(url + "/api/generate", json={"model": B, "keep_alive": "0s"}).json()["done_reason"] == "unload"
        gc.collect()
        assert model() is None  # nothing (the decode thread, a cache, a closure) keeps its tensors alive


def test_two_models_decoding_at_once_each_tell_their_own_story(home):
    with serve(home) as url:
        expected = {A: told(home, A, tokens=40), B: told(home, B, tokens=40)}
        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(lambda m: (m, greedy(url, m, tokens=40)), [A, B, A, B, A, B]))
        assert all(text == expected[m] for m, text in got)


def test_sizes_are_read_with_their_unit():
    assert parse_bytes("800MiB") == 800 << 20 and parse_bytes("2G") == 2 << 30 and parse_bytes("1.5 GB") == 3 << 29
    assert human_bytes(3 << 29) == "1.5 GiB" and human_bytes(512) == "512 B"
    for bad in ["4", "GiB", "-1G", "nanG", "infG", "lots"]:
        with pytest.raises(ValueError, match="give a number and a unit"):
            parse_bytes(bad)


def test_serve_refuses_a_budget_without_a_unit(home):
    r = CliRunner().invoke(cli, ["serve", "--memory-budget", "4"], env={"HELIUM_HOME": str(home)})
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == "helium: error: --memory-budget: '4' is not a size: give a number and a unit, e.g. 800MiB or 2GiB"


def test_open_session_counts_what_unloading_frees(home):
    session = open_session(str(home / "models" / A), device="cpu", dtype="float32", threads=1)
    weights = sum(p.numel() * 4 for p in session.bundle.model.parameters())
    assert session.memory_bytes() >= weights
    before = session.memory_bytes()
    session.generator.ensure_cache(4)
    cfg = session.bundle.config
    cache = 2 * cfg.n_layer * 4 * cfg.n_kv_head * cfg.context_length * (cfg.d_model // cfg.n_head) * 4
    assert session.memory_bytes() - before == cache


def test_ollama_reports_the_time_a_request_spent_loading_its_model(home):
    with serve(home) as url:
        client = ollama.Client(host=url)
        first = client.generate(model=B, prompt="Lily", options={"num_predict": 2})  # loads B
        again = client.generate(model=B, prompt="Lily", options={"num_predict": 2})
    assert first.load_duration > 1_000_000 and again.load_duration < first.load_duration
    assert first.total_duration >= first.load_duration + first.eval_duration


@pytest.mark.parametrize("stream", [False, True])
def test_keep_alive_zero_with_a_prompt_unloads_once_the_story_is_told(home, stream):
    with serve(home) as url:
        client = ollama.Client(host=url)
        answer = client.generate(model=B, prompt="Lily", keep_alive=0, stream=stream, options={"num_predict": 3})
        last = list(answer)[-1] if stream else answer
        assert last.done and last.eval_count == 3
        assert B not in loaded(url)
        client.generate(model=B, prompt="Lily", keep_alive="5m", options={"num_predict": 1})
        assert B in loaded(url)
