"""`helium export hf` / `helium import hf`: transformers' logits and greedy text equal Helium's, export → import
round-trips bit for bit, the card and configs, bad input, and --push / Hub downloads that fail in one line offline.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from engine.bundles.bundle import Bundle, load_bundle, save_bundle
from engine.bundles.registry import resolve_model
from engine.errors import BundleError
from engine.formats.hf import export_hf, import_hf, rope_from_hf, rope_to_hf
from engine.formats.llama2c import build_tokenizer
from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model.tinyslm import TinySLM, apply_rope, precompute_rope
from engine.model.tokenizer import TextTokenizer
from helium_tui.cli import app
from tests.conftest import LLAMA2C, TINY, needs_shared
from tests.export_helpers import SPM_TEXTS, one_error, spm_pieces
from tests.stories import told

runner = CliRunner()
PROMPT = "Once upon a time, Lily"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (see conftest.one_thread): tiny models, no spinning threads."""


def bundle_with(tokenizer: TextTokenizer, tmp_path: Path, **changes) -> Path:
    torch.manual_seed(3)
    model = TinySLM(TINY.with_(vocab_size=tokenizer.vocab_size, **changes)).eval()
    return save_bundle(tmp_path / "bundle", model, tokenizer, {"data": "synthetic"})


def transformers_model(directory: Path):
    transformers = pytest.importorskip("transformers", reason="needs transformers (pip install 'helium-studio[interop]')")
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(directory)


def greedy(bundle: Bundle, prompt: str, n: int) -> str:
    params = SamplingParams(max_new_tokens=n, temperature=0, repetition_penalty=1.0)
    return told(Generator(bundle.model, bundle.tokenizer), prompt, params).text


def check_transformers_matches(bundle: Bundle, directory: Path, prompt: str = PROMPT, n: int = 40) -> None:
    """Same prompt ids, logits within 1e-4 (float32), identical greedy text."""
    model, tok = transformers_model(directory)
    ids = tok(prompt, return_tensors="pt").input_ids
    assert ids[0].tolist() == bundle.tokenizer.encode(prompt)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, bundle.model(ids), atol=1e-4, rtol=0)
        out = model.generate(ids, do_sample=False, max_new_tokens=n, repetition_penalty=1.0)
    assert tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True) == greedy(bundle, prompt, n)


# ---------------------------------------------------------------------------------------------------------
# The RoPE pairing


def test_the_permutation_turns_adjacent_pairs_into_transformers_halves():
    """Rotating adjacent pairs, then permuting, equals permuting, then rotating halves (transformers' rotate_half)."""
    torch.manual_seed(0)
    n_heads, head_dim, cols = 3, 8, 5
    w, x = torch.randn(n_heads * head_dim, cols), torch.randn(1, 4, cols)
    cos, sin = precompute_rope(head_dim, 4, 10000.0)
    ours = apply_rope((x @ w.T).view(1, 4, n_heads, head_dim), cos, sin).flatten(-2)
    q = (x @ rope_to_hf(w, n_heads).T).view(1, 4, n_heads, head_dim)
    c, s = torch.cat([cos, cos], -1)[None, :, None, :], torch.cat([sin, sin], -1)[None, :, None, :]
    halves = torch.cat([-q[..., head_dim // 2 :], q[..., : head_dim // 2]], -1)
    theirs = (q * c + halves * s).flatten(-2)
    torch.testing.assert_close(theirs, rope_to_hf(ours.view(4, -1).T, n_heads).T.view(1, 4, -1))
    assert torch.equal(rope_from_hf(rope_to_hf(w, n_heads), n_heads), w)


# ---------------------------------------------------------------------------------------------------------
# transformers on the exported directory


@pytest.mark.parametrize("changes", [{}, {"n_kv_head": None, "tie_embeddings": False}], ids=["gqa-tied", "mha-untied"])
def test_transformers_logits_and_greedy_text_equal_heliums(tiny_tokenizer, tmp_path, changes):
    bundle = load_bundle(bundle_with(tiny_tokenizer, tmp_path, **changes))
    check_transformers_matches(bundle, export_hf(bundle, tmp_path / "hf"))


def test_transformers_tells_the_default_models_story(tmp_path):
    bundle = load_bundle(resolve_model("helium-default"))
    check_transformers_matches(bundle, export_hf(bundle, tmp_path / "hf", dtype="float32"), "Once upon a time", 80)


def test_transformers_encodes_llama2c_vocabularies_like_helium(tmp_path):
    pieces, scores = spm_pieces()
    tok = TextTokenizer(build_tokenizer(pieces, scores), bos_id=1, eos_id=1)
    bundle = load_bundle(bundle_with(tok, tmp_path))
    _, hf_tok = transformers_model(export_hf(bundle, tmp_path / "hf"))
    for text in SPM_TEXTS:
        ids = hf_tok(text).input_ids
        assert ids == tok.encode(text), text
        assert hf_tok.decode(ids, skip_special_tokens=True) == tok.decode(ids), text


@needs_shared(LLAMA2C / "stories260K.bin", covers="stories260K through transformers")
def test_transformers_tells_stories260k_like_run_c(tmp_path):
    from engine.formats.llama2c import import_llama2c

    bundle = load_bundle(import_llama2c(LLAMA2C / "stories260K.bin", LLAMA2C / "tok512.bin", tmp_path / "s"))
    check_transformers_matches(bundle, export_hf(bundle, tmp_path / "hf"), "Once upon a time", 80)


# ---------------------------------------------------------------------------------------------------------
# What the directory holds, and the way back


def test_export_writes_configs_and_a_hub_card(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    bundle.metadata |= {"eval_valid_txt": {"bits_per_byte": 1.2345}, "train_command": "helium train --preset tiny"}
    out = export_hf(bundle, tmp_path / "hf")
    names = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"}
    assert {p.name for p in out.iterdir()} == names
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 2
    assert cfg["tie_word_embeddings"] is True and cfg["torch_dtype"] == "float32"
    assert "lm_head.weight" not in load_file(str(out / "model.safetensors"))
    gen = json.loads((out / "generation_config.json").read_text())
    defaults = SamplingParams()
    assert (gen["temperature"], gen["top_p"], gen["top_k"], gen["repetition_penalty"]) == (
        defaults.temperature, defaults.top_p, 0, defaults.repetition_penalty
    )
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["bos_token"] == tok_cfg["eos_token"] == "<|endoftext|>"
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "mit" and front["datasets"] == ["roneneldan/TinyStories"]
    assert front["pipeline_tag"] == "text-generation"
    assert front["model-index"][0]["results"][0]["metrics"][0]["value"] == 1.2345
    assert f"{bundle.model.num_params():,}" in card and "helium train --preset tiny" in card


def test_export_then_import_round_trips_bit_for_bit(tiny_tokenizer, tmp_path):
    source = bundle_with(tiny_tokenizer, tmp_path, n_kv_head=None, tie_embeddings=False)
    back = import_hf(export_hf(load_bundle(source), tmp_path / "hf"), tmp_path / "back")
    a, b = load_file(str(source / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    original, restored = load_bundle(source), load_bundle(back)
    assert restored.config == original.config
    assert (restored.tokenizer.bos_id, restored.tokenizer.eos_id) == (original.tokenizer.bos_id, original.tokenizer.eos_id)
    assert restored.tokenizer.encode(PROMPT) == original.tokenizer.encode(PROMPT)
    assert restored.metadata["created_by"] == "helium import hf"


def test_bfloat16_weights_round_trip_in_bfloat16(tmp_path, helium_home):
    shipped = resolve_model("helium-default")
    r = runner.invoke(app, ["export", "hf", "helium-default", "--out", str(tmp_path / "hf")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert (tmp_path / "hf" / "MODEL_CARD.md").read_text() == (shipped / "MODEL_CARD.md").read_text()
    r = runner.invoke(app, ["import", "hf", str(tmp_path / "hf"), "--name", "default-again"])
    assert r.exit_code == 0 and "--model default-again" in r.stdout, r.output
    a = load_file(str(shipped / "model.safetensors"))
    b = load_file(str(helium_home / "models" / "default-again" / "model.safetensors"))
    assert all(b[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)


def test_import_refuses_what_helium_cannot_run(tmp_path, tiny_bundle):
    out = export_hf(load_bundle(tiny_bundle), tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    for change, message in [
        ({"model_type": "mistral"}, "not a LlamaForCausalLM"),
        ({"hidden_act": "gelu"}, "activation 'gelu'"),
        ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "RoPE scaling 'yarn'"),
        ({"vocab_size": cfg["vocab_size"] + 8}, "the tokenizer has"),
    ]:
        (out / "config.json").write_text(json.dumps(cfg | change))
        with pytest.raises(BundleError, match=message):
            import_hf(out, tmp_path / "back")
        assert not (tmp_path / "back").exists()
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "model.safetensors").write_bytes(b"\0" * 40)
    with pytest.raises(BundleError, match="model.safetensors: unreadable"):
        import_hf(out, tmp_path / "back")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "tiny-bundle"]  # no temp dirs left


def test_sliding_window_is_refused_for_transformers(tiny_bundle, tmp_path):
    """transformers' LlamaForCausalLM ignores sliding_window (only Mistral-style models honour it)."""
    bundle = load_bundle(tiny_bundle)
    bundle.config = replace(bundle.config, sliding_window=16)
    with pytest.raises(BundleError, match="cannot be exported to transformers"):
        export_hf(bundle, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# ---------------------------------------------------------------------------------------------------------
# The commands: bad input, --force, --push and Hub downloads offline


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_refuses_bad_input_and_leaves_nothing(tiny_bundle, tmp_path, helium_home):
    out = tmp_path / "hf"
    assert runner.invoke(app, ["export", "hf", str(tiny_bundle), "--out", str(out)]).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    assert "(a transformers export from Helium; use --force" in one_error(runner.invoke(app, ["export", "hf", str(tiny_bundle), "--out", str(out)]))
    r = runner.invoke(app, ["export", "hf", str(tiny_bundle), "--out", str(out), "--force", "--dtype", "bfloat16"])
    assert r.exit_code == 0 and (out / "model.safetensors").stat().st_size < 0.6 * len(before)
    assert "unknown dtype 'int4'" in one_error(
        runner.invoke(app, ["export", "hf", str(tiny_bundle), "--out", str(tmp_path / "x"), "--dtype", "int4"])
    )
    assert "no such model bundle" in one_error(runner.invoke(app, ["export", "hf", "nope", "--out", str(tmp_path / "x")]))
    (tmp_path / "a-file").write_text("")
    msg = one_error(runner.invoke(app, ["export", "hf", str(tiny_bundle), "--out", str(tmp_path / "a-file" / "x")]))
    assert "is not a directory" in msg
    assert "exactly one of --out DIR or --name NAME" in one_error(runner.invoke(app, ["import", "hf", str(out)]))
    assert "no such directory" in one_error(runner.invoke(app, ["import", "hf", str(tmp_path / "missing"), "--name", "m"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "hf", "tiny-bundle"]  # no temp dirs left


def test_push_needs_a_token_and_fails_in_one_line_offline(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    args = ["export", "hf", str(tiny_bundle), "--out", str(tmp_path / "hf"), "--push", "me/story"]
    assert "no Hugging Face token" in one_error(runner.invoke(app, args))
    assert not (tmp_path / "hf").exists()
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    msg = one_error(r := runner.invoke(app, args))
    assert f"cannot push to me/story on http://127.0.0.1:{port} (HF_ENDPOINT)" in msg and "offline?" in msg
    assert "exported" in r.stdout and (tmp_path / "hf" / "model.safetensors").is_file()  # the export itself is whole
    assert 'from_pretrained("me/story")' in (tmp_path / "hf" / "README.md").read_text()  # the card names the repo


def test_import_from_an_unreachable_hub_is_one_line(tmp_path, monkeypatch, helium_home):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    msg = one_error(runner.invoke(app, ["import", "hf", "someone/stories", "--name", "s"]))
    assert "cannot download someone/stories from http://127.0.0.1:" in msg and "(HF_ENDPOINT)" in msg
    assert not (helium_home / "models" / "s").exists()
