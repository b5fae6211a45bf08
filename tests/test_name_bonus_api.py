"""The name bonus where users set it: `helium tell --name-bonus`, `helium eval --set name_bonus=`, the OpenAI extra
field and Ollama's `options.name_bonus`, a model's recommended "sampling"; bad values get one line or a 400."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from typer.testing import CliRunner

from engine.bundles.bundle import save_bundle
from engine.generation.sampling import SamplingParams, model_defaults
from engine.generation.session import open_session
from engine.model.tinyslm import TinySLM
from helium_server.app import build_app
from helium_server.background import BackgroundServer
from helium_tui.cli import app as cli
from helium_tui.commands.evaluate import parse_setting
from tests.conftest import TINY, make_stories, train_bpe

NAME = "tiny-names"
PROMPT = "Tom and Lily went to the park. Lily"
GREEDY = {"temperature": 0, "repetition_penalty": 3.0, "max_tokens": 12}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tok = train_bpe(make_stories() + ["Tom and Lily went to the park. Tom saw Lily and Sam. "] * 30, vocab_size=300)
    torch.manual_seed(0)
    model = TinySLM(TINY.with_(vocab_size=tok.vocab_size)).eval()
    return save_bundle(tmp_path_factory.mktemp("names") / NAME, model, tok, {"data": "synthetic"})


@pytest.fixture(scope="module")
def url(bundle):
    session = open_session(str(bundle), device="cpu", dtype="float32", threads=1)
    with BackgroundServer(build_app(session, max_batch=2)) as address:
        yield address


def told(bundle, *args: str) -> str:
    r = CliRunner().invoke(cli, ["tell", PROMPT, "--model", str(bundle), "--device", "cpu", "--dtype", "float32",
                                 "--temperature", "0", "--repetition-penalty", "3", "--max-tokens", "12", "--json",
                                 *args])  # fmt: skip
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["text"]


def test_tell_and_both_apis_tell_the_same_story_with_a_bonus(bundle, url):
    with_bonus, without = told(bundle, "--name-bonus", "2"), told(bundle)
    assert with_bonus != without  # the bonus spares " Lily" from the strong penalty
    openai = httpx.post(url + "/v1/completions", json={"model": NAME, "prompt": PROMPT, **GREEDY, "name_bonus": 2})
    assert openai.status_code == 200, openai.text
    assert openai.json()["choices"][0]["text"] == with_bonus
    options = {"temperature": 0, "repeat_penalty": 3.0, "num_predict": 12, "name_bonus": 2}
    ollama = httpx.post(url + "/api/generate", json={"model": NAME, "prompt": PROMPT, "stream": False, "options": options})
    assert ollama.status_code == 200, ollama.text
    assert ollama.json()["response"] == with_bonus


@pytest.mark.parametrize("value", ["nan", "-1", "11"])
def test_tell_refuses_a_bad_bonus_in_one_line(bundle, value):
    r = CliRunner().invoke(cli, ["tell", "Tom", "--model", str(bundle), "--name-bonus", value])
    assert r.exit_code == 2 and "name bonus must be from 0" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


@pytest.mark.parametrize("value", [-1, 11, "2", True])
def test_the_apis_refuse_a_bad_bonus_with_400(url, value):
    r = httpx.post(url + "/v1/completions", json={"model": NAME, "prompt": "Tom", "max_tokens": 2, "name_bonus": value})
    assert r.status_code == 400 and "name_bonus" in r.json()["error"]["message"]
    body = {"model": NAME, "prompt": "Tom", "stream": False, "options": {"num_predict": 2, "name_bonus": value}}
    r = httpx.post(url + "/api/generate", json=body)
    assert r.status_code == 400 and "name_bonus" in r.json()["error"]
    raw = b'{"model": "tiny-names", "prompt": "Tom", "name_bonus": NaN}'
    r = httpx.post(url + "/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_eval_and_model_metadata_take_the_bonus():
    assert parse_setting("name_bonus=2,penalize_prompt=true") == {"name_bonus": 2.0, "penalize_prompt": True}
    assert model_defaults({"sampling": {"name_bonus": 2.0}}) == {"name_bonus": 2.0}
    with pytest.raises(ValueError, match="name bonus"):
        model_defaults({"sampling": {"name_bonus": -1.0}})


def test_a_saved_story_keeps_its_bonus_and_drops_a_bad_one(tmp_path):
    from dataclasses import asdict

    from helium_tui.library import Story, StoryStore
    from helium_tui.story_file import clean_params

    store = StoryStore(tmp_path)
    story = store.save(Story("Once", " upon", asdict(SamplingParams(name_bonus=2.0)), "m"))
    assert store.get(story.id).params["name_bonus"] == 2.0
    assert clean_params({"name_bonus": float("nan"), "top_p": 0.5}) == ({"top_p": 0.5}, ["name_bonus"])
