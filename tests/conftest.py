"""Shared fixtures: tiny stories, a tiny tokenizer and tiny models built in-process."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from engine.checkpoint import save_bundle
from engine.config import ModelConfig
from engine.model import TinySLM
from trainer.tokenizer import train_bpe

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
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
