"""`helium inspect`: its --json against transformers on the `helium export hf` directory (with and without a
knock-out), the table fitted to the terminal and safe for it, long prompts cut to the context, bad input in one line.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle, save_bundle
from engine.formats.hf import export_hf
from helium_tui.cli import app
from tests.export_helpers import one_error
from tests.test_inspect import GQA, PROMPT, load_exported, random_slm, transformers_lens, transformers_run

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(one_thread, helium_home):
    """One intra-op thread, and no user's models."""


@pytest.fixture
def bundle_dir(tmp_path, tiny_tokenizer):
    model = random_slm(GQA.with_(vocab_size=tiny_tokenizer.vocab_size))
    return save_bundle(tmp_path / "tiny-inspect", model, tiny_tokenizer, {"data": "synthetic"})


def inspect_json(*args: str) -> dict:
    result = runner.invoke(app, ["inspect", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("knock", [[], ["1.2", "0.0"]], ids=["all-heads", "two-knocked-out"])
def test_json_matches_transformers_on_the_hf_export(bundle_dir, tmp_path, knock):
    ablate = [arg for head in knock for arg in ("--ablate", head)]
    got = inspect_json(PROMPT, "--model", str(bundle_dir), *ablate)
    bundle = load_bundle(bundle_dir)
    tok = bundle.tokenizer
    ids = tok.encode(PROMPT)
    assert set(got) == {
        "model",
        "token_ids",
        "tokens",
        "n_layer",
        "n_head",
        "attention",
        "logit_lens",
        "next_token",
        "ablated",
    }
    assert (
        got["model"] == "tiny-inspect"
        and got["token_ids"] == ids
        and got["tokens"] == [tok.token_text(i) for i in ids]
    )
    assert (got["n_layer"], got["n_head"]) == (GQA.n_layer, GQA.n_head)
    assert got["ablated"] == sorted(knock)
    hf = load_exported(export_hf(bundle, tmp_path / "hf"))
    out = transformers_run(hf, ids, [tuple(map(int, h.split("."))) for h in knock])
    want = torch.stack([a[0] for a in out.attentions])
    torch.testing.assert_close(torch.tensor(got["attention"]), want, atol=1e-4, rtol=0)
    lens = transformers_lens(hf, out).softmax(-1)  # (L + 1, T, V)
    assert len(got["logit_lens"]) == GQA.n_layer + 1 and all(
        len(row) == len(ids) for row in got["logit_lens"]
    )
    for layer, row in enumerate(got["logit_lens"]):
        for t, entry in enumerate(row):
            top = entry["top"]
            assert len(top) == 5 and all(a["p"] >= b["p"] for a, b in zip(top, top[1:], strict=False))
            for item in top:  # each listed token has transformers' probability, and the top one is its best
                assert item["p"] == pytest.approx(float(lens[layer, t, item["id"]]), abs=1e-4)
                assert item["token"] == tok.token_text(item["id"])
            assert top[0]["p"] == pytest.approx(float(lens[layer, t].max()), abs=1e-4)
    last = out.logits[0, -1].softmax(-1)
    assert len(got["next_token"]) == 10
    for item in got["next_token"]:
        assert item["p"] == pytest.approx(float(last[item["id"]]), abs=1e-4)
    assert got["next_token"][0]["p"] == pytest.approx(float(last.max()), abs=1e-4)


def test_the_json_attention_rows_sum_to_one_and_are_zero_where_masked(bundle_dir):
    got = inspect_json("Once upon a time", "--model", str(bundle_dir))
    for layer in got["attention"]:
        for head in layer:
            for q, row in enumerate(head):
                assert sum(row) == pytest.approx(1.0, abs=1e-5) and all(p == 0 for p in row[q + 1 :])


def test_a_prompt_from_stdin_gives_the_same_json(bundle_dir):
    result = runner.invoke(
        app, ["inspect", "-", "--model", str(bundle_dir), "--json"], input="Once upon a time\n"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == inspect_json("Once upon a time", "--model", str(bundle_dir))


def test_a_prompt_longer_than_the_context_is_cut_to_its_last_tokens_with_a_note(bundle_dir):
    text = " ".join([PROMPT] * 6)
    ids = load_bundle(bundle_dir).tokenizer.encode(text)
    assert len(ids) > GQA.context_length
    result = runner.invoke(app, ["inspect", text, "--model", str(bundle_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["token_ids"] == ids[-GQA.context_length :]
    assert f"the prompt is {len(ids)} tokens" in result.stderr and "the last 64" in result.stderr


@pytest.mark.parametrize("columns", [80, 200])
def test_the_table_fits_the_terminal_and_shows_every_layer_when_it_can(bundle_dir, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    result = runner.invoke(app, ["inspect", PROMPT, "--model", str(bundle_dir), "--ablate", "1.1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line[:3].strip().isdigit()]
    assert all(len(line) <= columns for line in rows)
    assert "knocked out: 1.1" in lines[0] and lines[-1].startswith("Next token: ")
    assert any(line.startswith("pos token") and "L2" in line for line in lines)  # the lens' last layer
    n_tokens = len(load_bundle(bundle_dir).tokenizer.encode(PROMPT))
    assert len(rows) == 2 * n_tokens  # the lens table and the attention table


def test_the_table_keeps_control_characters_out_of_the_terminal(bundle_dir, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    result = runner.invoke(
        app, ["inspect", "Lily\x1b[31m said\x07 hi\r\nthen\tshe", "--model", str(bundle_dir)]
    )
    assert result.exit_code == 0, result.output
    assert not any(ch in result.stdout for ch in "\x1b\x07\r\t")
    assert "↵" in result.stdout


def test_many_layers_in_a_narrow_terminal_show_evenly_spaced_ones(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    model = random_slm(GQA.with_(vocab_size=tiny_tokenizer.vocab_size, n_layer=9))
    path = save_bundle(tmp_path / "deep", model, tiny_tokenizer, {"data": "synthetic"})
    result = runner.invoke(app, ["inspect", "Once upon a time", "--model", str(path)])
    assert result.exit_code == 0, result.output
    assert "(layers 0, 2, 4, 5, 7, 9 of 0-9: a wider terminal shows them all)" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines() if line[:3].strip().isdigit())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Once", "--ablate", "99.0"], "no head 99.0: the model has 2 layers of 4 heads (0.0 to 1.3)"),
        (["Once", "--ablate", "x"], "a head is LAYER.HEAD with whole numbers from 0, like 3.5, not 'x'"),
        (["Once", "--ablate", "1.4"], "no head 1.4"),
        ([""], "the prompt is empty"),
        (["  \n"], "the prompt is empty"),
        (["Once", "--dtype", "fp8"], "unknown dtype 'fp8'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(bundle_dir, args, message):
    assert message in one_error(runner.invoke(app, ["inspect", *args, "--model", str(bundle_dir)]))


def test_an_unknown_model_and_an_empty_stdin_are_one_line(bundle_dir):
    assert "no-such-model: no such model bundle" in one_error(
        runner.invoke(app, ["inspect", "Once", "--model", "no-such-model"])
    )
    result = runner.invoke(app, ["inspect", "-", "--model", str(bundle_dir)], input="")
    assert "the prompt is empty" in one_error(result)


def test_the_default_model_opens_and_knocks_out_a_head():
    got = inspect_json("Once upon a time, there was a girl named Lily. Lily", "--ablate", "5.7")
    assert got["model"] == "helium-default" and got["ablated"] == ["5.7"]
    assert (got["n_layer"], got["n_head"]) == (6, 8) and len(got["logit_lens"]) == 7


def test_int8_and_bfloat16_bundles_run_close_to_float32(tmp_path, tiny_tokenizer, bundle_dir):
    """An int8 bundle is inspected with its int8 weights (as the API gives them); --dtype bfloat16 rounds the
    weights, so its numbers are near float32's, not equal."""
    from engine.inspect import run_with_cache
    from engine.model.quant import quantize_model

    int8 = save_bundle(tmp_path / "int8", quantize_model(random_slm(GQA.with_(vocab_size=tiny_tokenizer.vocab_size))),
                       tiny_tokenizer, {"data": "synthetic"})  # fmt: skip
    got = inspect_json(PROMPT, "--model", str(int8), "--ablate", "0.1")
    bundle = load_bundle(int8, quantize="int8")
    want = run_with_cache(bundle.model, bundle.tokenizer.encode(PROMPT), [(0, 1)]).logits[-1].softmax(-1)
    for item in got["next_token"]:
        assert item["p"] == pytest.approx(float(want[item["id"]]), abs=1e-5)
    exact = inspect_json(PROMPT, "--model", str(bundle_dir))
    rounded = inspect_json(PROMPT, "--model", str(bundle_dir), "--dtype", "bfloat16")
    assert rounded["token_ids"] == exact["token_ids"]
    diff = torch.tensor(rounded["attention"]) - torch.tensor(exact["attention"])
    assert 0 < diff.abs().max() < 0.3 and diff.abs().mean() < 0.01  # (sharp random weights: a few rows move)
    p = {item["id"]: item["p"] for item in rounded["next_token"]}
    top = exact["next_token"][0]
    assert p.get(top["id"], 0.0) == pytest.approx(top["p"], abs=0.05)


def test_bench_inspect_reports_each_step_for_each_model():
    result = runner.invoke(
        app,
        [
            "bench",
            "inspect",
            "--model",
            "tiny",
            "--tokens",
            "40",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    (tiny,) = report["models"]
    assert tiny["model"] == "tiny" and tiny["tokens"] == 40 and report["threads"] == 1
    assert set(tiny["best"]) == {
        "view",
        "view_cpu",
        "run_with_cache",
        "logit_lens",
        "attribution",
        "total",
        "total_cpu",
        "model_forward",
    }
    assert len(report["load_average_before"]) == 3
