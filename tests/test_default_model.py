"""The shipped default model: it installs with the package, `tell` uses it, and its greedy story is golden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle
from engine.bundles.registry import DEFAULT_MODEL, resolve_model
from engine.generation.generate import Generator, SamplingParams
from engine.paths import assets_dir
from helium_tui.cli import app
from tests.stories import told

DEFAULT_DIR = assets_dir() / DEFAULT_MODEL
GOLDEN_PROMPT = "Once upon a time"
GOLDEN_FILE = Path(__file__).parent / "golden" / "default_greedy.txt"


def test_default_bundle_ships_with_the_package():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metadata.json", "MODEL_CARD.md"):
        assert (DEFAULT_DIR / name).is_file(), name
    size = sum(f.stat().st_size for f in DEFAULT_DIR.iterdir())
    assert size <= 20 * 2**20  # keep the wheel small


def test_default_name_resolves_to_the_shipped_bundle(helium_home):
    assert resolve_model(None) == DEFAULT_DIR


def test_tell_without_model_uses_the_default(helium_home, one_thread):
    r = CliRunner().invoke(app, ["tell", GOLDEN_PROMPT, "--max-tokens", "8", "--json", "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["model"] == DEFAULT_MODEL and out["generated_tokens"] >= 1


def test_golden_greedy_story(one_thread):
    bundle = load_bundle(DEFAULT_DIR)  # float32
    params = SamplingParams(max_new_tokens=120, temperature=0, repetition_penalty=1.0)
    result = told(Generator(bundle.model, bundle.tokenizer), GOLDEN_PROMPT, params)
    if not GOLDEN_FILE.is_file():
        pytest.fail(f"golden file missing: {GOLDEN_FILE}")
    assert GOLDEN_PROMPT + result.text == GOLDEN_FILE.read_text(encoding="utf-8")
