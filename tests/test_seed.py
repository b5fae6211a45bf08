"""One seed range everywhere: every place that takes a seed accepts 0..MAX_SEED and refuses the rest the same way,
and no module writes the limit out again (it lives in engine/checks.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.checks import MAX_SEED, check_seed, is_seed
from engine.generation.sampling import SamplingParams
from helium_tui.story_file import clean_fields
from trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
BAD = [-1, MAX_SEED + 1, 1.5, True, "7"]


@pytest.mark.parametrize("seed", [0, 1337, MAX_SEED])
def test_every_seed_taker_accepts_the_range(seed):
    assert is_seed(seed) and check_seed(seed) == seed
    SamplingParams(seed=seed).validate()
    TrainConfig(data="d", out="o", seed=seed).validate()
    assert clean_fields({"prompt": "p", "text": "x", "seed": seed}, whole=True)[0]["seed"] == seed


@pytest.mark.parametrize("seed", BAD)
def test_every_seed_taker_refuses_the_rest_with_one_message(seed):
    assert not is_seed(seed)
    message = f"seed must be a whole number from 0 to 2**63-1, got {seed!r}"
    with pytest.raises(ValueError) as engine_error:
        SamplingParams(seed=seed).validate()
    with pytest.raises(ValueError) as trainer_error:
        TrainConfig(data="d", out="o", seed=seed).validate()
    assert str(engine_error.value) == str(trainer_error.value) == message
    assert clean_fields({"prompt": "p", "text": "x", "seed": seed}, whole=True)[1] == ["seed"]


def test_the_seed_limit_is_written_once():
    pattern = re.compile(r"2\s*\*\*\s*63")
    places = [
        str(path.relative_to(ROOT))
        for package in ("engine", "trainer", "helium_tui")
        for path in sorted((ROOT / package).rglob("*.py"))
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert places == ["engine/checks.py"]
