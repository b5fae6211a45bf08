"""`helium import llama2c`: checkpoints, tokenizer equivalence with run.c's encode(), and golden generation.

The oracles here are written independently of the engine: `llama2c_encode` follows run.c's encode() and
`llama2c_forward` follows run.c's forward() line by line, in numpy.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle
from engine.errors import BundleError
from engine.formats.llama2c import MAGIC, import_llama2c, load_tokenizer, read_checkpoint, read_tokenizer_bin
from engine.generation.generate import Generator, SamplingParams
from helium_tui.cli import app
from tests.conftest import LLAMA2C, SHARED_SKIP, TINYSTORIES, needs_shared
from tests.stories import told

NO_PEER = needs_shared(LLAMA2C / "stories260K.bin", covers="llama2.c's run.c golden stories, byte for byte")
NO_STORIES = needs_shared(TINYSTORIES / "valid.txt", covers="scores on TinyStories' validation text")
GOLDEN_PROMPT = "Once upon a time, there was a little girl named Lily."

# ---------------------------------------------------------------------------------------------------------
# Independent oracles: run.c's encode() and forward(), written from run.c, not from engine code


def llama2c_encode(text: str, pieces: list[bytes], scores: list[float]) -> list[int]:
    """run.c encode(text, bos=0, eos=0): dummy prefix, codepoints or byte fallback, best-score merges."""
    lookup = {p: i for i, p in enumerate(pieces)}
    tokens: list[int] = []
    if text:  # add_dummy_prefix, but only for non-empty text
        tokens.append(lookup[b" "])
    for ch in text:
        raw = ch.encode("utf-8")
        if raw in lookup:
            tokens.append(lookup[raw])
        else:
            tokens.extend(b + 3 for b in raw)  # <0xXX> tokens start after <unk>, <s>, </s>

    def pair_score(i: int) -> float:
        tid = lookup.get(pieces[tokens[i]] + pieces[tokens[i + 1]], -1)
        return scores[tid] if tid != -1 and scores[tid] > -1e10 else float("-inf")

    pair = [pair_score(i) for i in range(len(tokens) - 1)]
    while pair and max(pair) != float("-inf"):
        i = pair.index(max(pair))  # the first (leftmost) pair with the best score, as run.c's strict `>`
        tokens[i : i + 2] = [lookup[pieces[tokens[i]] + pieces[tokens[i + 1]]]]
        del pair[i]
        if i < len(pair):
            pair[i] = pair_score(i)
        if i > 0:
            pair[i - 1] = pair_score(i - 1)
    return tokens


def _rmsnorm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return w * (x / np.sqrt(np.mean(x * x) + 1e-5))


def llama2c_forward(w: dict[str, np.ndarray], p: dict[str, int], tokens: list[int]) -> np.ndarray:
    """Logits (T, V) from run.c's forward(), one position at a time with a KV cache, in float64."""
    dim, n_heads, n_kv = p["dim"], p["n_heads"], p["n_kv_heads"]
    hs = dim // n_heads
    kv_dim, kv_mul = n_kv * hs, n_heads // n_kv
    L, T = p["n_layers"], len(tokens)
    key_cache, value_cache = np.zeros((L, T, kv_dim)), np.zeros((L, T, kv_dim))
    wcls = w.get("wcls", w["tok_embeddings"])
    out = []
    for pos, token in enumerate(tokens):
        x = w["tok_embeddings"][token].astype(np.float64)
        for layer in range(L):
            xb = _rmsnorm(x, w["rms_att"][layer])
            q, k, v = w["wq"][layer] @ xb, w["wk"][layer] @ xb, w["wv"][layer] @ xb
            for i in range(0, dim, 2):  # RoPE on adjacent pairs, per head
                freq = 1.0 / 10000.0 ** ((i % hs) / hs)
                fcr, fci = np.cos(pos * freq), np.sin(pos * freq)
                for vec in (q, k) if i < kv_dim else (q,):
                    v0, v1 = vec[i], vec[i + 1]
                    vec[i], vec[i + 1] = v0 * fcr - v1 * fci, v0 * fci + v1 * fcr
            key_cache[layer, pos], value_cache[layer, pos] = k, v
            xb = np.zeros(dim)
            for h in range(n_heads):
                kvh = slice((h // kv_mul) * hs, (h // kv_mul + 1) * hs)
                att = key_cache[layer, : pos + 1, kvh] @ q[h * hs : (h + 1) * hs] / np.sqrt(hs)
                att = np.exp(att - att.max())
                att /= att.sum()
                xb[h * hs : (h + 1) * hs] = att @ value_cache[layer, : pos + 1, kvh]
            x = x + w["wo"][layer] @ xb
            xb = _rmsnorm(x, w["rms_ffn"][layer])
            hb, hb2 = w["w1"][layer] @ xb, w["w3"][layer] @ xb
            x = x + w["w2"][layer] @ (hb / (1.0 + np.exp(-hb)) * hb2)
        out.append(wcls @ _rmsnorm(x, w["rms_final"]))
    return np.stack(out)


# ---------------------------------------------------------------------------------------------------------
# Synthetic llama2.c files (written the way llama2.c's export.py and tokenizer.py write them)

PARAMS = dict(dim=32, hidden_dim=48, n_layers=2, n_heads=4, n_kv_heads=2, seq_len=24)
MERGES = [" t", "he", " the", " a", "an", "nd", " and", "in", " in", "  ", "    ", "   ", "on", " on", "ce", "Once"]  # fmt: skip
CHARS = [" ", *"abcdefghijklmnopqrstuvwxyzO.,!"]


def synthetic_tokenizer() -> tuple[list[bytes], list[float]]:
    """A small sentencepiece-style vocabulary: specials, byte fallbacks, merged pieces, then characters."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    scores = [0.0] * len(pieces)
    for i, piece in enumerate(MERGES + CHARS):
        pieces.append(piece.encode())
        scores.append(-float(i))
    return pieces, scores


def write_tokenizer(path: Path, pieces: list[bytes], scores: list[float]) -> Path:
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for piece, score in zip(pieces, scores, strict=True):
            f.write(struct.pack("<fi", score, len(piece)) + piece)
    return path


def synthetic_weights(vocab: int, shared: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    L, D, H = PARAMS["n_layers"], PARAMS["dim"], PARAMS["hidden_dim"]
    kv = PARAMS["n_kv_heads"] * D // PARAMS["n_heads"]
    shapes = {
        "tok_embeddings": (vocab, D), "rms_att": (L, D), "wq": (L, D, D), "wk": (L, kv, D), "wv": (L, kv, D),
        "wo": (L, D, D), "rms_ffn": (L, D), "w1": (L, H, D), "w2": (L, D, H), "w3": (L, H, D), "rms_final": (D,),
    }  # fmt: skip
    if not shared:
        shapes["wcls"] = (vocab, D)
    w = {k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in shapes.items()}
    for k in ("rms_att", "rms_ffn", "rms_final"):
        w[k] = (1 + rng.normal(0, 0.1, shapes[k])).astype(np.float32)
    return w


def write_checkpoint(path: Path, w: dict[str, np.ndarray], vocab: int, version: int) -> Path:
    """Write w like export.py's legacy_export (version 0) or version1_export (version 1)."""
    p = PARAMS
    shared = "wcls" not in w
    params = (p["dim"], p["hidden_dim"], p["n_layers"], p["n_heads"], p["n_kv_heads"])
    with open(path, "wb") as f:
        if version == 0:
            f.write(struct.pack("<7i", *params, vocab if shared else -vocab, p["seq_len"]))
            order = "tok_embeddings rms_att wq wk wv wo rms_ffn w1 w2 w3 rms_final".split()
            for k in order:
                f.write(w[k].tobytes())
            rope = np.random.default_rng(1).normal(size=(2, p["seq_len"], p["dim"] // p["n_heads"] // 2))
            f.write(rope.astype(np.float32).tobytes())  # legacy RoPE tables: must be ignored
        else:
            f.write(struct.pack("<Ii7iB", MAGIC, version, *params, vocab, p["seq_len"], int(shared)))
            f.write(b"\0" * (256 - f.tell()))
            order = "rms_att rms_ffn rms_final tok_embeddings wq wk wv wo w1 w2 w3".split()
            for k in order:
                f.write(w[k].tobytes())
        if not shared:
            f.write(w["wcls"].tobytes())
    return path


@pytest.fixture(scope="module")
def synth_tok(tmp_path_factory) -> tuple[Path, list[bytes], list[float]]:
    pieces, scores = synthetic_tokenizer()
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "tok.bin", pieces, scores), pieces, scores


# ---------------------------------------------------------------------------------------------------------
# Core tests (no shared data needed)


@pytest.mark.parametrize(("version", "shared"), [(0, True), (0, False), (1, True), (1, False)])
def test_import_matches_llama2c_forward(tmp_path, synth_tok, version, shared):
    tok_path, pieces, _ = synth_tok
    w = synthetic_weights(len(pieces), shared, seed=version)
    model_bin = write_checkpoint(tmp_path / "model.bin", w, len(pieces), version)
    bundle = load_bundle(import_llama2c(model_bin, tok_path, tmp_path / "bundle"))
    assert bundle.config.tie_embeddings is shared
    assert (
        bundle.config.kv_heads == PARAMS["n_kv_heads"] and bundle.config.context_length == PARAMS["seq_len"]
    )
    tokens = [1, 270, 5, 300, 261, 42, 262, 1, 299]
    expected = llama2c_forward(w, PARAMS, tokens)
    with torch.no_grad():
        got = bundle.model(torch.tensor([tokens]))[0].double().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4)
    assert np.argmax(got, -1).tolist() == np.argmax(expected, -1).tolist()
    bundle.model.setup_cache(1)  # the decode path: one token at a time through the KV cache
    with torch.no_grad():
        steps = [bundle.model(torch.tensor([[t]]), torch.tensor([i]))[0, -1] for i, t in enumerate(tokens)]
    np.testing.assert_allclose(torch.stack(steps).double().numpy(), expected, rtol=0, atol=2e-4)
    meta = bundle.metadata
    assert meta["created_by"] == "helium import llama2c" and meta["llama2c_version"] == version
    assert meta["source_files"]["model"]["name"] == "model.bin"
    assert len(meta["source_files"]["tokenizer"]["sha256"]) == 64
    assert bundle.tokenizer.bos_id == bundle.tokenizer.eos_id == 1
    # llama2.c's own sampling, as a pulled model has (imported, stories260K told with Helium's penalty of 1.1)
    assert meta["sampling"] == {"temperature": 1.0, "top_p": 0.9, "repetition_penalty": 1.0}


def test_synthetic_tokenizer_encodes_like_run_c(synth_tok):
    tok_path, pieces, scores = synth_tok
    tok = load_tokenizer(tok_path)
    texts = ["", " ", "Once upon a time", "the cat and the hat", "  in    on     the   ", "é😀\n", "<s>x</s>"]
    for text in texts:
        assert tok.encode(text, add_bos=False) == llama2c_encode(text, pieces, scores), text
    assert tok.encode("a") == [1, *llama2c_encode("a", pieces, scores)]
    assert tok.decode(tok.encode("the hat and é😀\n  x")) == "the hat and é😀\n  x"


def _expect_bundle_error(match: str, *args) -> None:
    with pytest.raises(BundleError, match=match):
        import_llama2c(*args)


def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path, synth_tok):
    tok_path, pieces, _ = synth_tok
    good = write_checkpoint(tmp_path / "good.bin", synthetic_weights(len(pieces), True), len(pieces), 1)
    data = good.read_bytes()
    (tmp_path / "short.bin").write_bytes(data[:-10])
    _expect_bundle_error(r"short\.bin: truncated", tmp_path / "short.bin", tok_path, tmp_path / "o1")
    (tmp_path / "long.bin").write_bytes(data + b"\0" * 4)
    _expect_bundle_error(r"long\.bin: too long", tmp_path / "long.bin", tok_path, tmp_path / "o2")
    (tmp_path / "q8.bin").write_bytes(struct.pack("<Ii", MAGIC, 2) + data[8:])
    _expect_bundle_error(
        r"q8\.bin: int8-quantized .*\(version 2\) is not supported",
        tmp_path / "q8.bin",
        tok_path,
        tmp_path / "o3",
    )
    _expect_bundle_error(r"tok\.bin: not a llama2\.c checkpoint", tok_path, tok_path, tmp_path / "o4")
    _expect_bundle_error(r"missing\.bin: missing", tmp_path / "missing.bin", tok_path, tmp_path / "o5")
    small_pieces, small_scores = pieces[:-3], synth_tok[2][:-3]
    small_tok = write_tokenizer(tmp_path / "small.bin", small_pieces, small_scores)
    _expect_bundle_error(r"small\.bin: tokenizer has \d+ tokens", good, small_tok, tmp_path / "o6")
    (tmp_path / "cut.bin").write_bytes(tok_path.read_bytes()[:-3])
    _expect_bundle_error(r"cut\.bin: truncated", good, tmp_path / "cut.bin", tmp_path / "o7")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    _expect_bundle_error(r"full: already exists", good, tok_path, tmp_path / "full")
    assert not any(p.name.startswith(".o") for p in tmp_path.iterdir())  # no temporary directories left
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["full"]


def test_cli_import_out_and_name(tmp_path, synth_tok, helium_home, one_thread):
    tok_path, pieces, _ = synth_tok
    model_bin = write_checkpoint(tmp_path / "m.bin", synthetic_weights(len(pieces), True), len(pieces), 0)
    runner = CliRunner()
    base = ["import", "llama2c", str(model_bin), "--tokenizer", str(tok_path)]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert f"vocab {len(pieces)}" in res.stdout and str(tmp_path / "b") in res.stdout
    assert (tmp_path / "b" / "model.safetensors").is_file()
    res = runner.invoke(app, [*base, "--name", "synth"])
    assert res.exit_code == 0, res.output
    assert (helium_home / "models" / "synth" / "config.json").is_file()
    res = runner.invoke(app, ["tell", "the", "--model", "synth", "--temperature", "0", "--max-tokens", "5"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("the")
    for args, message in [
        (["--out", str(tmp_path / "b")], "already exists"),
        (["--name", "synth"], "already installed (use --force"),
        ([], "exactly one of --out DIR or --name NAME"),
        (["--out", str(tmp_path / "c"), "--name", "x"], "exactly one of"),
        (["--name", "a/b"], "not a valid model name"),
    ]:
        res = runner.invoke(app, [*base, *args])
        assert res.exit_code == 2, (args, res.output)
        assert (
            res.stderr.startswith("helium: error: ") and message in res.stderr and res.stderr.count("\n") == 1
        )
    for again in (["--name", "synth", "--force"], ["--out", str(tmp_path / "b"), "--force"]):
        res = runner.invoke(app, [*base, *again])
        assert res.exit_code == 0, (again, res.output)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o777 & ~_umask()  # not mkdtemp's 0700
    papers = tmp_path / "papers"  # --force replaces a bundle, never a folder of the user's other files
    papers.mkdir()
    (papers / "essay.txt").write_text("mine")
    res = runner.invoke(app, [*base, "--out", str(papers), "--force"])
    assert res.exit_code == 2 and "--force replaces only a Helium model bundle" in res.stderr
    assert [f.name for f in papers.iterdir()] == ["essay.txt"]
    base[2] = str(tmp_path / "nope.bin")
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "nope.bin: missing" in res.stderr
    base[2] = str(tok_path)  # a tokenizer where the checkpoint belongs
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "not a llama2.c checkpoint" in res.stderr and not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------------------
# Tokenizer equivalence on the real llama2.c vocabularies

EDGE_TEXTS = [
    "", " ", "  ", "a", "Once upon a time", " leading space", "trailing space ", "double  space",
    "   many    spaces     here ", "\n", "line one\nline two\n\nafter a blank line", "\ttab\t and  \t mixed",
    "café naïve résumé Über", "emoji 😀🚀🎉 done", "日本語のテキスト", "“quoted” — dash… ‘single’",
    "<s> literal </s> <unk> <0x41>", "!!!???...,,,;;;", "don't won't it's Lily's", "1234567890 3.14",
    "x" * 50, " " * 40 + "x", "a\u200bb\u00a0c", "\u0301combining", "Ω≈ç√∫˜µ≤≥÷", "\x01\x7f ctrl",
]  # fmt: skip


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = [*"abcdefghijklmnopqrstuvwxyz ABCLOT.,!?'\"\n-", " ", "  ", "é", "ü", "😀", "日", "\t", "—"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def _valid_paragraphs(n: int) -> list[str]:
    paragraphs = [
        p for p in (TINYSTORIES / "valid.txt").read_text(encoding="utf-8").split("\n\n") if p.strip()
    ]
    return paragraphs[:: max(1, len(paragraphs) // n)][:n]


@NO_PEER
@NO_STORIES
@pytest.mark.parametrize("name", ["tok512.bin", "tokenizer.bin"])
def test_hf_tokenizer_encodes_exactly_like_run_c(name):
    pieces, scores = read_tokenizer_bin(LLAMA2C / name)
    tok = load_tokenizer(LLAMA2C / name)
    texts = EDGE_TEXTS + _random_texts(300, seed=len(pieces)) + _valid_paragraphs(60)
    mismatches = [t for t in texts if tok.encode(t, add_bos=False) != llama2c_encode(t, pieces, scores)]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} texts differ, first: {mismatches[0]!r}"
    assert tok.encode("") == [1]
    for text in EDGE_TEXTS:  # text decodes back: the dummy-prefix space is dropped, byte fallbacks rejoin
        assert tok.decode(tok.encode(text)) == text


# ---------------------------------------------------------------------------------------------------------
# Golden: stories260K greedy output from llama2.c's own run.c, byte for byte


@pytest.fixture(scope="module")
def stories260k(tmp_path_factory) -> Path:
    if not (LLAMA2C / "stories260K.bin").is_file():
        pytest.skip(f"{SHARED_SKIP} (peers/llama2c/stories260K.bin): llama2.c's run.c golden stories, byte for byte")
    return import_llama2c(
        LLAMA2C / "stories260K.bin", LLAMA2C / "tok512.bin", tmp_path_factory.mktemp("l2c") / "s260k"
    )


@pytest.fixture(scope="module")
def golden() -> str:
    return (LLAMA2C / "stories260K_greedy_200.txt").read_text(encoding="utf-8")


GREEDY = ["--temperature", "0", "--repetition-penalty", "1", "--dtype", "float32", "--device", "cpu"]


@NO_PEER
def test_stories260k_checkpoint_reads_as_documented():
    config, state, header = read_checkpoint(LLAMA2C / "stories260K.bin")
    assert (header.version, header.shared_classifier) == (0, True)
    shape = (config.d_model, config.hidden_dim, config.n_layer, config.n_head, config.kv_heads)
    assert shape == (64, 172, 5, 8, 4)
    assert (config.vocab_size, config.context_length) == (512, 512)
    assert state["layers.0.attn.wqkv.weight"].shape == (64 + 2 * 32, 64)
    assert sum(v.numel() for v in state.values()) == 260032


@NO_PEER
def test_golden_greedy_generation(stories260k, golden, one_thread):
    bundle = load_bundle(stories260k)
    result = told(
        Generator(bundle.model, bundle.tokenizer),
        "",
        SamplingParams(max_new_tokens=200, temperature=0.0, repetition_penalty=1.0),
    )
    assert (result.generated_tokens, result.finish_reason) == (200, "length")
    assert result.text == golden


@NO_PEER
@pytest.mark.slow
def test_golden_through_cli_empty_prompt(stories260k, golden, one_thread):
    res = CliRunner().invoke(app, ["tell", "", "--model", str(stories260k), *GREEDY, "--max-tokens", "200"])
    assert res.exit_code == 0, res.output
    assert res.stdout == golden + "\n"


@NO_PEER
def test_golden_through_cli_for_a_prompt(stories260k, golden, one_thread):
    assert golden.startswith(GOLDEN_PROMPT)
    n_prompt = len(load_tokenizer(LLAMA2C / "tok512.bin").encode(GOLDEN_PROMPT, add_bos=False))
    args = ["tell", GOLDEN_PROMPT, "--model", str(stories260k), *GREEDY, "--max-tokens", str(200 - n_prompt)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert res.stdout == golden + "\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
