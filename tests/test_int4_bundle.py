"""int4 bundles (`helium models install --dtype int4`): Q4_0 blocks stored as they run (packed bytes, float16 scale
bits), loaded without quantizing again, run as int4 by default, refused with one clear line when damaged."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import engine.model.quant4 as quant4
from engine.bundles.bundle import load_bundle, stored_quantization
from engine.errors import BundleError
from helium_tui.cli import app


def logits(model, idx):
    with torch.inference_mode():
        return model(idx).float()


@pytest.fixture
def int4_bundle(tiny_bundle, helium_home):
    r = CliRunner().invoke(app, ["models", "install", str(tiny_bundle), "--name", "four", "--dtype", "int4"])
    assert r.exit_code == 0, r.output
    return helium_home / "models" / "four"


def test_install_dtype_int4_stores_q4_0_blocks(int4_bundle, tiny_bundle):
    with safe_open(str(int4_bundle / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes["layers.0.attn.wqkv.weight"] == "U8" and dtypes["layers.0.attn.wqkv.weight_scale"] == "I16"
    assert dtypes["tok_embeddings.weight"] == "U8" and "output.weight" not in dtypes  # tied: stored once
    assert dtypes["norm.weight"] == "F32" and "tok_embeddings._probe" not in dtypes
    assert json.loads((int4_bundle / "config.json").read_text())["quantization"] == "int4"
    assert json.loads((int4_bundle / "metadata.json").read_text())["quantization"] == "int4"
    assert stored_quantization(int4_bundle) == "int4"
    parameters = json.loads((tiny_bundle / "metadata.json").read_text())["parameters"]
    assert json.loads((int4_bundle / "metadata.json").read_text())["parameters"] == parameters  # two weights a byte
    assert (int4_bundle / "model.safetensors").stat().st_size < 0.2 * (tiny_bundle / "model.safetensors").stat().st_size


def test_an_int4_bundle_loads_as_it_was_quantized_without_quantizing_again(int4_bundle, tiny_bundle, monkeypatch):
    direct = load_bundle(tiny_bundle, quantize="int4")
    idx = torch.randint(0, direct.config.vocab_size, (1, 30), generator=torch.Generator().manual_seed(0))

    def no_requantizing(weight):
        raise AssertionError("an int4 bundle was quantized again")

    monkeypatch.setattr(quant4, "quantize_q4_0", no_requantizing)
    again = load_bundle(int4_bundle, quantize="int4")
    assert quant4.is_int4(again.model)
    assert torch.equal(again.model.layers[0].attn.wqkv.weight, direct.model.layers[0].attn.wqkv.weight)
    assert torch.equal(logits(again.model, idx), logits(direct.model, idx))
    floats = load_bundle(int4_bundle)  # quantize="none": the blocks' values as floats, for exports and training
    assert not quant4.is_int4(floats.model)
    torch.testing.assert_close(logits(floats.model, idx), logits(direct.model, idx), atol=1e-5, rtol=1e-5)


def test_tell_runs_an_int4_bundle_as_int4(int4_bundle):
    from engine.generation.session import open_session

    session = open_session(str(int4_bundle), device="cpu", dtype="float32")
    assert session.quantize == "int4" and quant4.is_int4(session.bundle.model)


def test_a_damaged_int4_bundle_is_refused(int4_bundle):
    weights = int4_bundle / "model.safetensors"
    state = load_file(str(weights))
    scale = state["layers.0.mlp.w13.weight_scale"]
    state["layers.0.mlp.w13.weight_scale"] = torch.full_like(scale, 0x7E00)  # float16 nan
    save_file(state, str(weights))
    with pytest.raises(BundleError, match="nan or inf scales"):
        load_bundle(int4_bundle)
    state["layers.0.mlp.w13.weight_scale"] = scale
    state["layers.0.mlp.w13.weight"] = torch.zeros(256, 64)  # a float matrix where packed blocks belong
    save_file(state, str(weights))
    with pytest.raises(BundleError, match="wrong shape for layers.0.mlp.w13.weight"):
        load_bundle(int4_bundle)


def test_gguf_export_of_an_int4_bundle_keeps_its_blocks(int4_bundle, tmp_path):
    gguf = pytest.importorskip("gguf", reason="needs the gguf package (pip install 'helium-studio[interop]')")
    from engine.formats.gguf import export_gguf

    path = export_gguf(load_bundle(int4_bundle), tmp_path / "auto.gguf")  # auto: as the bundle stores it
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_0
    t = {t.name: t for t in reader.tensors}["blk.0.attn_output.weight"]
    wo = load_bundle(int4_bundle, quantize="int4").model.layers[0].attn.wo
    got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
    assert (got == quant4.dequantize_q4_0(wo.weight, wo.weight_scale).numpy()).all()
