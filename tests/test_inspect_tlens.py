"""`helium inspect --json` against TransformerLens itself: the `helium export hf` directory booted into a
TransformerBridge (TransformerLens 4's HookedTransformer, in compatibility mode), run with `run_with_cache`.

Attention from `blocks.L.attn.hook_pattern`, the lens from `accumulated_resid(apply_ln=True)` times `W_U`, the
next token from the logits; a knock-out is a hook zeroing the head in `blocks.L.attn.hook_z`. Skipped where
transformer_lens is not installed (it is not a Helium dependency: see docs/inspect.md, "How it is checked").
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle, save_bundle
from engine.formats.hf import export_hf
from helium_tui.cli import app
from tests.test_inspect import GQA, PROMPT, load_exported, random_slm

ATOL = 1e-4  # float32 against TransformerLens' own float32 forward
pytestmark = pytest.mark.slow  # importing transformer_lens and booting the bridge take seconds


@pytest.fixture(autouse=True)
def _one_thread(one_thread, helium_home, monkeypatch):
    """One intra-op thread, no user's models, and no Hub: everything is loaded from the export."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def bridge_and_bundle(tmp_path, tiny_tokenizer):
    """(the TransformerBridge of the export, the Helium bundle directory) for a grouped-query model."""
    tl = pytest.importorskip("transformer_lens", reason="needs transformer_lens (see docs/inspect.md)")
    transformers = pytest.importorskip("transformers", reason="needs transformers")
    model = random_slm(GQA.with_(vocab_size=tiny_tokenizer.vocab_size))
    bundle_dir = save_bundle(tmp_path / "tiny-tl", model, tiny_tokenizer, {"data": "synthetic"})
    hf_dir = export_hf(load_bundle(bundle_dir), tmp_path / "hf")
    bridge = tl.TransformerBridge.boot_transformers(
        str(hf_dir), hf_model=load_exported(hf_dir), device="cpu", dtype=torch.float32,
        tokenizer=transformers.AutoTokenizer.from_pretrained(hf_dir),
    )  # fmt: skip
    bridge.enable_compatibility_mode(disable_warnings=True)  # HookedTransformer's numerics: the norm folded
    return bridge, bundle_dir


def knock_out_hooks(heads: list[tuple[int, int]]) -> list:
    """TransformerLens forward hooks zeroing each head's z (its mixed values, before W_O) at every position."""

    def hook(layer: int, head: int):
        def zero(z: torch.Tensor, hook) -> torch.Tensor:  # z: (batch, pos, head, d_head)
            z[:, :, head, :] = 0.0
            return z

        return f"blocks.{layer}.attn.hook_z", zero

    return [hook(layer, head) for layer, head in heads]


@pytest.mark.parametrize("knock", [[], ["1.2", "0.0"]], ids=["all-heads", "two-knocked-out"])
def test_json_matches_transformer_lens_run_with_cache(bridge_and_bundle, knock):
    bridge, bundle_dir = bridge_and_bundle
    ablate = [arg for head in knock for arg in ("--ablate", head)]
    result = CliRunner().invoke(app, ["inspect", PROMPT, "--model", str(bundle_dir), *ablate, "--json"])
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    heads = [tuple(map(int, head.split("."))) for head in knock]
    with torch.no_grad(), bridge.hooks(fwd_hooks=knock_out_hooks(heads)):
        logits, cache = bridge.run_with_cache(torch.tensor([got["token_ids"]]))
    L, T = GQA.n_layer, len(got["token_ids"])

    patterns = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(L)])
    torch.testing.assert_close(torch.tensor(got["attention"]), patterns, atol=ATOL, rtol=0)

    with torch.no_grad():
        stream = cache.accumulated_resid(apply_ln=True)[:, 0]  # (L + 1, T, C): embed, after each block
        lens = (stream @ bridge.W_U + bridge.b_U).softmax(-1)  # (L + 1, T, V)
    assert len(got["logit_lens"]) == L + 1
    for layer, row in enumerate(got["logit_lens"]):
        assert len(row) == T
        for t, entry in enumerate(row):
            top = [item["id"] for item in entry["top"]]
            assert top == lens[layer, t].topk(5).indices.tolist(), (layer, t)
            want = lens[layer, t, top]
            assert [item["p"] for item in entry["top"]] == pytest.approx(want.tolist(), abs=ATOL)

    last = logits[0, -1].softmax(-1)
    assert [item["id"] for item in got["next_token"]] == last.topk(10).indices.tolist()
    assert [item["p"] for item in got["next_token"]] == pytest.approx(last.topk(10).values.tolist(), abs=ATOL)
    if heads:  # the knock-out changed what TransformerLens computes, and ours agrees with the changed run
        with torch.no_grad():
            plain = bridge(torch.tensor([got["token_ids"]]))[0, -1].softmax(-1)
        assert (plain - last).abs().max() > 1e-3


def test_direct_logit_attribution_matches_transformer_lens_per_head(bridge_and_bundle):
    """Each head's direct push on a logit difference (a knocked-out head's is 0), against TransformerLens'
    stack_head_results with the final norm's scale applied (a difference of two tokens: its centred W_U cancels)."""
    from engine.inspect import direct_logit_attribution, run_with_cache

    bridge, bundle_dir = bridge_and_bundle
    bundle = load_bundle(bundle_dir)
    ids = bundle.tokenizer.encode(PROMPT)
    cache = run_with_cache(bundle.model, ids, [(1, 2)])
    position, a, b = len(ids) - 3, 5, 77
    ours = [direct_logit_attribution(bundle.model, cache, position, token) for token in (a, b)]
    with torch.no_grad(), bridge.hooks(fwd_hooks=knock_out_hooks([(1, 2)])):
        _, tl_cache = bridge.run_with_cache(torch.tensor([ids]))
        heads = tl_cache.stack_head_results(layer=-1, pos_slice=position, apply_ln=True)  # (L * H, 1, C)
        direction = bridge.W_U[:, a] - bridge.W_U[:, b]
        theirs = (heads[:, 0] @ direction).view(GQA.n_layer, GQA.n_head)
    torch.testing.assert_close(ours[0].heads - ours[1].heads, theirs, atol=ATOL, rtol=0)
