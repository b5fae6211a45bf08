"""Tests for TinyStories data: reading/normalizing, `helium data prepare`, the TokenLoader, download errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from typer.testing import CliRunner

from helium_tui.cli import app
from tests.conftest import TINYSTORIES, make_stories, needs_shared
from trainer.loader import TokenLoader
from trainer.prepare import PrepareOptions, prepare
from trainer.text import detect_format, iter_chunks, normalize, split_stories
from trainer.tokenizer import EOT


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
        {
            "train": [rng.integers(0, 300, 5000), rng.integers(0, 300, 3000)],
            "val": [rng.integers(0, 300, 500)],
        },
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


# ---------------------------------------------------------------- text


def test_normalize_exact():
    raw = "  Caf\u0065\u0301  was\t\t big.  \r\nNext  line.\r\n\r\n\r\n\n  New   paragraph. \n"
    assert normalize(raw) == "Café was big.\nNext line.\n\nNew paragraph."
    assert normalize(" \n\t \r\n") == ""
    assert normalize(f"a {EOT} b") == "a b"


def test_eot_chunks_ignore_blank_edges_and_keep_paragraphs(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text(f"\n{EOT}\nOne.\n\nTwo.\n{EOT}\n\n{EOT}\nThree.\n{EOT}\n")
    assert detect_format(path) == "eot"
    assert [normalize(c) for c in iter_chunks(path, "eot")] == ["One.\n\nTwo.", "", "Three."]


# ---------------------------------------------------------------- prepare

EOT_ID = 0


def write_eot(path: Path, stories: list[str]) -> Path:
    path.write_text("".join(f"{s}\n{EOT}\n" for s in stories), encoding="utf-8")
    return path


def decode_split(out: Path, split: str) -> list[str]:
    """Stories of a prepared split, decoded back to text (each must start right after an EOT)."""
    manifest = json.loads((out / "manifest.json").read_text())
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    stories = []
    for name in manifest["splits"][split]["shards"]:
        ids = np.fromfile(out / name, dtype=np.uint16).tolist()
        assert ids[0] == EOT_ID  # each shard starts at a story boundary
        cuts = [i for i, t in enumerate(ids) if t == EOT_ID] + [len(ids)]
        stories += [
            tok.decode(ids[a + 1 : b], skip_special_tokens=False)
            for a, b in zip(cuts, cuts[1:], strict=False)
        ]
    return stories


def distinct_stories(n: int, seed: int = 0) -> list[str]:
    """make_stories with a day number added, so no two are equal."""
    return [f"{s} It was day {i}." for i, s in enumerate(make_stories(n, seed=seed))]


def messy_stories() -> list[str]:
    base = distinct_stories(60, seed=3)
    messy = [s.replace(". ", ".  \t") + "\r\n\r\n\r\nThe  second paragraph. café 😀" for s in base[:10]]
    return messy + base[10:] + [base[12], "   ", base[20]]  # 2 duplicates and 1 empty


def test_prepare_round_trip_and_counts(tmp_path):
    src = write_eot(tmp_path / "in.txt", messy_stories())
    out = tmp_path / "out"
    result = prepare([src], out, PrepareOptions(vocab_size=300, val_fraction=0.2, shard_tokens=1500))
    m = result.manifest
    assert not result.up_to_date
    expected = list(dict.fromkeys(n for n in map(normalize, messy_stories()) if n))
    assert m["stats"] == {
        "stories_read": 63,
        "empty_dropped": 1,
        "duplicates_dropped": 2,
        "formats": {str(src): "eot"},
    }
    train, val = decode_split(out, "train"), decode_split(out, "val")
    assert sorted(train + val) == sorted(expected)  # decode(encode(story)) == normalized story, every story
    assert any("\n\nThe second paragraph. café 😀" in s for s in train + val)
    assert m["splits"]["train"]["stories"] == len(train) and m["splits"]["val"]["stories"] == len(val)
    assert len(val) > 0 and len(train) > len(val)
    assert len(m["splits"]["train"]["shards"]) > 1
    for split in ("train", "val"):
        on_disk = sum((out / n).stat().st_size // 2 for n in m["splits"][split]["shards"])
        assert on_disk == m["splits"][split]["tokens"]
    assert m["vocab_size"] == 300 and m["eot_id"] == 0 and m["format"] == "helium-data/1"
    assert m["tokenizer_sha256"] == hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    loader = TokenLoader(out, "train", batch_size=4, context=32)
    x, y = loader.batch(0)
    assert int(x.max()) < 300 and (x[:, 1:] == y[:, :-1]).all()


def test_three_formats_read_the_same_stories(tmp_path):
    stories = [s.replace("One day", "One day\nlater") for s in distinct_stories(40, seed=5)]
    eot = write_eot(tmp_path / "a.txt", stories)
    blank = tmp_path / "b.txt"
    blank.write_text("\n\n".join(stories) + "\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"text": s, "id": i}) + "\n" for i, s in enumerate(stories)))
    first = prepare([eot], tmp_path / "a", PrepareOptions(vocab_size=300, val_fraction=0))
    tok = tmp_path / "a" / "tokenizer.json"
    for path, fmt in ((blank, "blank"), (jsonl, "jsonl")):
        result = prepare([path], tmp_path / fmt, PrepareOptions(tokenizer=tok, val_fraction=0))
        assert result.manifest["stats"]["formats"] == {str(path): fmt}
        assert decode_split(tmp_path / fmt, "train") == [normalize(s) for s in stories]
        a = np.fromfile(tmp_path / "a" / "train_000.bin", dtype=np.uint16)
        b = np.fromfile(tmp_path / fmt / "train_000.bin", dtype=np.uint16)
        assert (a == b).all()
    assert first.manifest["splits"]["val"] == {"shards": [], "tokens": 0, "stories": 0, "text_bytes": 0}


def test_split_is_deterministic_by_text_and_seed():
    stories = make_stories(200, seed=9)
    stories = list(dict.fromkeys(stories))
    train, val = split_stories(stories, 0.25, seed=0)
    assert (train, val) == split_stories(stories, 0.25, seed=0)
    assert set(split_stories(list(reversed(stories)), 0.25, seed=0)[1]) == set(val)  # order does not matter
    assert set(split_stories(stories, 0.25, seed=1)[1]) != set(val)
    assert 0.1 < len(val) / len(stories) < 0.4


def test_val_file_without_markers_is_one_stream(tmp_path):
    src = write_eot(tmp_path / "train.txt", make_stories(50))
    valid = tmp_path / "valid.txt"
    valid.write_text("A first  story.\n\nIts second paragraph.\n\nAnother story here.\n")
    out = tmp_path / "out"
    m = prepare([src], out, PrepareOptions(vocab_size=300, val=valid)).manifest
    assert m["stats"]["formats"][str(valid)] == "stream"
    assert m["splits"]["val"]["stories"] == 1
    assert decode_split(out, "val") == ["A first story.\n\nIts second paragraph.\n\nAnother story here."]
    assert m["splits"]["train"]["stories"] == len(set(make_stories(50)))


def run_cli(*args: str):
    return CliRunner().invoke(app, ["data", *args])


def test_cli_rerun_is_a_noop_and_option_change_rebuilds(tmp_path):
    src = write_eot(tmp_path / "in.txt", make_stories(80))
    out = tmp_path / "out"
    first = run_cli("prepare", str(src), "--out", str(out), "--vocab-size", "300")
    assert first.exit_code == 0, first.output
    assert "train" in first.stdout and "vocab 300" in first.stdout
    shards = sorted(out.glob("*.bin")) + [out / "manifest.json", out / "tokenizer.json"]
    mtimes = [p.stat().st_mtime_ns for p in shards]
    again = run_cli("prepare", str(src), "--out", str(out), "--vocab-size", "300")
    assert again.exit_code == 0 and "up to date" in again.stdout
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
    changed = run_cli("prepare", str(src), "--out", str(out), "--vocab-size", "300", "--seed", "1")
    assert changed.exit_code == 0 and "up to date" not in changed.stdout
    assert json.loads((out / "manifest.json").read_text())["options"]["seed"] == 1


def assert_user_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert text in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_cli_bad_inputs_fail_in_one_line_and_overwrite_nothing(tmp_path):
    good = write_eot(tmp_path / "in.txt", make_stories(30))
    out = tmp_path / "out"
    assert run_cli("prepare", str(good), "--out", str(out), "--vocab-size", "300").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    assert_user_error(run_cli("prepare", str(tmp_path / "nope.txt"), "--out", str(out)), "no such file")
    empty = tmp_path / "empty.txt"
    empty.write_text(f"\n{EOT}\n   \n{EOT}\n")
    assert_user_error(
        run_cli("prepare", str(empty), "--out", str(out), "--vocab-size", "300"), "no stories found"
    )
    assert_user_error(run_cli("prepare", str(good), "--out", str(out), "--vocab-size", "70000"), "65,535")
    bad_tok = tmp_path / "tokenizer.json"
    bad_tok.write_text("{not a tokenizer")
    assert_user_error(
        run_cli("prepare", str(good), "--out", str(out), "--tokenizer", str(bad_tok)), "not a valid HF tokenizers file"
    )
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"text": "ok"}\n{"story": "no text field"}\n')
    assert_user_error(run_cli("prepare", str(bad_jsonl), "--out", str(out)), "bad.jsonl:2")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    (out / "manifest.json").write_text("{corrupt")
    corrupt_before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert_user_error(
        run_cli("prepare", str(good), "--out", str(out), "--vocab-size", "300"), "corrupt manifest"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == corrupt_before


def test_download_offline_fails_fast_with_hint(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HELIUM_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "helium_tui.cli", "data", "download", "--out", str(tmp_path / "dl")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot reach http://127.0.0.1:9" in proc.stderr
    assert "helium data prepare your.txt --out DIR" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "dl").exists()


def test_download_rejects_unknown_variant(tmp_path):
    assert_user_error(run_cli("download", "--variant", "v3", "--out", str(tmp_path)), "unknown variant")


@needs_shared(TINYSTORIES / "train.txt", covers="preparing real TinyStories text")
def test_prepare_real_tinystories_slice(tmp_path):
    text = (TINYSTORIES / "train.txt").read_text(encoding="utf-8")
    part = text[: text.index(EOT, 200_000) + len(EOT)] + "\n"
    src = tmp_path / "slice.txt"
    src.write_text(part, encoding="utf-8")
    out = tmp_path / "out"
    m = prepare([src], out, PrepareOptions(vocab_size=512, val_fraction=0.1)).manifest
    expected = [normalize(s) for s in part.split(EOT) if normalize(s)]
    expected = list(dict.fromkeys(expected))
    assert m["splits"]["train"]["stories"] + m["splits"]["val"]["stories"] == len(expected)
    assert sorted(decode_split(out, "train") + decode_split(out, "val")) == sorted(expected)
    x, _ = TokenLoader(out, "val", batch_size=2, context=64).batch(0)
    assert int(x.max()) < 512


def test_interrupted_prepare_leaves_no_manifest_and_rerun_recovers(tmp_path):
    src = write_eot(tmp_path / "in.txt", distinct_stories(80))
    out = tmp_path / "out"
    opts = PrepareOptions(vocab_size=300, shard_tokens=1000)
    prepare([src], out, opts)
    src2 = write_eot(tmp_path / "in2.txt", distinct_stories(90, seed=1))

    def interrupt(stage: str, done: int, total: int | None) -> None:
        if stage == "encoding train" and done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare([src2], out, opts, progress=interrupt)
    assert not (out / "manifest.json").exists()  # never a manifest over half-replaced shards
    with pytest.raises(ValueError, match="not a prepared data dir"):
        TokenLoader(out, "train", 2, 8)
    result = prepare([src2], out, opts)
    assert not result.up_to_date
    assert sorted(decode_split(out, "train") + decode_split(out, "val")) == sorted(
        distinct_stories(90, seed=1)
    )
    on_disk = {p.name for p in out.glob("*.bin")}
    assert on_disk == {
        n for s in result.manifest["splits"].values() for n in s["shards"]
    }  # stale shards removed


def test_given_tokenizer_needs_endoftext(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    path = tmp_path / "noeot.json"
    tok.save(str(path))
    src = write_eot(tmp_path / "in.txt", distinct_stories(10))
    assert_user_error(
        run_cli("prepare", str(src), "--out", str(tmp_path / "o"), "--tokenizer", str(path)), "<|endoftext|>"
    )
    assert not (tmp_path / "o").exists()


def test_damaged_shards_and_manifests_are_one_line_errors(prepared_by_hand):
    from trainer.loader import TokenLoader, read_manifest

    shard = prepared_by_hand / "train_000.bin"
    shard.write_bytes(np.random.default_rng(0).integers(0, 65535, size=4000, dtype=np.uint16).tobytes())
    manifest = json.loads((prepared_by_hand / "manifest.json").read_text())
    manifest["splits"]["train"]["tokens"] = 4000 + len(np.fromfile(prepared_by_hand / "train_001.bin", np.uint16))
    (prepared_by_hand / "manifest.json").write_text(json.dumps(manifest))
    loader = TokenLoader(prepared_by_hand, "train", 4, 32)
    with pytest.raises(ValueError, match="beyond the vocabulary"):
        for step in range(20):
            loader.batch(step)
    for bad in ({"shards": [5], "tokens": 1}, {"shards": ["a.bin"], "tokens": -1}, {"shards": ["a.bin"], "tokens": 1.5}):
        manifest["splits"]["train"] = bad
        (prepared_by_hand / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match="corrupt manifest"):
            read_manifest(prepared_by_hand)


def test_deeply_nested_jsonl_is_a_clear_error(tmp_path):
    from trainer.text import iter_chunks

    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "ok"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ValueError, match='deep.jsonl:2: expected a JSON object with a "text" string'):
        list(iter_chunks(path, "jsonl"))
