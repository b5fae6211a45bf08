"""`helium export gguf`: every key and tensor read back with gguf.GGUFReader, llama.cpp's own layout, Q8_0
within tolerance, both tokenizer kinds, bad input; with llama-cpp-python, llama.cpp's logits and greedy stories.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from engine.bundles.bundle import Bundle, load_bundle, save_bundle
from engine.bundles.registry import resolve_model
from engine.errors import BundleError
from engine.formats.llama2c import build_tokenizer
from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model.config import ModelConfig
from engine.model.tinyslm import TinySLM
from engine.model.tokenizer import TextTokenizer
from helium_tui.cli import app
from tests.conftest import LLAMA2C, TINY, needs_shared
from tests.export_helpers import SPM_TEXTS, one_error, runc_encode, spm_pieces

gguf = pytest.importorskip("gguf", reason="needs the gguf package (pip install 'helium-studio[interop]')")

from engine.formats.gguf import export_gguf, gguf_tensors, gguf_vocab  # noqa: E402

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (see conftest.one_thread): tiny models, no spinning threads."""


def read(path: Path) -> tuple[dict, dict]:
    """({key: value}, {tensor name: ReaderTensor}) of a GGUF file."""
    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t for t in reader.tensors}


def dequantized(tensor) -> np.ndarray:
    """A reader tensor as float32 in PyTorch's (rows, cols) shape."""
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(tuple(reversed(tensor.shape.tolist())))


@pytest.fixture
def spm_bundle(tmp_path) -> Path:
    pieces, scores = spm_pieces()
    tok = TextTokenizer(build_tokenizer(pieces, scores), bos_id=1, eos_id=1)
    torch.manual_seed(0)
    model = TinySLM(TINY.with_(vocab_size=tok.vocab_size)).eval()
    return save_bundle(tmp_path / "spm-bundle", model, tok, {"source": "synthetic llama2.c"})


# ---------------------------------------------------------------------------------------------------------
# Shared-free: what the file holds


def test_f32_gguf_holds_every_key_and_tensor_unchanged(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    cfg, tok = bundle.config, bundle.tokenizer
    path = export_gguf(bundle, tmp_path / "tiny.gguf", "f32")
    keys, tensors = read(path)
    assert keys["general.architecture"] == "llama" and keys["general.file_type"] == gguf.LlamaFileType.ALL_F32
    expected = {
        "llama.context_length": cfg.context_length, "llama.embedding_length": cfg.d_model,
        "llama.block_count": cfg.n_layer, "llama.feed_forward_length": cfg.hidden_dim,
        "llama.attention.head_count": cfg.n_head, "llama.attention.head_count_kv": cfg.kv_heads,
        "llama.rope.dimension_count": cfg.head_dim, "llama.vocab_size": cfg.vocab_size,
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.bos_token_id": tok.bos_id, "tokenizer.ggml.eos_token_id": tok.eos_id,
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
    }  # fmt: skip
    assert {k: keys[k] for k in expected} == expected
    assert keys["llama.rope.freq_base"] == pytest.approx(cfg.rope_theta)
    assert keys["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg.norm_eps)
    vocab = tok.hf.get_vocab()
    assert keys["tokenizer.ggml.tokens"] == sorted(vocab, key=vocab.get)
    assert keys["tokenizer.ggml.token_type"][tok.bos_id] == gguf.TokenType.CONTROL
    hf_merges = json.loads(tok.hf.to_str())["model"]["merges"]
    assert keys["tokenizer.ggml.merges"] == [m if isinstance(m, str) else " ".join(m) for m in hf_merges]

    per_layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    names = {"token_embd.weight", "output_norm.weight"}
    names |= {f"blk.{i}.{n}.weight" for i in range(cfg.n_layer) for n in per_layer}
    assert set(tensors) == names  # tied embeddings: no output.weight
    state = bundle.model.state_dict()
    q, kv = cfg.n_head * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    wqkv, w13 = state["layers.1.attn.wqkv.weight"], state["layers.1.mlp.w13.weight"]
    pairs = {
        "token_embd.weight": state["tok_embeddings.weight"], "output_norm.weight": state["norm.weight"],
        "blk.1.attn_q.weight": wqkv[:q], "blk.1.attn_k.weight": wqkv[q : q + kv], "blk.1.attn_v.weight": wqkv[q + kv :],
        "blk.1.ffn_gate.weight": w13[: cfg.hidden_dim], "blk.1.ffn_up.weight": w13[cfg.hidden_dim :],
        "blk.1.ffn_down.weight": state["layers.1.mlp.w2.weight"], "blk.1.attn_output.weight": state["layers.1.attn.wo.weight"],
    }  # fmt: skip
    for name, want in pairs.items():
        assert tensors[name].tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(dequantized(tensors[name]), want.numpy(), err_msg=name)


def test_q_and_k_are_what_llama_cpps_own_converter_makes_from_the_transformers_export(tiny_bundle):
    """llama.cpp's convert_hf_to_gguf.py turns HF q/k rows back with reshape(n_head, 2, D/2, C).swapaxes(1, 2);
    applied to our transformers export (checked against transformers itself in test_export_hf) it must give
    exactly the GGUF tensors: Helium's adjacent-pair rows, unpermuted."""
    from engine.formats.hf import to_hf_state

    bundle = load_bundle(tiny_bundle)
    cfg = bundle.config
    hf = to_hf_state(cfg, bundle.model.state_dict())
    ours = gguf_tensors(cfg, bundle.model.state_dict())

    def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    for i in range(cfg.n_layer):
        q = hf[f"model.layers.{i}.self_attn.q_proj.weight"].numpy()
        k = hf[f"model.layers.{i}.self_attn.k_proj.weight"].numpy()
        np.testing.assert_array_equal(llama_cpp_permute(q, cfg.n_head), ours[f"blk.{i}.attn_q.weight"])
        np.testing.assert_array_equal(llama_cpp_permute(k, cfg.kv_heads), ours[f"blk.{i}.attn_k.weight"])


def test_q8_0_dequantizes_within_tolerance_and_odd_rows_fall_back_to_f16(tiny_tokenizer, tmp_path):
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=tiny_tokenizer.vocab_size, d_model=64, n_layer=1, n_head=4, hidden_dim=80,
                      context_length=32, tie_embeddings=False)  # fmt: skip
    bundle = Bundle(TinySLM(cfg).eval(), tiny_tokenizer, cfg, {}, None)
    path = export_gguf(bundle, tmp_path / "q8.gguf", "q8_0")
    keys, tensors = read(path)
    assert keys["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    want = gguf_tensors(cfg, bundle.model.state_dict())
    assert set(tensors) == set(want) and "output.weight" in tensors  # untied: its own output head
    for name, tensor in tensors.items():
        got, ref = dequantized(tensor), want[name]
        if ref.ndim == 1:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(got, ref)
        elif ref.shape[1] % 32:  # ffn_down: rows of 80 are not whole 32-value blocks
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F16
            np.testing.assert_array_equal(got, ref.astype(np.float16).astype(np.float32))
        else:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0
            blocks = ref.reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / 127  # one int8 step of each block
            # rounding costs half a step; the step itself is stored in float16 (relative error 2^-11 x 127)
            assert (np.abs(got.reshape(-1, 32) - blocks) <= 0.57 * step).all(), name
    assert path.stat().st_size < 0.45 * export_gguf(bundle, tmp_path / "f32.gguf", "f32").stat().st_size


@pytest.mark.parametrize(("dtype", "qtype", "cast"), [("f16", "F16", torch.float16), ("bf16", "BF16", torch.bfloat16)])
def test_half_precision_exports_round_like_torch(tiny_bundle, tmp_path, dtype, qtype, cast):
    bundle = load_bundle(tiny_bundle)
    _, tensors = read(export_gguf(bundle, tmp_path / f"{dtype}.gguf", dtype))
    emb = tensors["token_embd.weight"]
    assert emb.tensor_type == gguf.GGMLQuantizationType[qtype]
    want = bundle.model.tok_embeddings.weight.detach().to(cast).float().numpy()
    np.testing.assert_array_equal(dequantized(emb), want)


def test_auto_keeps_the_stored_precision(tmp_path):
    bundle = load_bundle(resolve_model("helium-default"))  # shipped with bfloat16 weights
    keys, tensors = read(export_gguf(bundle, tmp_path / "d.gguf"))
    assert keys["general.file_type"] == gguf.LlamaFileType.MOSTLY_BF16
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.BF16


def test_llama2c_vocabulary_becomes_llama_cpps_sentencepiece_model(spm_bundle, tmp_path):
    bundle = load_bundle(spm_bundle)
    keys, _ = read(export_gguf(bundle, tmp_path / "spm.gguf", "f32"))
    assert keys["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.merges" not in keys
    types, tokens = keys["tokenizer.ggml.token_type"], keys["tokenizer.ggml.tokens"]
    assert tokens[:3] == ["<unk>", "<s>", "</s>"] and types[:3] == [2, 3, 3]  # unknown, control, control
    assert tokens[3 + 0x41] == "<0x41>" and set(types[3:259]) == {gguf.TokenType.BYTE}
    assert keys["tokenizer.ggml.bos_token_id"] == 1 and keys["tokenizer.ggml.eos_token_id"] == 1
    assert keys["tokenizer.ggml.unknown_token_id"] == 0 and keys["tokenizer.ggml.add_space_prefix"] is True


def test_sentencepiece_scores_replay_run_c_merges(spm_bundle):
    """With the scores in the GGUF, run.c's (and llama.cpp's) merge loop encodes like the bundle, including runs
    of spaces whose original scores tie; and like run.c with the original tokenizer.bin scores."""
    pieces, scores = spm_pieces()
    bundle = load_bundle(spm_bundle)
    vocab = gguf_vocab(bundle.tokenizer.hf.to_str())
    for text in SPM_TEXTS:
        helium = bundle.tokenizer.encode(text, add_bos=False)
        assert runc_encode(text, vocab.tokens, vocab.scores) == helium, text
        assert runc_encode(text, vocab.tokens, scores) == helium, text


@needs_shared(LLAMA2C / "tokenizer.bin", covers="Llama 2's sentencepiece vocabulary in GGUF")
def test_llama2_32k_scores_replay_run_c():
    from engine.formats.llama2c import read_tokenizer_bin

    pieces, scores = read_tokenizer_bin(LLAMA2C / "tokenizer.bin")
    tok = build_tokenizer(pieces, scores)
    vocab = gguf_vocab(tok.to_str())
    for text in ["Hello  world   ok", "x        y", "It was   a    fine day.  ", "\t\ttab", "  " * 9 + "z"]:
        want = tok.encode(text, add_special_tokens=False).ids
        assert runc_encode(text, vocab.tokens, vocab.scores) == want == runc_encode(text, vocab.tokens, scores)


def test_tokenizers_llama_cpp_cannot_reproduce_are_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(BundleError, match=r"BPE with a Whitespace pre-tokenizer\) has no llama.cpp equivalent"):
        gguf_vocab(tok.to_str())


def test_sliding_window_is_refused_unless_it_covers_the_context(tiny_bundle, tmp_path):
    """llama.cpp's llama architecture attends over everything (checked: it ignores llama.attention.sliding_window)."""
    bundle = load_bundle(tiny_bundle)
    full = bundle.config
    bundle.config = replace(full, sliding_window=16)
    with pytest.raises(BundleError, match=r"sliding-window attention \(window 16 < context 64\)"):
        export_gguf(bundle, tmp_path / "out" / "w.gguf", "f32")
    assert not (tmp_path / "out").exists()
    bundle.config = replace(full, sliding_window=full.context_length)  # the same as full attention
    assert export_gguf(bundle, tmp_path / "out" / "w.gguf", "f32").is_file()


# ---------------------------------------------------------------------------------------------------------
# The command


def test_cli_exports_and_refuses_bad_input_leaving_nothing(tiny_bundle, tmp_path, helium_home):
    out = tmp_path / "out"
    out.mkdir()
    r = runner.invoke(app, ["export", "gguf", str(tiny_bundle), "--out", str(out / "m.gguf"), "--dtype", "q8_0"])
    assert r.exit_code == 0, r.output
    assert "q8_0" in r.stdout and "llama-completion -m" in r.stdout
    before = (out / "m.gguf").read_bytes()
    assert "already exists" in one_error(runner.invoke(app, ["export", "gguf", str(tiny_bundle), "--out", str(out / "m.gguf")]))
    assert (out / "m.gguf").read_bytes() == before
    r = runner.invoke(app, ["export", "gguf", str(tiny_bundle), "--out", str(out / "m.gguf"), "--dtype", "f32", "--force"])
    assert r.exit_code == 0 and (out / "m.gguf").stat().st_size > len(before)
    assert "unknown dtype 'q2_k'" in one_error(
        runner.invoke(app, ["export", "gguf", str(tiny_bundle), "--out", str(out / "x.gguf"), "--dtype", "q2_k"])
    )
    assert "no such model bundle" in one_error(runner.invoke(app, ["export", "gguf", "nope", "--out", str(out / "x.gguf")]))
    (tmp_path / "a-file").write_text("")
    msg = one_error(runner.invoke(app, ["export", "gguf", str(tiny_bundle), "--out", str(tmp_path / "a-file" / "x.gguf")]))
    assert "is not a directory" in msg
    assert "is a directory" in one_error(runner.invoke(app, ["export", "gguf", str(tiny_bundle), "--out", str(out)]))
    assert sorted(p.name for p in out.iterdir()) == ["m.gguf"]  # no temp files, no partial outputs


# ---------------------------------------------------------------------------------------------------------
# llama.cpp itself (llama-cpp-python compiles it; skipped without it)


def llama(path: Path, **kwargs):
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'helium-studio[interop]')")
    return llama_cpp.Llama(str(path), n_threads=1, verbose=False, **kwargs)


def llama_greedy(llm, prompt_ids: list[int], n: int) -> list[int]:
    out: list[int] = []
    for t in llm.generate(prompt_ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        if t == llm.token_eos() or len(out) == n:
            return out
        out.append(t)
    return out


def helium_greedy(bundle: Bundle, prompt: str, n: int) -> list[int]:
    gen = Generator(bundle.model, bundle.tokenizer)
    ids: list[int] = []
    for nxt, _ in gen.tokens(bundle.tokenizer.encode(prompt), SamplingParams(max_new_tokens=n, temperature=0, repetition_penalty=1.0)):
        if int(nxt) == bundle.tokenizer.eos_id:
            break
        ids.append(int(nxt))
    return ids


@pytest.mark.parametrize("tied", [True, False])
def test_llama_cpp_logits_equal_heliums(tiny_tokenizer, tmp_path, tied):
    torch.manual_seed(2)
    cfg = TINY.with_(vocab_size=tiny_tokenizer.vocab_size, tie_embeddings=tied)
    bundle = Bundle(TinySLM(cfg).eval(), tiny_tokenizer, cfg, {}, None)
    path = export_gguf(bundle, tmp_path / "t.gguf", "f32")
    llm = llama(path, n_ctx=cfg.context_length, logits_all=True)
    ids = tiny_tokenizer.encode("Once upon a time, Lily had a red ball.")
    assert llm.tokenize(b"Once upon a time, Lily had a red ball.") == ids
    llm.eval(ids)
    with torch.no_grad():
        want = bundle.model(torch.tensor([ids]))[0].numpy()
    np.testing.assert_allclose(np.asarray(llm.scores[: len(ids)]), want, atol=2e-4, rtol=0)


def test_llama_cpp_tells_the_default_models_greedy_story(tmp_path):
    bundle = load_bundle(resolve_model("helium-default"))
    llm = llama(export_gguf(bundle, tmp_path / "d.gguf", "f32"), n_ctx=bundle.config.context_length)
    for text in ["Once upon a time", 'She said, "Hi!"\n\nThe end.  ', "café 😀 it's 42"]:
        assert llm.tokenize(text.encode()) == bundle.tokenizer.encode(text), text
    want = helium_greedy(bundle, "Once upon a time", 150)
    got = llama_greedy(llm, bundle.tokenizer.encode("Once upon a time"), 150)
    assert got == want and len(want) > 50
    assert llm.detokenize(got).decode() == bundle.tokenizer.decode(want)


def test_llama_cpp_encodes_llama2c_vocabularies_like_run_c(spm_bundle, tmp_path):
    bundle = load_bundle(spm_bundle)
    llm = llama(export_gguf(bundle, tmp_path / "spm.gguf", "f32"), vocab_only=True)
    for text in SPM_TEXTS:
        assert llm.tokenize(text.encode()) == bundle.tokenizer.encode(text), text


@needs_shared(LLAMA2C / "stories260K.bin", covers="stories260K's GGUF told by llama.cpp as run.c tells it")
def test_llama_cpp_tells_stories260k_like_run_c(tmp_path):
    from engine.formats.llama2c import import_llama2c

    bundle = load_bundle(import_llama2c(LLAMA2C / "stories260K.bin", LLAMA2C / "tok512.bin", tmp_path / "s"))
    llm = llama(export_gguf(bundle, tmp_path / "s.gguf", "f32"), n_ctx=bundle.config.context_length)
    got = llama_greedy(llm, [1], 200)
    assert got == helium_greedy(bundle, "", 200)
    reference = (LLAMA2C / "stories260K_greedy_200.txt").read_text(encoding="utf-8")
    assert llm.detokenize(got).decode().lstrip(" ") in reference  # run.c's own output (its last token cut)


def test_bench_gguf_measures_both_systems_on_the_same_tokens(tiny_bundle, tmp_path):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'helium-studio[interop]')")
    from benchmarks.gguf import GGUFBench, measure, report

    gguf_path = export_gguf(load_bundle(tiny_bundle), tmp_path / "t.gguf", "f32")
    helium = measure("helium float32", str(tiny_bundle), None, 1, "Lily had", 12)
    llama_cpp = measure("llama.cpp f32", str(tiny_bundle), gguf_path, 1, "Lily had", 12)
    assert len(helium["tokens"]) == 12 and llama_cpp["tokens"] == helium["tokens"]
    assert helium["tokens_per_s"] > 0 and llama_cpp["tokens_per_s"] > 0
    r = GGUFBench("tiny", 1, 1, 3, 12, 1, {"helium float32": [100.0], "llama.cpp f32": [250.0]}, True)
    assert "2.50" in report(r) and r.to_dict()["median_tokens_per_s"]["llama.cpp f32"] == 250.0
