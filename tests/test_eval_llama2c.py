"""`helium eval` on the imported stories260K equals a reference from run.c's forward pass (numpy oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.bundles.bundle import load_bundle
from engine.formats.llama2c import import_llama2c, read_checkpoint, read_tokenizer_bin
from engine.generation.evaluate import evaluate_text
from tests.conftest import LLAMA2C, TINYSTORIES, needs_shared
from tests.test_llama2c import llama2c_encode, llama2c_forward

pytestmark = needs_shared(LLAMA2C / "stories260K.bin", TINYSTORIES / "valid.txt",
                          covers="stories260K's bits per byte against llama2.c's own forward")


def _oracle_weights() -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """run.c's weight names, unfused from the imported state dict."""
    cfg, state, _ = read_checkpoint(LLAMA2C / "stories260K.bin")
    dim, kv, hidden, L = cfg.d_model, cfg.kv_heads * cfg.head_dim, cfg.hidden_dim, cfg.n_layer
    s = {k: v.double().numpy() for k, v in state.items()}
    layer = lambda name: np.stack([s[f"layers.{i}.{name}"] for i in range(L)])  # noqa: E731
    wqkv, w13 = layer("attn.wqkv.weight"), layer("mlp.w13.weight")
    w = {
        "tok_embeddings": s["tok_embeddings.weight"],
        "rms_att": layer("attn_norm.weight"),
        "rms_ffn": layer("mlp_norm.weight"),
        "rms_final": s["norm.weight"],
        "wq": wqkv[:, :dim],
        "wk": wqkv[:, dim : dim + kv],
        "wv": wqkv[:, dim + kv :],
        "wo": layer("attn.wo.weight"),
        "w1": w13[:, :hidden],
        "w3": w13[:, hidden:],
        "w2": layer("mlp.w2.weight"),
    }
    p = dict(dim=dim, n_heads=cfg.n_head, n_kv_heads=cfg.kv_heads, n_layers=L)
    return w, p


def test_eval_of_stories260k_matches_run_c_reference(tmp_path):
    text = (TINYSTORIES / "valid.txt").read_text(encoding="utf-8")[:360]
    text = text[: text.rfind(" ")]  # a whole-word slice, well inside one context window
    bundle = load_bundle(import_llama2c(LLAMA2C / "stories260K.bin", LLAMA2C / "tok512.bin", tmp_path / "s260k"))
    result = evaluate_text(bundle.model, bundle.tokenizer, text)

    pieces, scores = read_tokenizer_bin(LLAMA2C / "tok512.bin")
    tokens = [1] + llama2c_encode(text, pieces, scores)  # BOS, then run.c's own encoding
    w, p = _oracle_weights()
    logits = llama2c_forward(w, p, tokens[:-1])
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nll = -sum(logp[i, tokens[i + 1]] for i in range(len(tokens) - 1))

    assert result.tokens == len(tokens) - 1
    assert result.bytes == len(text.encode("utf-8"))
    assert result.nats_per_token == pytest.approx(nll / (len(tokens) - 1), rel=1e-4)
    assert result.bits_per_byte == pytest.approx(nll / math.log(2) / len(text.encode()), rel=1e-4)
