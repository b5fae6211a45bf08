"""Model bundles: round trip, the model card's .pt, refusal of pickled code, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.bundles.bundle import load_bundle, save_bundle
from engine.bundles.info import check_bundle_target
from engine.bundles.registry import list_models, resolve_model
from engine.errors import BundleError


def _logits(model, ids=(0, 5, 9, 12)):
    with torch.no_grad():
        return model(torch.tensor([list(ids)]))


def test_bundle_round_trip(tiny_bundle, tiny_model):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metadata.json"):
        assert (tiny_bundle / name).is_file()
    b = load_bundle(tiny_bundle)
    torch.testing.assert_close(_logits(b.model), _logits(tiny_model), rtol=0, atol=0)
    assert b.metadata["data"] == "synthetic" and b.metadata["parameters"] == tiny_model.num_params()
    assert b.tokenizer.eos_id == 0 and b.config == tiny_model.config


def test_model_card_pt_state_dict_loads(tiny_bundle, tiny_model):
    (tiny_bundle / "model.safetensors").unlink()
    torch.save(tiny_model.state_dict(), tiny_bundle / "model.pt")
    torch.testing.assert_close(_logits(load_bundle(tiny_bundle).model), _logits(tiny_model))


class _Evil:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/helium-pwned"),))


def test_pt_with_pickled_code_is_refused(tiny_bundle, tiny_model):
    Path("/tmp/helium-pwned").unlink(missing_ok=True)
    (tiny_bundle / "model.safetensors").unlink()
    state = dict(tiny_model.state_dict())
    state["evil"] = _Evil()
    torch.save(state, tiny_bundle / "model.pt")
    with pytest.raises(BundleError, match="model.pt: cannot load safely"):
        load_bundle(tiny_bundle)
    assert not Path("/tmp/helium-pwned").exists()


def _corrupt(bundle: Path, what: str, tiny_model) -> str:
    state = {k: v for k, v in tiny_model.state_dict().items() if k != "output.weight"}
    if what == "missing":
        state.pop("norm.weight")
        save_file(state, str(bundle / "model.safetensors"))
        return "missing keys norm.weight"
    if what == "unexpected":
        state["extra.weight"] = torch.zeros(2)
        save_file(state, str(bundle / "model.safetensors"))
        return "unexpected keys extra.weight"
    if what == "shape":
        state["norm.weight"] = torch.zeros(3)
        save_file(state, str(bundle / "model.safetensors"))
        return "wrong shape for norm.weight"
    if what == "truncated":
        data = (bundle / "model.safetensors").read_bytes()
        (bundle / "model.safetensors").write_bytes(data[: len(data) // 2])
        return "model.safetensors: unreadable or truncated"
    if what == "vocab":
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["model"]["vocab_size"] += 1
        (bundle / "config.json").write_text(json.dumps(cfg))
        return "tokenizer has"
    if what == "config":
        (bundle / "config.json").write_text("{not json")
        return "config.json: not valid JSON"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["missing", "unexpected", "shape", "truncated", "vocab", "config"])
def test_bad_bundles_give_one_clear_error(tiny_bundle, tiny_model, what):
    expected = _corrupt(tiny_bundle, what, tiny_model)
    with pytest.raises(BundleError) as err:
        load_bundle(tiny_bundle)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert str(tiny_bundle) in message


def test_names_resolve_in_user_dir_then_assets(helium_home, tiny_model, tiny_tokenizer):
    save_bundle(helium_home / "models" / "mine", tiny_model, tiny_tokenizer)
    assert resolve_model("mine") == helium_home / "models" / "mine"
    assert "mine" in [m.name for m in list_models()]
    with pytest.raises(BundleError, match="no such model bundle"):
        resolve_model("nope")


def test_an_import_writes_only_where_nothing_is_lost(tmp_path, tiny_model, tiny_tokenizer):
    """Absent or empty: write; an existing bundle: only with force; anything else: never, force or not."""
    assert check_bundle_target(tmp_path / "new") is False
    (tmp_path / "empty").mkdir()
    assert check_bundle_target(tmp_path / "empty", force=True) is False
    bundle = save_bundle(tmp_path / "old", tiny_model, tiny_tokenizer, {"data": "synthetic"})
    assert check_bundle_target(bundle, force=True) is True
    with pytest.raises(BundleError, match="a Helium model bundle; use --force to replace it"):
        check_bundle_target(bundle)
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "essay.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    for other in ("papers", "file"):
        with pytest.raises(BundleError, match="--force replaces only a Helium model bundle|not a directory"):
            check_bundle_target(tmp_path / other, force=True)
    (tmp_path / "link").symlink_to(bundle)  # a link the user names is never written through nor replaced
    with pytest.raises(BundleError, match="is a symbolic link"):
        check_bundle_target(tmp_path / "link", force=True)
