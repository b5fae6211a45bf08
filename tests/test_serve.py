"""`helium serve` with the real clients: the openai and ollama libraries against a server on a loopback port.

A greedy completion equals `helium tell`'s story; streaming equals not streaming; a seeded story is the same
whatever shares its batch; n variants are the seeds seed..seed+n-1.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("openai")
pytest.importorskip("ollama")

import ollama  # noqa: E402
import openai  # noqa: E402

from engine.bundles.bundle import save_bundle  # noqa: E402
from engine.generation.session import open_session  # noqa: E402
from engine.model.tinyslm import TinySLM  # noqa: E402
from helium_server.app import build_app  # noqa: E402
from helium_server.background import BackgroundServer  # noqa: E402
from helium_tui.cli import app as cli  # noqa: E402
from tests.conftest import TINY  # noqa: E402

NAME = "tiny-serve"
GREEDY = {"temperature": 0, "extra_body": {"repetition_penalty": 1.0}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_tokenizer):
    torch.manual_seed(0)
    model = TinySLM(TINY.with_(vocab_size=tiny_tokenizer.vocab_size)).eval()
    return save_bundle(tmp_path_factory.mktemp("serve") / NAME, model, tiny_tokenizer, {"data": "synthetic"})


@pytest.fixture(scope="module")
def url(bundle):
    session = open_session(str(bundle), device="cpu", dtype="float32", threads=1)
    with BackgroundServer(build_app(session, max_batch=4)) as address:
        yield address


@pytest.fixture
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def told(bundle, prompt: str, *args: str) -> str:
    """`helium tell --json`'s story."""
    r = CliRunner().invoke(cli, ["tell", prompt, "--model", str(bundle), "--device", "cpu", "--dtype", "float32",
                                 "--json", *args])  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["text"]


def test_greedy_completion_equals_helium_tell(bundle, client):
    expected = told(bundle, "Lily had a", "--temperature", "0", "--repetition-penalty", "1.0", "--max-tokens", "40")
    got = client.completions.create(model=NAME, prompt="Lily had a", max_tokens=40, **GREEDY)
    assert got.choices[0].text == expected
    assert got.usage.completion_tokens == 40 and got.choices[0].finish_reason == "length"
    assert got.usage.total_tokens == got.usage.prompt_tokens + 40


def test_streaming_equals_one_piece(client):
    whole = client.completions.create(model=NAME, prompt="Tom", max_tokens=30, seed=7)
    pieces = list(client.completions.create(model=NAME, prompt="Tom", max_tokens=30, seed=7, stream=True))
    assert "".join(c.choices[0].text for c in pieces) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "length"


def test_chat_continues_the_last_user_message(bundle, client):
    messages = [{"role": "system", "content": "ignored"}, {"role": "user", "content": "Max found"}]
    got = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20, **GREEDY)
    expected = told(bundle, "Max found", "--temperature", "0", "--repetition-penalty", "1.0", "--max-tokens", "20")
    assert got.choices[0].message.content == expected and got.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY)  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == 20


def test_models_and_extra_fields(client):
    assert [m.id for m in client.models.list()] == [NAME]
    a = client.completions.create(model=NAME, prompt="Sue", max_tokens=15, seed=3, extra_body={"top_k": 5})
    b = client.completions.create(model=NAME, prompt="Sue", max_tokens=15, seed=3, extra_body={"top_k": 5})
    assert a.choices[0].text == b.choices[0].text


def test_logprobs_list_the_top_alternatives(client):
    got = client.completions.create(model=NAME, prompt="Ben", max_tokens=5, logprobs=3, **GREEDY)
    lp = got.choices[0].logprobs
    assert len(lp.tokens) == 5 and all(len(top) <= 3 for top in lp.top_logprobs)
    assert all(lp.token_logprobs[i] == pytest.approx(max(lp.top_logprobs[i].values())) for i in range(5))
    chat = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Ben"}], max_tokens=4,
                                          logprobs=True, top_logprobs=2, **GREEDY)  # fmt: skip
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and all(len(t.top_logprobs) == 2 for t in content)


def test_variants_are_consecutive_seeds(client):
    many = client.completions.create(model=NAME, prompt="Mia", max_tokens=20, seed=11, n=3)
    singles = [client.completions.create(model=NAME, prompt="Mia", max_tokens=20, seed=11 + i) for i in range(3)]
    assert [c.text for c in many.choices] == [s.choices[0].text for s in singles]
    assert many.usage.completion_tokens == 60


def test_seeded_story_does_not_depend_on_its_batch(client):
    alone = client.completions.create(model=NAME, prompt="Once upon", max_tokens=60, seed=5).choices[0].text

    def ask(i: int) -> str:
        if i == 0:
            return client.completions.create(model=NAME, prompt="Once upon", max_tokens=60, seed=5).choices[0].text
        other = client.completions.create(model=NAME, prompt="Lily " * i, max_tokens=10 * i, temperature=1.5,
                                          top_p=0.5, extra_body={"repetition_penalty": 1.3})  # fmt: skip
        return other.choices[0].text

    for _ in range(2):
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(ask, range(4)))[0] == alone


def test_ollama_client_generates_and_chats(bundle, url):
    client = ollama.Client(host=url)
    assert [m.model for m in client.list().models] == [NAME]
    assert client.show(NAME).details.family == "helium"
    options = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 25}
    expected = told(bundle, "Tom had", "--temperature", "0", "--repetition-penalty", "1.0", "--max-tokens", "25")
    whole = client.generate(model=NAME, prompt="Tom had", options=options, stream=False)
    assert whole.response == expected and whole.done and whole.eval_count == 25 and whole.done_reason == "length"
    parts = list(client.generate(model=NAME, prompt="Tom had", options=options, stream=True))
    assert "".join(p.response for p in parts) == expected and parts[-1].done
    chat = list(client.chat(model=NAME, messages=[{"role": "user", "content": "Tom had"}], options=options, stream=True))
    assert "".join(p.message.content or "" for p in chat) == expected
    seeded = [client.generate(model=NAME, prompt="Sue", options={"seed": 4, "num_predict": 10}, stream=False).response
              for _ in range(2)]  # fmt: skip
    assert seeded[0] == seeded[1]


def test_ollama_errors_have_ollama_shape(url):
    client = ollama.Client(host=url)
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="nope", prompt="x", stream=False)
    assert err.value.status_code == 404 and "not served here" in err.value.error


def test_what_a_request_leaves_out_is_the_models_recommended_setting(tmp_path, tiny_tokenizer):
    """As `helium tell`, the server samples with the model's `metadata.json` "sampling" unless a request sets a
    value: here greedy with no penalty, 12 tokens; OpenAI's frequency_penalty, given, changes the story."""
    torch.manual_seed(0)
    model = TinySLM(TINY.with_(vocab_size=tiny_tokenizer.vocab_size)).eval()
    recommended = {"temperature": 0, "repetition_penalty": 1.0, "max_new_tokens": 12}
    bundle = save_bundle(tmp_path / "tuned", model, tiny_tokenizer, {"sampling": recommended})
    session = open_session(str(bundle), device="cpu", dtype="float32", threads=1)
    with BackgroundServer(build_app(session, max_batch=2)) as address:
        client = openai.OpenAI(base_url=address + "/v1", api_key="unused", max_retries=0)
        plain = client.completions.create(model="tuned", prompt="Tom")
        assert plain.usage.completion_tokens == 12
        assert plain.choices[0].text == told(bundle, "Tom")
        penalized = client.completions.create(model="tuned", prompt="Tom", frequency_penalty=2.0)
        assert penalized.choices[0].text == told(bundle, "Tom", "--frequency-penalty", "2.0")
        api = ollama.Client(host=address).generate(model="tuned", prompt="Tom", stream=False)
        assert api.response == plain.choices[0].text
