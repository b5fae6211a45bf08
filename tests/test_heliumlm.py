"""`helium import heliumlm`: the model card author's checkpoints, mapped exactly, with natural-text decoding.

Shared-free tests build author-format state dicts from random TinySLMs (and back), and a tokenizer here.
With ../shared, the author's own reference code is the oracle: equal logits and identical greedy stories.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle
from engine.errors import BundleError
from engine.formats.heliumlm import (
    AuthorConfig,
    _author_shapes,
    author_state,
    helium_state,
    load_tokenizer,
    model_config,
    natural_decoder,
    read_author_config,
)
from engine.generation.generate import Generator
from engine.generation.sampling import SamplingParams
from engine.model.config import ModelConfig, get_preset
from engine.model.tinyslm import TinySLM
from engine.model.tokenizer import StreamDecoder
from helium_tui.cli import app
from tests.conftest import SHARED, TINYSTORIES, make_stories, needs_shared, tiny_train_config

PEER = SHARED / "peers" / "heliumlm"
NO_PEER = needs_shared(PEER / "heliumlm_ref" / "slm.py", covers="HeliumLM checkpoints against the author's code")
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # the author's special tokens, ids 0-4
PROMPT = "Once upon a time, there was a little girl named Lily."
runner = CliRunner()


def author_tokenizer(vocab_size: int = 1000) -> Tokenizer:
    """A tokenizer built the way the author built theirs: BPE, Whitespace pre-tokenizer, no decoder."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(
        make_stories(100) + ["Lily's ice-cream (quietly) “Hi,” she said; don't!"], trainer
    )
    return tok


def random_slm(cfg: ModelConfig, seed: int = 0) -> TinySLM:
    torch.manual_seed(seed)
    model = TinySLM(cfg).eval()
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):  # the norms too, so a swapped norm would show
            torch.nn.init.normal_(p, mean=1.0, std=0.2)
    return model


CFG = ModelConfig(
    vocab_size=author_tokenizer().get_vocab_size(), d_model=64, n_layer=2, n_head=8, n_kv_head=2, hidden_dim=160, context_length=96,
    norm_eps=1e-6, sliding_window=12,
)  # fmt: skip
AUTHOR = AuthorConfig(n_head=8, window_size=12, max_seq_len=96)

# ---------------------------------------------------------------------------------------------------------
# Mapping (shared-free)


def test_author_state_maps_back_to_the_same_model():
    model = random_slm(CFG)
    theirs = author_state(model.state_dict(), CFG)
    assert set(theirs) == set(_author_shapes(CFG)) and torch.equal(
        theirs["output.weight"], theirs["token_embedding.weight"]
    )
    assert model_config(theirs, AUTHOR, "x.pt") == CFG
    ours = helium_state(theirs, CFG, "x.pt")
    want = {k: v for k, v in model.state_dict().items() if k != "output.weight"}
    assert set(ours) == set(want) and all(torch.equal(ours[k], want[k]) for k in want)


def test_untied_output_and_a_compiled_prefix_are_read():
    cfg = replace(CFG, tie_embeddings=False)
    model = random_slm(cfg)
    theirs = {"_orig_mod." + k: v for k, v in author_state(model.state_dict(), cfg).items()}
    assert model_config(theirs, AUTHOR, "x.pt") == cfg
    assert torch.equal(helium_state(theirs, cfg, "x.pt")["output.weight"], model.output.weight)


def test_the_preset_is_the_cards_helium_nano_and_the_defaults_match_it():
    preset = get_preset("heliumlm-nano")
    shapes = {k: s for k, s in _author_shapes(preset).items() if k != "output.weight"}
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert (
        model_config(state, AuthorConfig(), "helium_nano_45m.pt") == preset
    )  # no --config: the card's values


def test_inconsistent_shapes_and_configs_are_one_line_errors():
    theirs = author_state(random_slm(CFG).state_dict(), CFG)
    with pytest.raises(BundleError, match="config says d_model 128 but the checkpoint has 64"):
        model_config(theirs, replace(AUTHOR, declared={"d_model": 128}), "x.pt")
    with pytest.raises(BundleError, match=r"mlp_ratio 4 \(hidden 256\) but the checkpoint has 160"):
        model_config(theirs, replace(AUTHOR, declared={"mlp_ratio": 4}), "x.pt")
    with pytest.raises(BundleError, match="not divisible by n_head 5"):
        model_config(theirs, replace(AUTHOR, n_head=5), "x.pt")
    with pytest.raises(BundleError, match="key width 16 is not a whole number"):
        model_config(theirs, replace(AUTHOR, n_head=2), "x.pt")  # 32-wide heads, but k_proj is 16 rows
    with pytest.raises(BundleError, match="unexpected layers.2.mlp.up_proj.weight"):
        helium_state(theirs | {"layers.2.mlp.up_proj.weight": torch.zeros(1)}, CFG, "x.pt")
    bad = dict(theirs)
    bad["layers.1.mlp.down_proj.weight"] = torch.zeros(64, 100)
    with pytest.raises(BundleError, match=r"down_proj.weight has shape \(64, 100\), expected \(64, 160\)"):
        helium_state(bad, CFG, "x.pt")
    with pytest.raises(BundleError, match="no token_embedding.weight"):
        model_config({"tok_embeddings.weight": torch.zeros(4, 4)}, AUTHOR, "x.pt")


def test_author_config_reads_the_three_settings_and_checks_types(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"n_head": 4, "window_size": 16, "max_seq_len": 256, "d_model": 64, "device": "mps"})
    )
    assert read_author_config(path) == AuthorConfig(4, 16, 256, {"d_model": 64})
    path.write_text(json.dumps({"d_model": 64}))
    assert read_author_config(path) == AuthorConfig(declared={"d_model": 64})  # missing settings: the card's
    for bad in ({"window_size": 0}, {"n_head": "8"}, {"mlp_ratio": -1}, [1, 2]):
        path.write_text(json.dumps(bad))
        with pytest.raises(BundleError, match="c.json"):
            read_author_config(path)


# ---------------------------------------------------------------------------------------------------------
# Natural text (shared-free)


@pytest.mark.parametrize(
    ("tokens", "text"),
    [
        (["Once", "upon", "a", "time", ",", "there"], "Once upon a time, there"),
        (["said", "Tom", ".", '"', "Hello", ',"', "said", "Lily", "."], 'said Tom. "Hello," said Lily.'),
        (
            ["Lily", "'", "s", "ice", "-", "cream", "isn", "'", "t", "(", "cold", ")!"],
            "Lily's ice-cream isn't (cold)!",
        ),
        (["“", "Hi", ",", "”", "she", "said", ";", "wait", "..."], "“Hi,” she said; wait..."),
        (
            ["Tom", "said", ",", "â", "€", "œLetâ", "€™", "s", "go", ".", "â", "€", "Then"],
            "Tom said, “Let’s go. Then",
        ),
        (["donâ", "€™", "t", "â", "€˜", "stop", "â", "€™.", "Wait", "â", "€¦"], "don’t ‘stop’. Wait…"),
        ([",", "and"], ", and"),
    ],
)
def test_natural_decoder_spaces_like_english(tokens, text):
    assert natural_decoder().decode(tokens) == text


def test_streamed_text_equals_the_whole_decode_and_round_trips(tmp_path):
    path = tmp_path / "tok.json"
    author_tokenizer().save(str(path))
    tok = load_tokenizer(path)
    assert (
        tok.bos_id is None and tok.eos_id == 3
    )  # no start token; [SEP] ends a text, as in the author's data
    for story in make_stories(20, seed=3) + ["Lily's ice-cream (quietly) “Hi,” she said; don't!"]:
        ids = tok.encode(story)
        assert tok.decode(ids) == story  # the reference's decode gives "Once upon a time , there ..."
        dec = StreamDecoder(tok, ids[:3])
        assert (
            "".join(dec.push(i) for i in ids[3:]) + dec.flush() == tok.decode(ids)[len(tok.decode(ids[:3])) :]
        )


# ---------------------------------------------------------------------------------------------------------
# The command (shared-free)


def write_checkpoint(tmp_path, cfg=CFG, seed=0):
    """An author-format checkpoint and tokenizer on disk; returns (model, ckpt path, tokenizer path)."""
    model = random_slm(cfg, seed)
    ckpt, tok = tmp_path / "helium_nano.pt", tmp_path / "tok.json"
    torch.save(author_state(model.state_dict(), cfg), ckpt)
    author_tokenizer().save(str(tok))
    return model, ckpt, tok


def test_import_gives_a_bundle_with_the_same_logits(tmp_path):
    model, ckpt, tok = write_checkpoint(tmp_path)
    (tmp_path / "c.json").write_text(
        json.dumps({"n_head": 8, "window_size": 12, "max_seq_len": 96, "n_layers": 2})
    )
    args = ["import", "heliumlm", str(ckpt), "--tokenizer", str(tok), "--config", str(tmp_path / "c.json")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "window 12" in result.output and str(tmp_path / "b") in result.output
    bundle = load_bundle(tmp_path / "b")
    assert bundle.config == CFG and bundle.tokenizer.eos_id == 3 and bundle.tokenizer.bos_id is None
    assert bundle.metadata["end_token"] == "[SEP]"
    idx = torch.randint(0, CFG.vocab_size, (1, 60))  # longer than the window
    torch.testing.assert_close(bundle.model(idx), model(idx), atol=1e-5, rtol=1e-5)
    assert bundle.tokenizer.decode(bundle.tokenizer.encode("time, there")) == "time, there"
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert again.exit_code == 2 and "already exists" in again.output
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--force"]).exit_code == 0


def test_import_by_name_installs_it(tmp_path, helium_home):
    _, ckpt, tok = write_checkpoint(tmp_path)
    # without --config the card's values apply: 8 heads fit the 64-wide model; window 128 and context 512
    args = ["import", "heliumlm", str(ckpt), "--tokenizer", str(tok), "--name", "nano-mine"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "--model nano-mine" in result.output
    installed = helium_home / "models" / "nano-mine"
    assert load_bundle(installed).config == replace(CFG, sliding_window=128, context_length=512)
    assert runner.invoke(app, args).exit_code == 2  # taken
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert sorted(p.name for p in (helium_home / "models").iterdir()) == ["nano-mine"]  # no leftovers


def test_bad_inputs_are_one_line_errors(tmp_path):
    _, ckpt, tok = write_checkpoint(tmp_path)
    out = ["--out", str(tmp_path / "b")]
    (tmp_path / "wide.json").write_text(json.dumps({"d_model": 512}))
    (tmp_path / "pickle.pt").write_bytes(b"not a zip")
    torch.save({"step": 3, "opt": {"lr": 0.1}}, tmp_path / "dict.pt")
    plain = Tokenizer(models.BPE(unk_token="[UNK]"))
    plain.save(str(tmp_path / "nosep.json"))
    cases = [
        (
            [str(ckpt), "--tokenizer", str(tok), "--config", str(tmp_path / "wide.json"), *out],
            "config says d_model 512",
        ),
        ([str(tmp_path / "pickle.pt"), "--tokenizer", str(tok), *out], "cannot load safely"),
        ([str(tmp_path / "dict.pt"), "--tokenizer", str(tok), *out], "not a state dict of tensors"),
        ([str(ckpt), "--tokenizer", str(tmp_path / "nosep.json"), *out], "no [SEP] token"),
        ([str(ckpt), "--tokenizer", str(tmp_path / "missing.json"), *out], "missing"),
        ([str(ckpt), "--tokenizer", str(tok)], "give exactly one of --out DIR or --name NAME"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["import", "heliumlm", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_a_tokenizer_of_another_size_is_refused(tmp_path):
    _, ckpt, _ = write_checkpoint(tmp_path)
    author_tokenizer(100).save(str(tmp_path / "small.json"))
    result = runner.invoke(
        app,
        [
            "import",
            "heliumlm",
            str(ckpt),
            "--tokenizer",
            str(tmp_path / "small.json"),
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert result.exit_code == 2 and f"has a vocabulary of {CFG.vocab_size}" in result.output


# ---------------------------------------------------------------------------------------------------------
# Against the author's reference code (needs ../shared)


def reference_model(config: dict, seed: int = 0):
    sys.path.insert(0, str(PEER))
    from heliumlm_ref.slm import TinySLM as Reference

    torch.manual_seed(seed)
    ref = Reference(config).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.normal_(1.0, 0.2)  # random norm weights too, so a swapped norm would show
    return ref


def reference_greedy(ref, tok: Tokenizer, prompt: str, steps: int) -> list[int]:
    """The author's inference loop at temperature 0: full recompute, stop when [SEP] is sampled."""
    x = torch.tensor([tok.encode(prompt).ids])
    for _ in range(steps):
        with torch.no_grad():
            logits, _ = ref(x)
        nxt = int(logits[0, -1].argmax())
        x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
        if nxt == tok.token_to_id("[SEP]"):
            break
    return x[0].tolist()


SMALL = {"vocab_size": 32000, "d_model": 64, "n_layers": 2, "n_head": 8, "n_kv_head": 2, "window_size": 16,
         "max_seq_len": 256, "mlp_ratio": 2.5}  # fmt: skip


def import_reference(tmp_path, ref, config: dict):
    torch.save(ref.state_dict(), tmp_path / "ckpt.pt")
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = [
        "import",
        "heliumlm",
        str(tmp_path / "ckpt.pt"),
        "--tokenizer",
        str(PEER / "heliumLM-nano-tokenizer.json"),
    ]
    result = runner.invoke(
        app, [*args, "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    return load_bundle(tmp_path / "b")


@NO_PEER
def test_logits_equal_the_reference_with_a_window_shorter_than_the_text(tmp_path):
    ref = reference_model(SMALL)
    bundle = import_reference(tmp_path, ref, SMALL)
    text = (
        (TINYSTORIES / "valid.txt").read_text(encoding="utf-8")[:1200]
        if TINYSTORIES.is_dir()
        else PROMPT * 12
    )
    ids = Tokenizer.from_file(str(PEER / "heliumLM-nano-tokenizer.json")).encode(text).ids[:200]
    assert bundle.tokenizer.encode(text)[:200] == ids and len(ids) > 10 * SMALL["window_size"]
    with torch.no_grad():
        want, _ = ref(torch.tensor([ids]))
        got = bundle.model(torch.tensor([ids]))
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        bundle.model.setup_cache(1)  # the ring-buffer decode path too
        steps = [bundle.model(torch.tensor([ids[:5]]), torch.arange(5))[:, -1]]
        steps += [
            bundle.model(torch.tensor([[t]]), torch.tensor([p]))[:, -1] for p, t in enumerate(ids[5:], 5)
        ]
    torch.testing.assert_close(torch.stack(steps, 1), want[:, 4:], atol=1e-4, rtol=0)


@NO_PEER
def test_greedy_stories_are_identical_and_stop_at_the_same_token(tmp_path):
    hf_tok = Tokenizer.from_file(str(PEER / "heliumLM-nano-tokenizer.json"))
    ref = reference_model(SMALL, seed=1)
    prompt_len = len(hf_tok.encode(PROMPT).ids)
    free = reference_greedy(ref, hf_tok, PROMPT, 120)[prompt_len:]
    # make it stop: swap [SEP] with the token it first writes at step >= 40 (an exact relabelling)
    step = next(i for i in range(40, len(free)) if free[i] not in free[:i] + hf_tok.encode(PROMPT).ids)
    sep, other = hf_tok.token_to_id("[SEP]"), free[step]
    with torch.no_grad():
        w = ref.output.weight  # tied with the embedding
        w[[sep, other]] = w[[other, sep]]
    want = reference_greedy(ref, hf_tok, PROMPT, 120)[prompt_len:]
    assert want[-1] == sep and len(want) == step + 1 and want[:-1] == free[:step]
    bundle = import_reference(tmp_path, ref, SMALL)
    params = SamplingParams(max_new_tokens=120, temperature=0, repetition_penalty=1.0)
    gen = Generator(bundle.model, bundle.tokenizer)
    assert [int(t) for t, _ in gen.tokens(bundle.tokenizer.encode(PROMPT), params)][: len(want)] == want
    args = ["--temperature", "0", "--repetition-penalty", "1", "--max-tokens", "120", "--json"]
    result = runner.invoke(app, ["tell", PROMPT, "--model", str(tmp_path / "b"), *args])
    assert result.exit_code == 0, result.output
    story = json.loads(result.output)
    assert story["finish_reason"] == "eos" and story["generated_tokens"] == step
    assert story["text"] == bundle.tokenizer.decode(hf_tok.encode(PROMPT).ids + want)[len(PROMPT) :]
    assert story["text"] != hf_tok.decode(want[:-1])  # the reference's own decode: spaces around punctuation


@NO_PEER
def test_the_authors_config_and_tokenizer_read_as_the_card_says(tmp_path):
    author = read_author_config(PEER / "helium-nano-config.json")
    assert (author.n_head, author.window_size, author.max_seq_len) == (8, 128, 512)
    tok = load_tokenizer(PEER / "heliumLM-nano-tokenizer.json")
    assert tok.vocab_size == 32000 and tok.eos_id == 3 and tok.bos_id is None
    assert tok.decode(tok.encode(PROMPT)) == PROMPT
    if TINYSTORIES.is_dir():  # the decoder restores the excerpt's paragraphs nearly always
        paragraphs = [
            " ".join(p.split()) for p in (TINYSTORIES / "valid.txt").read_text().split("\n\n") if p.strip()
        ]
        exact = sum(tok.decode(tok.encode(p)) == p for p in paragraphs[:600])
        assert exact >= 0.97 * 600


@pytest.mark.slow
def test_the_heliumlm_nano_preset_trains_with_its_window(prepared_dir, tmp_path, one_thread):
    from trainer.train import run_training

    # 160-token sequences: longer than the 128-token window, so training takes the windowed kernel
    cfg = tiny_train_config(prepared_dir, tmp_path / "run", preset="heliumlm-nano", context=160, batch_size=2)
    assert run_training(cfg.with_(max_steps=2, warmup_steps=1, eval_interval=0, eval_batches=1, log_interval=1)) == 0
    bundle = load_bundle(tmp_path / "run" / "bundle")
    assert bundle.config == replace(get_preset("heliumlm-nano"), vocab_size=bundle.config.vocab_size, context_length=160)
