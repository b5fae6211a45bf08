"""Hostile or damaged bundles: every bad config value, header and weight is one line, checked before allocating."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle
from engine.bundles.registry import list_models, resolve_model
from engine.errors import BundleError
from engine.model.config import PRESETS, ModelConfig
from engine.model.tinyslm import TinySLM, state_shapes
from helium_tui.cli import app

runner = CliRunner()


def edit_config(bundle, **changes) -> None:
    raw = json.loads((bundle / "config.json").read_text())
    for key, value in changes.items():
        if key in ("bos_token_id", "eos_token_id"):
            raw[key] = value
        else:
            raw["model"][key] = value
    (bundle / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "changes, needle",
    [
        (dict(context_length=0), "context_length"), (dict(context_length=-10), "context_length"),
        (dict(context_length=128.5), "context_length"), (dict(d_model=-64), "d_model"),
        (dict(d_model=2**30), "d_model"), (dict(hidden_dim=-1), "hidden_dim"), (dict(n_head=0), "n_head"),
        (dict(norm_eps=-1), "norm_eps"), (dict(rope_theta=0), "rope_theta"), (dict(n_layer=1_000_000), "n_layer"),
        (dict(bos_token_id=-1), "bos_token_id"), (dict(bos_token_id=99999), "bos_token_id"),
        (dict(eos_token_id="a"), "eos_token_id"), (dict(dropout=float("nan")), "dropout"),
    ],
)  # fmt: skip
def test_every_bad_config_value_is_one_clear_line(tiny_bundle, changes, needle):
    edit_config(tiny_bundle, **changes)
    with pytest.raises(BundleError, match=needle):
        load_bundle(tiny_bundle)
    r = runner.invoke(app, ["tell", "Tom", "--model", str(tiny_bundle), "--max-tokens", "2"])
    assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_huge_config_beside_small_weights_fails_on_the_header_not_on_allocation(tiny_bundle):
    """Within every limit, but terabytes if allocated: the safetensors header is checked first."""
    edit_config(tiny_bundle, d_model=65536, n_layer=1024, hidden_dim=262144, n_head=512, n_kv_head=None)
    with pytest.raises(BundleError, match="weights do not match the config|wrong shape"):
        load_bundle(tiny_bundle)


def test_nan_weights_and_odd_dtypes_are_refused(tiny_bundle):
    weights = tiny_bundle / "model.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if k.endswith("wo.weight"))
    state[key][0, 0] = float("nan")
    save_file(state, str(weights))
    with pytest.raises(BundleError, match=f"{key} holds nan"):
        load_bundle(tiny_bundle)
    state[key] = state[key].to(torch.int32)
    save_file(state, str(weights))
    with pytest.raises(BundleError, match="I32"):
        load_bundle(tiny_bundle)


def test_state_shapes_and_parameter_counts_match_the_real_model():
    for name, cfg in PRESETS.items():
        for c in (cfg, cfg.with_(tie_embeddings=False)):
            model = TinySLM(c.with_(n_layer=2) if c.n_layer > 2 else c)
            sd = model.state_dict()
            if model.config.tie_embeddings:
                sd.pop("output.weight")
            assert {k: tuple(v.shape) for k, v in sd.items()} == state_shapes(model.config), name
            assert model.config.parameters == model.num_params(), name


def test_model_config_refuses_non_objects():
    with pytest.raises(ValueError, match="JSON object"):
        ModelConfig.from_dict([1, 2])


def test_bad_metadata_and_bad_neighbours_never_break_the_model_list(helium_home, tiny_bundle):
    import shutil

    models = helium_home / "models"
    for name, meta in (("many", {"parameters": "many"}), ("listy", [1, 2])):
        shutil.copytree(tiny_bundle, models / name)
        (models / name / "metadata.json").write_text(json.dumps(meta))
    shutil.copytree(tiny_bundle, models / "zero-heads")
    edit_config(models / "zero-heads", n_head=0)
    names = {m.name: m for m in list_models()}
    assert {"many", "listy"} <= set(names) and "zero-heads" not in names
    assert names["many"].parameters == load_bundle(tiny_bundle).model.num_params()
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "many" in r.output
    r = runner.invoke(app, ["tell", "x", "--model", "typo"])
    assert r.exit_code == 2 and "no such model bundle" in r.stderr and "many" in r.stderr
    with pytest.raises(BundleError, match="n_head"):
        load_bundle(resolve_model("zero-heads"))


def test_a_fifo_named_metadata_json_never_blocks(tiny_bundle):
    (tiny_bundle / "metadata.json").unlink()
    os.mkfifo(tiny_bundle / "metadata.json")
    done = threading.Event()
    result: list = []

    def load() -> None:
        result.append(load_bundle(tiny_bundle))
        done.set()

    threading.Thread(target=load, daemon=True).start()
    assert done.wait(30), "loading blocked on a FIFO"
    assert result[0].metadata == {}


def test_an_unreadable_weights_file_says_so(tiny_bundle):
    if os.geteuid() == 0:
        pytest.skip("root reads every file (permissions are not enforced)")
    (tiny_bundle / "model.safetensors").chmod(0)
    r = subprocess.run([sys.executable, "-m", "helium_tui.cli", "tell", "x", "--model", str(tiny_bundle)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "cannot be read" in r.stderr and "No such file" not in r.stderr
