"""Tests for TinyStories data: reading/normalizing, `helium data prepare`, the TokenLoader, download errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.loader import TokenLoader


def write_prepared(d: Path, shards: dict[str, list[np.ndarray]], vocab_size: int = 300) -> Path:
    """A hand-made prepared dir (independent of `prepare`), for loader tests."""
    d.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, arrays in shards.items():
        names = []
        for i, a in enumerate(arrays):
            name = f"{split}_{i:03d}.bin"
            a.astype(np.uint16).tofile(d / name)
            names.append(name)
        splits[split] = {"shards": names, "tokens": int(sum(len(a) for a in arrays)), "stories": 1}
    manifest = {"format": "helium-data/1", "vocab_size": vocab_size, "eot_id": 0, "splits": splits}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


@pytest.fixture
def prepared_by_hand(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    return write_prepared(
        tmp_path / "data",
        {"train": [rng.integers(0, 300, 5000), rng.integers(0, 300, 3000)], "val": [rng.integers(0, 300, 500)]},
    )


# ---------------------------------------------------------------- loader


def test_loader_shapes_shift_and_range(prepared_by_hand):
    loader = TokenLoader(prepared_by_hand, "train", batch_size=8, context=32)
    assert loader.tokens == 8000
    x, y = loader.batch(0)
    assert x.shape == y.shape == (8, 32)
    assert str(x.dtype) == "torch.int64" and str(y.dtype) == "torch.int64"
    assert (x[:, 1:] == y[:, :-1]).all()
    assert int(x.max()) < 300 and int(y.max()) < 300 and int(x.min()) >= 0


def test_loader_windows_match_shard_contents(prepared_by_hand):
    loader = TokenLoader(prepared_by_hand, "train", batch_size=16, context=32)
    x, y = loader.batch(5)
    for row, (shard, offset) in enumerate(loader.starts(5)):
        data = np.fromfile(prepared_by_hand / f"train_{shard:03d}.bin", dtype=np.uint16)
        assert offset + 33 <= len(data)  # windows never cross a shard boundary
        assert x[row].tolist() == data[offset : offset + 32].tolist()
        assert y[row].tolist() == data[offset + 1 : offset + 33].tolist()


def test_loader_is_deterministic_per_seed_step_rank(prepared_by_hand):
    a = TokenLoader(prepared_by_hand, "train", batch_size=4, context=16, seed=1)
    b = TokenLoader(prepared_by_hand, "train", batch_size=4, context=16, seed=1)
    b.batch(0), b.batch(1)  # order of calls does not matter: a resumed run sees the same batch
    assert (a.batch(7)[0] == b.batch(7)[0]).all()
    assert not (a.batch(7)[0] == a.batch(8)[0]).all()
    other_seed = TokenLoader(prepared_by_hand, "train", batch_size=4, context=16, seed=2)
    assert not (a.batch(7)[0] == other_seed.batch(7)[0]).all()


def test_loader_ranks_draw_different_windows(prepared_by_hand):
    r0 = TokenLoader(prepared_by_hand, "train", batch_size=4, context=16, rank=0, world_size=2)
    r1 = TokenLoader(prepared_by_hand, "train", batch_size=4, context=16, rank=1, world_size=2)
    assert r0.starts(3) != r1.starts(3)
    assert not (r0.batch(3)[0] == r1.batch(3)[0]).all()


def test_loader_uses_every_shard(prepared_by_hand):
    loader = TokenLoader(prepared_by_hand, "train", batch_size=64, context=16)
    shards = {s for step in range(5) for s, _ in loader.starts(step)}
    assert shards == {0, 1}


def test_loader_errors_are_value_errors(tmp_path, prepared_by_hand):
    with pytest.raises(ValueError, match="not a prepared data dir"):
        TokenLoader(tmp_path / "nowhere", "train", 2, 8)
    with pytest.raises(ValueError, match="no split 'test'"):
        TokenLoader(prepared_by_hand, "test", 2, 8)
    with pytest.raises(ValueError, match="no shard with"):
        TokenLoader(prepared_by_hand, "val", 2, 600)
    (prepared_by_hand / "val_000.bin").write_bytes(b"\x01\x00\x02")
    with pytest.raises(ValueError, match="truncated shard"):
        TokenLoader(prepared_by_hand, "val", 2, 8)
    (prepared_by_hand / "train_001.bin").unlink()
    with pytest.raises(ValueError, match="shard missing"):
        TokenLoader(prepared_by_hand, "train", 2, 8)
    (prepared_by_hand / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable manifest"):
        TokenLoader(prepared_by_hand, "train", 2, 8)
