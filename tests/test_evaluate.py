"""`helium eval`: cross-entropy against a hand computation, sliding-window coverage, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from engine.generation.evaluate import evaluate_text, split_documents, windows
from helium_tui.cli import app


def _hand_nll(model, ids: list[int]) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]]))[0].double(), -1)
    return -sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1))


def test_documents_match_hand_computed_cross_entropy(tiny_model, tiny_tokenizer):
    stories = ["Lily had a ball.", "Tom was sad. Then he was happy!", "café 😀"]
    text = "".join(f"{s}\n<|endoftext|>\n" for s in stories)
    r = evaluate_text(tiny_model, tiny_tokenizer, text)
    ids = [tiny_tokenizer.encode(s) for s in stories]
    nll = sum(_hand_nll(tiny_model, i) for i in ids)
    tokens = sum(len(i) - 1 for i in ids)
    nbytes = sum(len(s.encode()) for s in stories)
    assert r.documents == 3 and r.tokens == tokens and r.bytes == nbytes
    assert r.nats_per_token == pytest.approx(nll / tokens, rel=1e-5)
    assert r.bits_per_byte == pytest.approx(nll / math.log(2) / nbytes, rel=1e-5)


def test_split_documents():
    assert split_documents("a\n<|endoftext|>\nb\n<|endoftext|>\n\n") == ["a", "b"]
    assert split_documents("one\n\ntwo\n") == ["one\n\ntwo"]
    assert split_documents("\n\n") == []


@pytest.mark.parametrize("n", [2, 10, 17, 18, 40, 101])
def test_windows_score_every_target_once_within_context(n):
    context = 16
    ids = list(range(n))
    scored = []
    for w in windows(ids, context):
        assert len(w.ids) <= context + 1 and 1 <= w.score <= len(w.ids) - 1
        start = ids.index(w.ids[0])
        targets = list(range(start + len(w.ids) - w.score, start + len(w.ids)))
        if scored:  # after the first window, each target sees at least half a context before it
            assert targets[0] - start >= context // 2
        scored += targets
    assert scored == list(range(1, n))


def test_long_stream_uses_sliding_window(tiny_model, tiny_tokenizer):
    text = "Lily had a ball and a cat. " * 30
    ids = tiny_tokenizer.encode(text.strip("\n"))
    assert len(ids) > 2 * tiny_model.config.context_length
    r = evaluate_text(tiny_model, tiny_tokenizer, text)
    expected = 0.0
    for w in windows(ids, tiny_model.config.context_length):
        with torch.no_grad():
            logp = torch.log_softmax(tiny_model(torch.tensor([w.ids[:-1]]))[0].double(), -1)
        expected -= sum(logp[i, w.ids[i + 1]].item() for i in range(len(w.ids) - 1 - w.score, len(w.ids) - 1))
    assert r.tokens == len(ids) - 1 and r.documents == 1
    assert r.nll_nats == pytest.approx(expected, rel=1e-5)


def test_eval_cli_json(tiny_bundle, tmp_path):
    data = tmp_path / "valid.txt"
    data.write_text("Lily had a ball.\n<|endoftext|>\nTom was sad.\n<|endoftext|>\n")
    r = CliRunner().invoke(app, ["eval", "--model", str(tiny_bundle), "--data", str(data), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    for key in ("nats_per_token", "bits_per_byte", "tokens", "bytes", "model"):
        assert key in out
    assert out["documents"] == 2 and out["bytes"] == len("Lily had a ball.Tom was sad.")


def test_eval_cli_missing_file_is_one_line_error(tiny_bundle, tmp_path):
    r = CliRunner().invoke(app, ["eval", "--model", str(tiny_bundle), "--data", str(tmp_path / "nope.txt")])
    assert r.exit_code == 2 and "nope.txt" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_windows_over_ids_arriving_in_chunks_are_the_same_and_hold_little(chunk):
    from engine.generation.evaluate import _WindowCutter

    ids, context = list(range(300)), 16
    cutter = _WindowCutter(context)
    got = []
    for i in range(0, len(ids), chunk):
        got += [(w.ids, w.score) for w in cutter.feed(ids[i : i + chunk])]
        assert len(cutter.ids) <= context + 1 + chunk + cutter.stride  # bounded, whatever the stream's length
    got += [(w.ids, w.score) for w in cutter.finish()]
    assert got == [(w.ids, w.score) for w in windows(ids, context)]


def test_a_file_read_in_small_blocks_scores_like_the_text_in_memory(tiny_model, tiny_tokenizer, tmp_path):
    from engine.generation.evaluate import evaluate_file

    stories = [f"Story {i}: Lily had a ball. Tom was sad.\nThen he was happy!" for i in range(12)]
    text = "\n<|endoftext|>\n".join(stories) + "\n<|endoftext|>\n\n\n"
    path = tmp_path / "stories.txt"
    path.write_text(text)
    seen = []
    a = evaluate_file(tiny_model, tiny_tokenizer, path, progress=lambda d, t: seen.append((d, t)), block_chars=80)
    b = evaluate_text(tiny_model, tiny_tokenizer, text)
    assert (a.tokens, a.bytes, a.documents) == (b.tokens, b.bytes, b.documents) == (b.tokens, b.bytes, 12)
    assert a.nll_nats == pytest.approx(b.nll_nats, rel=1e-6)
    assert seen and seen[-1] == (path.stat().st_size, path.stat().st_size)


def test_split_documents_handles_separators_inside_lines_and_blank_documents():
    assert split_documents("<|endoftext|>a<|endoftext|>  \n<|endoftext|>\n\nb\n\n") == ["a", "b"]
    assert split_documents("  x\n\n") == ["  x"]


def test_eval_json_stdout_is_one_clean_json_line(tiny_bundle, tmp_path):
    data = tmp_path / "valid.txt"
    data.write_text("Lily had a ball.\n")
    r = CliRunner().invoke(app, ["eval", "--model", str(tiny_bundle), "--data", str(data), "--json"])
    assert r.exit_code == 0 and r.stdout.startswith("{") and len(r.stdout.strip().splitlines()) == 1


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_eval_says_which_quantized_weights_it_scored(tiny_bundle, tmp_path, quantize):
    data = tmp_path / "valid.txt"
    data.write_text("Lily had a ball.\n<|endoftext|>\nTom was sad.\n<|endoftext|>\n")
    r = CliRunner().invoke(app, ["eval", "--model", str(tiny_bundle), "--data", str(data), "--quantize", quantize])
    assert r.exit_code == 0, r.output
    assert f"({quantize} weights)" in r.stdout, r.stdout


def test_a_set_yes_or_no_must_be_one():
    from helium_tui.commands.evaluate import parse_setting

    assert parse_setting("penalize_prompt=False") == {"penalize_prompt": False}
    assert parse_setting("penalize_prompt=yes,name_bonus=1") == {"penalize_prompt": True, "name_bonus": 1.0}
    with pytest.raises(ValueError, match="'maybe' is not true or false"):
        parse_setting("penalize_prompt=maybe")  # it measured the prompt spared, as if 'false' had been given


def test_story_rows_show_each_setting_whole(tiny_bundle):
    setting = "top_k=40,frequency_penalty=0.5,presence_penalty=0.5,repeat_last_n=64,penalize_prompt=false"
    args = ["eval", "--model", str(tiny_bundle), "--stories", "1", "--max-tokens", "4", "--set", setting]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "top-k 40" in r.stdout and "last 64 spare-prompt" in r.stdout, r.stdout  # it was cut at 44 columns
