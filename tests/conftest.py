"""Shared fixtures: tiny stories, a tiny tokenizer and tiny models built in-process."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from engine.bundles.bundle import save_bundle
from engine.model.config import ModelConfig
from engine.model.tinyslm import TinySLM
from tests.shared_skips import (  # noqa: F401  (the skip mark for ../shared; its hook ends a run with one line)
    SHARED,
    SHARED_SKIP,
    needs_shared,
    pytest_terminal_summary,
)
from trainer.tokenizer import train_bpe

# kernels Helium builds at first use (engine.model.cpu_kernels) go to a cache of this test session, not the user's;
# a cache this session made is removed when it ends (746 of them had piled up in /tmp)
if "HELIUM_CACHE" not in os.environ:
    os.environ["HELIUM_CACHE"] = tempfile.mkdtemp(prefix="helium-test-cache-")
    atexit.register(shutil.rmtree, os.environ["HELIUM_CACHE"], ignore_errors=True)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `gpu` skip, with the reason, on machines without CUDA (CI, laptops)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

LLAMA2C = SHARED / "peers" / "llama2c"
TINYSTORIES = SHARED / "data" / "tinystories"

NAMES = ["Lily", "Tom", "Max", "Sue", "Ben", "Mia"]
THINGS = ["ball", "cat", "tree", "cake", "boat", "kite"]
FEELINGS = ["happy", "sad", "excited", "scared"]


def make_stories(n: int = 200, seed: int = 0) -> list[str]:
    """Small synthetic TinyStories-like stories (deterministic)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, thing, feel = rng.choice(NAMES), rng.choice(THINGS), rng.choice(FEELINGS)
        out.append(
            f"Once upon a time, there was a girl named {name}. {name} had a {thing}. "
            f"One day, the {thing} was lost. {name} was {feel}. "
            f'"Where is my {thing}?" said {name}. Then {name} found it and was happy again. The end.'
        )
    return out


@pytest.fixture(scope="session")
def stories() -> list[str]:
    return make_stories()


@pytest.fixture(scope="session")
def tiny_tokenizer(stories):
    return train_bpe(stories + ["café naïve 😀 日本 — “quoted”"], vocab_size=300)


TINY = ModelConfig(vocab_size=300, d_model=64, n_layer=2, n_head=4, n_kv_head=2, hidden_dim=128, context_length=64)


@pytest.fixture
def tiny_model(tiny_tokenizer) -> TinySLM:
    torch.manual_seed(0)
    return TinySLM(TINY.with_(vocab_size=tiny_tokenizer.vocab_size)).eval()


@pytest.fixture
def tiny_bundle(tmp_path, tiny_model, tiny_tokenizer) -> Path:
    return save_bundle(tmp_path / "tiny-bundle", tiny_model, tiny_tokenizer, {"data": "synthetic", "steps": 0})


@pytest.fixture
def helium_home(tmp_path, monkeypatch) -> Path:
    """An empty user data dir so tests never see a real user's models."""
    home = tmp_path / "helium-home"
    monkeypatch.setenv("HELIUM_HOME", str(home))
    return home


def write_prepared_dir(directory: Path, stories: list[str], vocab_size: int = 300, val_every: int = 10) -> Path:
    """A prepared data dir per docs/INTERFACES.md: tokenizer.json, uint16 shards, manifest.json."""
    import json

    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    tok = train_bpe(stories, vocab_size=vocab_size)
    tok.hf.save(str(directory / "tokenizer.json"))
    splits: dict = {}
    for split, chosen in (
        ("train", [s for i, s in enumerate(stories) if i % val_every]),
        ("val", [s for i, s in enumerate(stories) if i % val_every == 0]),
    ):
        ids = [t for s in chosen for t in [0, *tok.encode(s, add_bos=False)]]
        np.asarray(ids, dtype=np.uint16).tofile(directory / f"{split}_000.bin")
        splits[split] = {"shards": [f"{split}_000.bin"], "tokens": len(ids), "stories": len(chosen)}
    manifest = {
        "format": "helium-data/1", "vocab_size": tok.vocab_size, "eot_id": 0, "tokenizer_sha256": "",
        "sources": [], "splits": splits, "stats": {}, "options": {"fixture": True},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """A small prepared data dir built from `make_stories(400)` (read-only: copy it before changing files)."""
    return write_prepared_dir(tmp_path_factory.mktemp("prepared"), make_stories(400))


@pytest.fixture
def one_thread(monkeypatch):
    """One intra-op thread: tiny models run far faster than on two threads of a shared 2-core box."""
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for subprocesses the test starts
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_train_config(data: Path, out: Path, **overrides):
    """A TrainConfig small enough for a few hundred CPU steps in seconds (tiny preset, float32, CPU)."""
    from trainer.config import TrainConfig

    base = dict(
        data=str(data), out=str(out), preset="tiny", context=32, batch_size=8, max_steps=20, lr=3e-3,
        min_lr=3e-4, warmup_steps=5, eval_interval=10, eval_batches=2, ckpt_interval=10, log_interval=5,
        dtype="float32", device="cpu", seed=0,
    )  # fmt: skip
    return TrainConfig(**(base | overrides))


@pytest.fixture
def torch_decode(monkeypatch) -> None:
    """Decode steps on the PyTorch path (eager or compiled), not the native runtime that CPU sessions use."""
    monkeypatch.setenv("HELIUM_NATIVE_DECODE", "off")

