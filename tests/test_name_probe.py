"""benchmarks.name_probe: each row is the model's defaults, then --set, then its name bonus, through the real option."""

from __future__ import annotations

import pytest

from benchmarks.name_probe import settings


def test_each_row_is_the_model_defaults_then_the_setting_then_its_bonus():
    rows = settings({"temperature": 0.3, "repeat_last_n": 64}, "penalize_prompt=true", [0, 2], 300)
    assert [p.name_bonus for p in rows] == [0, 2]
    assert all(p.temperature == 0.3 and p.repeat_last_n == 64 and p.penalize_prompt and p.max_new_tokens == 300
               for p in rows)  # fmt: skip


def test_a_bad_bonus_is_refused():
    with pytest.raises(ValueError, match="name bonus"):
        settings({}, "", [-1], 300)
