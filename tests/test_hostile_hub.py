"""A hostile Hub or mirror (HF_ENDPOINT) cannot choose where Helium writes, nor make it print more than one line.

`helium models pull` and `helium import hf USER/REPO` run against tests/fake_hub.py with `Lies`: an ETag or
X-Repo-Commit that is a path, file names that climb out, redirects elsewhere, an absurd size, a slow drip. Every
test snapshots the whole tmp tree (HOME, HF_HOME and HELIUM_HOME all live in it) before and after.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle
from engine.formats.hf import export_hf
from engine.hub.catalog import CATALOG
from engine.hub.pull import PullProgress, pull
from helium_tui.cli import app
from tests.fake_hub import COMMIT, FakeHub, Lies, isolate_hub
from tests.test_pull import REPO, synthetic_entry, synthetic_files, synthetic_tokenizer

runner = CliRunner()
HF_REPO = "me/story"


@pytest.fixture(scope="module")
def synth_files(tmp_path_factory) -> dict[str, bytes]:
    return synthetic_files(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory) -> dict[str, bytes]:
    """A transformers export of a tiny bundle: what `import hf me/story` downloads."""
    import torch

    from engine.bundles.bundle import save_bundle
    from engine.model.tinyslm import TinySLM
    from tests.conftest import TINY
    from trainer.tokenizer import train_bpe

    tmp = tmp_path_factory.mktemp("hf")
    tok = train_bpe(["the cat sat on the mat", "a dog and a cat"] * 20, vocab_size=300)
    torch.manual_seed(0)
    model = TinySLM(TINY.with_(vocab_size=tok.vocab_size)).eval()
    out = export_hf(load_bundle(save_bundle(tmp / "b", model, tok, {"data": "synthetic"})), tmp / "hf")
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


@pytest.fixture
def world(tmp_path, monkeypatch, synth_files, hf_files):
    """HOME, caches and HELIUM_HOME inside tmp_path; a FakeHub serving the synthetic model and the HF repo."""
    for var, sub in [("HOME", "home"), ("XDG_CACHE_HOME", "xdg-cache"), ("HELIUM_HOME", "helium-home")]:
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("HELIUM_CACHE", raising=False)
    isolate_hub(monkeypatch, tmp_path / "hf-home")
    hub = FakeHub({REPO: dict(synth_files), HF_REPO: dict(hf_files)})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    vocab = len(synthetic_tokenizer()[0])
    entry = synthetic_entry("synth", "synth/synth.bin", "synth/tok.bin", synth_files, vocab)
    monkeypatch.setitem(CATALOG, "synth", entry)
    yield hub
    hub.stop()


def tree(root: Path) -> set[Path]:
    """Every path under root (files, folders, links; links not followed)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        found.update(Path(folder) / name for name in [*dirs, *files])
    return found


def files_under(root: Path) -> list[Path]:
    """Regular files (not links) under root."""
    return [p for p in tree(root) if p.is_file() and not p.is_symlink()] if root.exists() else []


def one_line_refusal(result, *words: str) -> str:
    """A CLI run that failed with exit 2 and one `helium: error:` line holding every word (and a progress line)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("downloading ")]
    assert len(lines) == 1 and lines[0].startswith("helium: error: "), result.stderr
    assert "warn" not in lines[0].lower() and "hf_xet" not in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def inside_caches(tmp_path: Path, path: Path) -> bool:
    """The path is in the Hugging Face cache or Helium's home (where downloads and installs may go)."""
    return path.is_relative_to(tmp_path / "hf-home") or path.is_relative_to(tmp_path / "helium-home")


def assert_nothing_written(tmp_path: Path, before: set[Path]) -> None:
    """No new path outside the caches and Helium's home, no file stored, nothing installed or left staging."""
    new = tree(tmp_path) - before
    outside = [p for p in new if not inside_caches(tmp_path, p)]
    assert not outside, f"written outside the caches: {sorted(outside)}"
    assert not files_under(tmp_path / "hf-home"), "a refused download left files in the Hub cache"
    assert not files_under(tmp_path / "helium-home"), "a refused download left files in HELIUM_HOME"


def run_both(tmp_path: Path, *words: str) -> None:
    """`models pull synth` and `import hf me/story` both refuse in one line and write nothing."""
    before = tree(tmp_path)
    one_line_refusal(runner.invoke(app, ["models", "pull", "synth"]), "(HF_ENDPOINT)", *words)
    assert_nothing_written(tmp_path, before)
    one_line_refusal(runner.invoke(app, ["import", "hf", HF_REPO, "--name", "s"]), "(HF_ENDPOINT)", *words)
    assert_nothing_written(tmp_path, before)


# ---------------------------------------------------------------------------------------------------------
# ETag and X-Repo-Commit: only the Hub's own form (40 or 64 lowercase hex) is accepted, before any GET


@pytest.mark.parametrize(
    "etag",
    [
        "ABS/outside/zz.pth",  # an absolute path (ABS: tmp_path), e.g. into site-packages
        "../../../../escaped.pth",  # climbs out of the cache's blobs folder
        "deadbeef",  # hex, but not a sha1 or sha256
        "A" * 64,  # upper case: not what the Hub sends
        "0" * 63 + "g",
    ],
)
def test_an_etag_that_is_not_a_hash_is_refused_before_downloading(world, tmp_path, etag):
    (tmp_path / "outside").mkdir()
    world.lies = Lies(etag=etag.replace("ABS", str(tmp_path)))
    run_both(tmp_path, "ETag")
    assert not world.gets() or all("/api/" in path for _, path, _ in world.gets())
    assert not (tmp_path / "outside" / "zz.pth").exists() and not (tmp_path / "escaped.pth").exists()


@pytest.mark.parametrize("commit", ["../../../../escaped", "ABS/outside", "main", COMMIT[:39] + "G"])
def test_a_commit_that_is_not_a_hash_is_refused_before_downloading(world, tmp_path, commit):
    (tmp_path / "outside").mkdir()
    world.lies = Lies(commit=commit.replace("ABS", str(tmp_path)))
    run_both(tmp_path, "commit")
    assert not world.gets() or all("/api/" in path for _, path, _ in world.gets())
    assert not (tmp_path / "escaped").exists() and not list((tmp_path / "outside").iterdir())


@pytest.mark.parametrize(
    "name",
    [
        "model-/../../../../../escaped.safetensors",  # matches model-*.safetensors and climbs out
        "/abs/model-1.safetensors",
        "model-\\..\\..\\x.safetensors",
        "model-\x1b]0;TITLE\x07.safetensors",
        "model-a/../../x.safetensors",
    ],
)
def test_a_listing_with_a_hostile_file_name_is_refused(world, tmp_path, name):
    world.lies = Lies(siblings=[name])
    before = tree(tmp_path)
    line = one_line_refusal(
        runner.invoke(app, ["import", "hf", HF_REPO, "--name", "s"]), "(HF_ENDPOINT)", "file name"
    )
    assert "\x1b" not in line and "\x07" not in line
    assert_nothing_written(tmp_path, before)
    assert not [path for _, path, _ in world.gets() if "/resolve/" in path]  # refused before any download


# ---------------------------------------------------------------------------------------------------------
# Redirects: a Location elsewhere changes where bytes come from, never where they go


def test_a_redirect_to_another_host_with_other_bytes_is_refused(world, tmp_path):
    other = FakeHub({"x/y": {"evil.pth": b"import os  # evil\n" * 100}})
    try:
        world.lies = Lies(redirect=f"{other.url}/x/y/resolve/main/evil.pth")
        run_both(tmp_path)
    finally:
        other.stop()


def test_a_redirect_to_a_climbing_path_is_refused(world, tmp_path):
    world.lies = Lies(redirect="/../../../../escaped.pth")
    run_both(tmp_path)


def test_a_redirect_to_a_mirror_with_the_same_bytes_is_followed_into_the_cache(world, tmp_path, synth_files):
    cdn = FakeHub({REPO: dict(synth_files)})  # the Hub's CDN: other host, same bytes
    world.lies = Lies(redirect=f"{cdn.url}{{path}}")
    before = tree(tmp_path)
    try:
        assert pull("synth").pulled
    finally:
        cdn.stop()
    assert [m for m, *_ in cdn.requests] == ["GET", "GET"]
    new = tree(tmp_path) - before
    assert all(inside_caches(tmp_path, p) for p in new)


# ---------------------------------------------------------------------------------------------------------
# Sizes and progress


def test_an_absurd_size_is_one_honest_line(world, tmp_path):
    world.lies = Lies(size=10**13)
    run_both(tmp_path, "10.0 TB")
    assert not [path for _, path, _ in world.gets() if "/resolve/" in path]


@pytest.mark.parametrize("size", [-5, 1.5, "12", True])
def test_a_size_that_is_not_a_size_is_refused(monkeypatch, size):
    """httpx refuses a negative Content-Length itself; X-Linked-Size reaches huggingface_hub's metadata unchecked."""
    import huggingface_hub
    from huggingface_hub import HfFileMetadata

    from engine.hub.files import HubError, head

    meta = HfFileMetadata(commit_hash="a" * 40, etag="b" * 64, location="", size=size, xet_file_data=None)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda *a, **k: meta)
    with pytest.raises(HubError, match="not a size"):
        head("me/story", "config.json", "main", "http://127.0.0.1:9")


def test_a_slow_link_reports_bytes_as_they_arrive(world, tmp_path):
    world.lies = Lies(drip_s=0.01)
    reports: list[PullProgress] = []
    assert pull("synth", progress=reports.append).pulled
    total = CATALOG["synth"].download_bytes
    between = {r.done for r in reports if r.stage == "download" and 0 < r.done < total}
    assert len(between) >= 5, sorted(between)


def test_an_honest_hub_still_imports_and_pulls(world, tmp_path):
    before = tree(tmp_path)
    res = runner.invoke(app, ["import", "hf", HF_REPO, "--name", "s"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "helium-home" / "models" / "s" / "config.json").is_file()
    assert pull("synth").pulled
    new = tree(tmp_path) - before
    assert all(inside_caches(tmp_path, p) for p in new)


@pytest.mark.parametrize(
    ("sha", "names"), [(5, ["config.json"]), (None, ["config.json"]), ("a" * 40, [5]), ("a" * 40, [None]),
                       ("a" * 40, [["config.json"]])],  # fmt: skip
)
def test_a_listing_of_the_wrong_types_is_refused(monkeypatch, sha, names):
    """The listing's commit and file names are type-checked, not only their text."""
    from types import SimpleNamespace

    import huggingface_hub

    from engine.hub.client import _listing
    from engine.hub.files import HubError

    info = SimpleNamespace(sha=sha, siblings=[SimpleNamespace(rfilename=n) for n in names])
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *a, **k: info)
    with pytest.raises(HubError, match="not a commit hash|file name Helium will not write"):
        _listing("me/story", "http://127.0.0.1:9")


# ---------------------------------------------------------------------------------------------------------
# `helium data download`: the same checked downloads, into a folder of the user's


DATASET = "datasets/roneneldan/TinyStories"
TEXTS = {"TinyStoriesV2-GPT4-train.txt": b"Once upon a time, Tom ran.\n" * 5000,
         "TinyStoriesV2-GPT4-valid.txt": b"Lily sang.\n" * 300}  # fmt: skip


def test_data_download_refuses_a_hostile_etag_and_writes_nothing(world, tmp_path):
    world.files[DATASET] = dict(TEXTS)
    world.lies.etag = "../../../../escaped.incomplete"
    before = tree(tmp_path)
    one_line_refusal(runner.invoke(app, ["data", "download", "--out", str(tmp_path / "dl")]), "ETag")
    assert tree(tmp_path) == before  # not even the folder


def test_data_download_fetches_checked_files_and_resumes_a_partial_one_across_runs(world, tmp_path):
    world.files[DATASET] = dict(TEXTS)
    out = tmp_path / "dl"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    train = TEXTS["TinyStoriesV2-GPT4-train.txt"]
    etag = hashlib.sha256(train).hexdigest()
    (out / f".TinyStoriesV2-GPT4-train.txt.{etag[:16]}.part").write_bytes(train[:50_000])  # an earlier run's
    result = runner.invoke(app, ["data", "download", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {**TEXTS, "notes.txt": b"mine"}
    assert ("GET", f"/{DATASET}/resolve/{COMMIT}/TinyStoriesV2-GPT4-train.txt", "bytes=50000-") in world.requests
