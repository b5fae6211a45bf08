"""Every JSON reader, fed arbitrary JSON at every key it reads: it returns, or raises its one documented error type
(never AttributeError, TypeError, KeyError, ZeroDivisionError or RecursionError)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.bundles.info import FORMAT, METADATA_KINDS, read_config, read_metadata
from engine.errors import BundleError
from engine.jsonfile import JsonFileError, depth, field, read_json
from tests.conftest import TINY

SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                      max_leaves=12)  # fmt: skip
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BUNDLE_CONFIG = {"format": FORMAT, "model": TINY.to_dict(), "bos_token_id": 0, "eos_token_id": 0}
HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 300, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 16, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "rope_scaling": None, "hidden_act": "silu",
    "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0,
}  # fmt: skip
AUTHOR_CONFIG = {"n_head": 8, "window_size": 128, "max_seq_len": 512, "vocab_size": 300, "d_model": 64,
                 "n_layers": 2, "n_kv_head": 2, "mlp_ratio": 2.5}  # fmt: skip
MANIFEST = {
    "format": "helium-data/1", "vocab_size": 300, "eot_id": 0, "bos_id": 0, "eos_id": 0, "tokenizer_model": None,
    "tokenizer_sha256": "ab", "sources": [{"path": "x", "sha256": "ab", "bytes": 1, "role": "train"}],
    "splits": {"train": {"shards": ["train_000.bin"], "tokens": 4, "stories": 1, "text_bytes": 9},
               "val": {"shards": [], "tokens": 0, "stories": 0, "text_bytes": 0}},
    "options": {},
}  # fmt: skip
TRAIN_CONFIG = {"data": "d", "out": "o", "preset": "micro", "max_steps": 5, "batch_size": 4, "lr": 1e-3, "seed": 1,
                "init_from": "", "compile": None}  # fmt: skip
STORY = {"format": "helium-story/1", "params": {"temperature": 0.8}, "model": "m", "seed": 1, "created": "",
         "tokens": 3, "finish_reason": "eos", "chars_cut": 0, "prompt": "Once", "text": " upon"}  # fmt: skip
EVENT = {"event": "train", "time": 1.0, "step": 1, "loss": 2.0, "lr": 1e-3, "tokens_per_s": 5.0, "mfu": None,
         "grad_norm": 1.0, "tokens": 10, "elapsed_s": 1.0, "eta_s": 2.0}  # fmt: skip


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into doc's objects (lists included by index), the empty path (the whole document) first."""
    out = [prefix]
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in children:
        out += paths(value, (*prefix, key))
    return out


def replaced(doc: Any, path: tuple, value: Any) -> Any:
    """A copy of doc with the value at path (or the whole document) replaced."""
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def mutations(doc: Any) -> st.SearchStrategy:
    """doc with arbitrary JSON at one of its key paths (or at a new key of the top object)."""
    extra = st.tuples(st.text(max_size=8)).map(lambda k: k)
    return st.tuples(st.sampled_from(paths(doc)) | extra, VALUES).map(lambda pv: replaced(doc, *pv))


def check(reader: Callable[[Path], Any], name: str, text: str, allowed: tuple[type[BaseException], ...]) -> None:
    """Write text as name in a fresh directory, call reader(directory): it returns or raises one of allowed."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, name).write_text(text, encoding="utf-8")
        try:
            reader(Path(tmp))
        except allowed:
            pass


def check_value(reader: Callable[[Path], Any], name: str, doc: Any, allowed: tuple[type[BaseException], ...]):
    check(reader, name, json.dumps(doc), allowed)


def read_hf_config(directory: Path):
    from engine.formats.hf import config_from_hf

    path = directory / "config.json"
    return config_from_hf(read_json(path), path)


def read_index(directory: Path):
    from engine.formats.hf import shard_files

    return shard_files(directory / "model.safetensors.index.json")


def read_extra_ids(directory: Path):
    from engine.formats.hf import _token_id
    from engine.jsonfile import need_object

    path = directory / "generation_config.json"
    data = need_object(read_json(path), path)
    return _token_id(data, "bos", path), _token_id(data, "eos", path)


def read_author(directory: Path):
    from engine.formats.heliumlm import read_author_config

    return read_author_config(directory / "c.json")


def read_data_manifest(directory: Path):
    from trainer.loader import read_manifest

    return read_manifest(directory)


def read_story(directory: Path):
    from helium_tui.library import StoryStore
    from helium_tui.story_file import parse_head

    path = directory / "s.json"
    try:
        return StoryStore(directory)._read(path)
    finally:
        parse_head(path.read_text(encoding="utf-8")[:200])  # the list's reader of a file's head never raises


def read_event(directory: Path):
    from engine.runs.rundir import RunEvent, read_events

    text = (directory / "events.jsonl").read_text(encoding="utf-8")
    assert RunEvent.parse(text) is None or isinstance(RunEvent.parse(text), RunEvent)
    return read_events(directory)


def read_train_config(directory: Path):
    from trainer.config import TrainConfig

    return TrainConfig.load(directory / "train_config.json")


def read_finetune_manifest(directory: Path):
    from trainer.finetune import train_tokens

    return train_tokens(directory)


def read_monitor_form(directory: Path):
    from engine.model.config import PRESETS
    from helium_tui.screens.training.form_values import RunForm, is_finetune_run, suggested_model_name

    form = RunForm.of_run(directory, tuple(PRESETS))
    assert form is None or all(isinstance(getattr(form, k), str) for k in ("preset", "data", "steps", "batch", "lr"))
    is_finetune_run(directory)
    suggested_model_name(directory, None)
    return form


def read_jsonl_story(directory: Path):
    from trainer.text import iter_chunks

    return list(iter_chunks(directory / "s.jsonl", "jsonl"))


def read_pulled_metadata(directory: Path):
    from engine.hub.catalog import get_entry
    from engine.hub.pull import _record_origin

    entry = get_entry("stories260K")
    snapshot = directory / "snapshots" / ("a" * 40)
    _record_origin(directory, entry, {path: snapshot / path for path in entry.files})
    return read_metadata(directory)


READERS = {  # name: (reader, file name, a valid document, the one error type it may raise)
    "bundle config": (lambda d: read_config(d), "config.json", BUNDLE_CONFIG, (BundleError,)),
    "bundle metadata": (lambda d: read_metadata(d), "metadata.json", {"parameters": 5, "data": "x"}, ()),
    "hf config": (read_hf_config, "config.json", HF_CONFIG, (BundleError,)),
    "hf index": (read_index, "model.safetensors.index.json", {"weight_map": {"a": "m-1.safetensors"}}, (BundleError,)),
    "hf generation config": (read_extra_ids, "generation_config.json", {"bos_token_id": 1, "eos_token_id": [2, 3]},
                             (BundleError,)),
    "author config": (read_author, "c.json", AUTHOR_CONFIG, (BundleError,)),
    "data manifest": (read_data_manifest, "manifest.json", MANIFEST, (ValueError,)),
    "story file": (read_story, "s.json", STORY, (ValueError,)),  # StoryFileError is a ValueError
    "run event": (read_event, "events.jsonl", EVENT, ()),
    "train config": (read_train_config, "train_config.json", TRAIN_CONFIG, (ValueError,)),
    "fine-tune manifest": (read_finetune_manifest, "manifest.json", MANIFEST, (ValueError,)),
    "monitor form": (read_monitor_form, "train_config.json", TRAIN_CONFIG, ()),
    "jsonl story": (read_jsonl_story, "s.jsonl", {"text": "Once upon a time."}, (ValueError,)),
    "pulled metadata": (read_pulled_metadata, "metadata.json", {"parameters": 5}, (BundleError,)),
}  # fmt: skip


@pytest.mark.parametrize("name", READERS)
def test_each_reader_accepts_its_valid_document(name):
    reader, file, doc, _ = READERS[name]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, file).write_text(json.dumps(doc), encoding="utf-8")
        assert reader(Path(tmp)) is not None


@pytest.mark.parametrize("name", READERS)
@SETTINGS
@given(data=st.data())
@pytest.mark.slow
def test_arbitrary_json_at_any_key_gives_only_the_documented_error(name, data):
    reader, file, doc, allowed = READERS[name]
    check_value(reader, file, data.draw(mutations(doc)), allowed)


@pytest.mark.parametrize("name", READERS)
@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
                                  "[" * 40 + "]" * 40, "", "\xff", "1" * 5000, "NaN", '{"a": 1e999}'])  # fmt: skip
def test_nested_huge_and_broken_files_give_only_the_documented_error(name, text):
    reader, file, _, allowed = READERS[name]
    check(reader, file, text, allowed)


def test_metadata_of_the_wrong_kind_is_dropped_not_trusted(tmp_path):
    meta = {key: ["wrong"] for key in METADATA_KINDS} | {"own_note": ["kept"], "parameters": 7}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    assert read_metadata(tmp_path) == {"own_note": ["kept"], "parameters": 7}


@SETTINGS
@given(value=VALUES, kind=st.sampled_from([int, float, bool, str, list, dict, (int, list)]))
def test_field_returns_the_kind_asked_for_or_raises_json_file_error(value, kind):
    try:
        got = field({"k": value}, "k", kind, source="f.json", low=0 if kind in (int, float) else None)
    except JsonFileError as exc:
        assert str(exc).startswith("f.json: k ") and "\n" not in str(exc)
        return
    kinds = kind if isinstance(kind, tuple) else (kind,)
    assert type(got) in kinds or (kind is float and type(got) is int)


def test_depth_counts_without_recursion():
    deep: Any = 0
    for _ in range(100_000):
        deep = [deep]
    assert depth(deep) == 100_000 and depth({"a": [1]}) == 2 and depth(3) == 0
