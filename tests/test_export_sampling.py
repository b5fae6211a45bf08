"""Exports carry the model's own recommended sampling: generation_config.json and the HF card, llama.cpp's
general.sampling.* keys in GGUF; `helium import hf` reads generation_config.json back into "sampling"."""

from __future__ import annotations

import json

import pytest

from engine.bundles.bundle import load_bundle
from engine.formats.hf import export_hf, import_hf
from engine.generation.sampling import SamplingParams, describe, recommended
from engine.jsonfile import JsonFileError

RECOMMENDED = {"temperature": 0.3, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.2, "repeat_last_n": 64,
               "penalize_prompt": False, "frequency_penalty": 0.1}  # fmt: skip


@pytest.fixture
def recommending(tiny_bundle):
    """tiny_bundle whose metadata recommends RECOMMENDED."""
    path = tiny_bundle / "metadata.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"sampling": RECOMMENDED}))
    return load_bundle(tiny_bundle)


def test_hf_export_writes_the_models_own_settings_and_import_reads_them_back(recommending, tmp_path):
    out = export_hf(recommending, tmp_path / "hf")
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["temperature"], gen["top_k"], gen["top_p"], gen["repetition_penalty"], gen["do_sample"]) == (
        0.3, 20, 0.9, 1.2, True
    )  # not SamplingParams()'s 0.8 / 0 / 0.95 / 1.1
    card = (out / "README.md").read_text()
    words = describe(recommended(recommending.metadata))
    assert words in card and "over the last 64 tokens" in words and "the prompt not penalized" in words
    assert "prompt included" in card  # what transformers applies differently is said
    back = import_hf(out, tmp_path / "back")
    assert {k: v for k, v in load_bundle(back).metadata["sampling"].items() if k in RECOMMENDED} == RECOMMENDED


def test_a_greedy_recommendation_exports_as_greedy(tiny_bundle, tmp_path):
    bundle = load_bundle(tiny_bundle)
    bundle.metadata["sampling"] = {"temperature": 0.0, "repetition_penalty": 1.0}
    gen = json.loads((export_hf(bundle, tmp_path / "hf") / "generation_config.json").read_text())
    assert gen["do_sample"] is False and "temperature" not in gen and gen["repetition_penalty"] == 1.0
    assert "greedy" in (tmp_path / "hf" / "README.md").read_text()


def test_import_reads_a_transformers_generation_config(tiny_bundle, tmp_path):
    out = export_hf(load_bundle(tiny_bundle), tmp_path / "hf")
    path = out / "generation_config.json"
    other = {"bos_token_id": 0, "eos_token_id": 0, "do_sample": True, "temperature": 1, "top_p": 0.9}
    path.write_text(json.dumps(other))  # someone else's model: transformers' keys only
    sampling = load_bundle(import_hf(out, tmp_path / "a")).metadata["sampling"]
    assert sampling == {"temperature": 1, "top_p": 0.9}
    path.write_text(json.dumps(other | {"do_sample": False}))
    assert load_bundle(import_hf(out, tmp_path / "b")).metadata["sampling"]["temperature"] == 0
    path.write_text(json.dumps(other | {"temperature": -1}))
    with pytest.raises(JsonFileError, match=r"generation_config.json: sampling: temperature must be"):
        import_hf(out, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_gguf_carries_llama_cpps_sampling_keys(recommending, tmp_path):
    gguf = pytest.importorskip("gguf", reason="needs the gguf package (pip install 'helium-studio[interop]')")
    from engine.formats.gguf import export_gguf

    reader = gguf.GGUFReader(str(export_gguf(recommending, tmp_path / "m.gguf", "f32")))
    keys = {k: f.contents() for k, f in reader.fields.items() if k.startswith("general.sampling.")}
    assert keys == pytest.approx({
        "general.sampling.temp": 0.3, "general.sampling.top_k": 20, "general.sampling.top_p": 0.9,
        "general.sampling.penalty_repeat": 1.2, "general.sampling.penalty_last_n": 64,
    })  # fmt: skip
    plain = load_bundle(recommending.path)
    plain.metadata.pop("sampling")
    reader = gguf.GGUFReader(str(export_gguf(plain, tmp_path / "plain.gguf", "f32")))
    assert reader.fields["general.sampling.temp"].contents() == pytest.approx(SamplingParams().temperature)


def test_llama_cpp_reads_the_sampling_keys(recommending, tmp_path):
    pytest.importorskip("gguf", reason="needs the gguf package (pip install 'helium-studio[interop]')")
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install '.[test,interop]')")
    from engine.formats.gguf import export_gguf

    llm = llama_cpp.Llama(str(export_gguf(recommending, tmp_path / "m.gguf", "f32")), n_ctx=32, verbose=False)
    meta = {k: v for k, v in llm.metadata.items() if k.startswith("general.sampling.")}
    assert meta == {"general.sampling.temp": "0.300000", "general.sampling.top_k": "20",
                    "general.sampling.top_p": "0.900000", "general.sampling.penalty_repeat": "1.200000",
                    "general.sampling.penalty_last_n": "64"}  # fmt: skip
