"""`helium models pull`: the catalog, the shipped Llama 2 tokenizer, and pulls through a local fake Hub.

Every download goes to a real HTTP server on 127.0.0.1 (tests/fake_hub.py) through HF_ENDPOINT; nothing touches
the internet. stories260K is served from ../shared when present (golden story vs llama2.c's run.c); synthetic
llama2.c files cover the rest without it.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle
from engine.formats.llama2c import Llama2cHeader, _layout, import_llama2c, load_tokenizer, read_tokenizer_bin
from engine.hub.catalog import CATALOG, LLAMA2_TOKENIZER, CatalogModel
from engine.hub.pull import PullCancelled, PullError, PullProgress, pull
from engine.paths import assets_dir
from helium_tui.cli import app
from tests.conftest import LLAMA2C, TINYSTORIES, needs_shared
from tests.fake_hub import COMMIT, FakeHub, Faults, isolate_hub
from tests.test_llama2c import (
    EDGE_TEXTS,
    GREEDY,
    PARAMS,
    _random_texts,
    _valid_paragraphs,
    llama2c_encode,
    synthetic_tokenizer,
    synthetic_weights,
    write_checkpoint,
    write_tokenizer,
)

runner = CliRunner()
NO_PEER = needs_shared(LLAMA2C / "stories260K.bin", covers="pulling stories260K tells llama2.c's golden story")
REPO = "test/tinyllamas"


@pytest.fixture(autouse=True)
def hub_cache(tmp_path, monkeypatch, helium_home) -> Path:
    """An empty HELIUM_HOME and Hugging Face cache for every test."""
    isolate_hub(monkeypatch, tmp_path / "hf-home")
    return tmp_path / "hf-home"


def synthetic_entry(name: str, weights: str, tokenizer: str | None, files: dict[str, bytes], vocab: int):
    """A catalog entry for synthetic files served by a FakeHub (shape: tests.test_llama2c.PARAMS)."""
    p = PARAMS
    return CatalogModel(
        name=name, repo=REPO, weights=weights, tokenizer=tokenizer, checkpoint_bytes=len(files[weights]),
        tokenizer_bytes=len(files[tokenizer]) if tokenizer else 0, dim=p["dim"], hidden_dim=p["hidden_dim"],
        n_layers=p["n_layers"], n_heads=p["n_heads"], n_kv_heads=p["n_kv_heads"], vocab_size=vocab,
        seq_len=p["seq_len"], about="synthetic",
    )  # fmt: skip


def synthetic_files(tmp: Path) -> dict[str, bytes]:
    """A small-vocabulary model with its tokenizer.bin, and a model using Llama 2's 32,000-token vocabulary."""
    pieces, scores = synthetic_tokenizer()
    small = write_checkpoint(tmp / "s.bin", synthetic_weights(len(pieces), True, seed=3), len(pieces), 0)
    big = write_checkpoint(tmp / "b.bin", synthetic_weights(32000, True, seed=4), 32000, 0)
    return {
        "synth/synth.bin": small.read_bytes(),
        "synth/tok.bin": write_tokenizer(tmp / "tok.bin", pieces, scores).read_bytes(),
        "synth32k.bin": big.read_bytes(),
    }


@pytest.fixture(scope="module")
def synth_files(tmp_path_factory) -> dict[str, bytes]:
    return synthetic_files(tmp_path_factory.mktemp("synth"))


@pytest.fixture
def synth(synth_files, monkeypatch) -> tuple[FakeHub, CatalogModel, CatalogModel]:
    """A FakeHub serving the synthetic files, HF_ENDPOINT pointing at it, both entries in the catalog."""
    hub = FakeHub({REPO: dict(synth_files)})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    vocab = len(synthetic_tokenizer()[0])
    small = synthetic_entry("synth", "synth/synth.bin", "synth/tok.bin", synth_files, vocab)
    big = synthetic_entry("synth32k", "synth32k.bin", None, synth_files, 32000)
    for entry in (small, big):
        monkeypatch.setitem(CATALOG, entry.name, entry)
    yield hub, small, big
    hub.stop()


def no_leftovers(helium_home: Path, hf_home: Path) -> None:
    """Nothing half-done: no staging or install folders, no partial downloads."""
    assert not list((helium_home / "tmp").glob("*")) if (helium_home / "tmp").exists() else True
    models = helium_home / "models"
    assert not [p for p in models.glob(".*")] if models.exists() else True
    assert not list(hf_home.rglob("*.incomplete"))


# ---------------------------------------------------------------------------------------------------------
# The catalog and the shipped tokenizer (no network, no shared data)


def test_catalog_sizes_and_parameters_follow_the_llama2c_layout():
    for m in CATALOG.values():
        header = Llama2cHeader(0, m.dim, m.hidden_dim, m.n_layers, m.n_heads, m.n_kv_heads, m.vocab_size, m.seq_len,
                               True, 28)  # fmt: skip
        blocks = [(name, int(np.prod(shape))) for name, shape in _layout(header)]
        assert m.checkpoint_bytes == 28 + 4 * sum(n for _, n in blocks), m.name
        assert m.params == sum(n for name, n in blocks if not name.startswith("skip")), m.name
        assert m.model_config().vocab_size == m.vocab_size
    assert [m.name for m in CATALOG.values()] == ["stories260K", "stories15M", "stories42M", "stories110M"]
    assert {m.repo for m in CATALOG.values()} == {"karpathy/tinyllamas"}
    assert (
        round(CATALOG["stories110M"].params / 1e6) == 110 and round(CATALOG["stories15M"].params / 1e6) == 15
    )


def test_shipped_llama2_tokenizer_encodes_known_ids():
    tok = load_tokenizer(assets_dir() / LLAMA2_TOKENIZER)
    assert tok.vocab_size == 32000 and tok.bos_id == tok.eos_id == 1
    assert tok.encode("Once upon a time") == [1, 9038, 2501, 263, 931]  # ▁Once ▁upon ▁a ▁time
    # from run.c's encode() (tests.test_llama2c.llama2c_encode) on llama2.c's tokenizer.bin
    assert tok.encode("Lily's  dog 😀", add_bos=False) == [
        365,
        2354,
        29915,
        29879,
        29871,
        11203,
        29871,
        243,
        162,
        155,
        131,
    ]
    assert tok.encode("日本", add_bos=False) == [29871, 30325, 30346]
    for text in ["Lily's  dog — “quoted” 😀\n\nThe end.", "   spaced   out  ", "日本"]:
        assert tok.decode(tok.encode(text)) == text
    assert (assets_dir() / LLAMA2_TOKENIZER).stat().st_size < 3_000_000


@NO_PEER
def test_shipped_llama2_tokenizer_is_the_converted_tokenizer_bin_and_encodes_like_run_c():
    shipped = assets_dir() / LLAMA2_TOKENIZER
    fresh = load_tokenizer(LLAMA2C / "tokenizer.bin")
    assert json.loads(shipped.read_text(encoding="utf-8")) == json.loads(fresh.hf.to_str())
    pieces, scores = read_tokenizer_bin(LLAMA2C / "tokenizer.bin")
    tok = load_tokenizer(shipped)
    texts = EDGE_TEXTS + _random_texts(200, seed=7)
    if (TINYSTORIES / "valid.txt").is_file():
        texts += _valid_paragraphs(40)
    mismatches = [t for t in texts if tok.encode(t, add_bos=False) != llama2c_encode(t, pieces, scores)]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} texts differ, first: {mismatches[0]!r}"


def test_catalog_modules_leave_torch_unloaded():
    code = "import sys, engine.hub.catalog, engine.hub.pull; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------------------------------------------------
# Pulls from a fake Hub (synthetic files)


def test_pull_converts_installs_and_a_second_pull_is_a_no_op(synth, helium_home, hub_cache, tmp_path):
    hub, small, _ = synth
    reports: list[PullProgress] = []
    result = pull("synth", progress=reports.append)
    assert result.pulled and result.path == helium_home / "models" / "synth"
    total = small.download_bytes
    downloads = [r for r in reports if r.stage == "download"]
    assert downloads[0] == PullProgress("download", 0, total) and downloads[-1] == PullProgress(
        "download", total, total
    )
    assert [r.stage for r in reports][-3:] == ["convert", "install", "install"]
    assert [m for m, *_ in hub.requests if m == "GET"] == ["GET", "GET"]
    # the installed bundle is exactly what the llama2.c importer makes of the same files
    files = hub.files[REPO]
    (tmp_path / "m.bin").write_bytes(files["synth/synth.bin"])
    (tmp_path / "t.bin").write_bytes(files["synth/tok.bin"])
    direct = load_bundle(import_llama2c(tmp_path / "m.bin", tmp_path / "t.bin", tmp_path / "direct"))
    pulled = load_bundle(result.path)
    for (k, a), (_, b) in zip(
        direct.model.state_dict().items(), pulled.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)
    assert pulled.tokenizer.encode("the cat and the hat") == direct.tokenizer.encode("the cat and the hat")
    origin = pulled.metadata["pulled_from"]
    assert (origin["repo"], origin["commit"], origin["endpoint"]) == (REPO, COMMIT, hub.url)
    assert pulled.metadata["created_by"] == "helium models pull"
    assert pulled.metadata["sampling"] == {"temperature": 1.0, "top_p": 0.9, "repetition_penalty": 1.0}  # llama2.c's
    from engine.generation.sampling import model_defaults, settle

    params = settle(model_defaults(pulled.metadata), top_p=0.5)  # what `tell` runs: the user's value wins
    assert (params.temperature, params.top_p, params.repetition_penalty) == (1.0, 0.5, 1.0)
    # again: nothing downloaded, nothing changed
    before = len(hub.requests)
    again = pull("synth", progress=reports.append)
    assert not again.pulled and again.path == result.path and len(hub.requests) == before
    no_leftovers(helium_home, hub_cache)


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_of_the_users_at_the_target_is_refused_before_downloading(synth, helium_home, force):
    hub, _, _ = synth
    target = helium_home / "models" / "synth"
    (target / "sub").mkdir(parents=True)
    (target / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["models", "pull", "synth", *(["--force"] if force else [])])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.output
    assert "notes.txt, sub/" in res.stderr and "--force replaces only a Helium model bundle" in res.stderr
    assert not [path for _, path, _ in hub.gets() if "/resolve/" in path]  # nothing downloaded
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt", "sub"]


def test_a_models_dir_with_control_characters_is_refused_before_downloading(synth, monkeypatch, tmp_path):
    hub, _, _ = synth
    monkeypatch.setenv("HELIUM_HOME", str(tmp_path / "home\x1b]0;TITLE\x07"))
    res = runner.invoke(app, ["models", "pull", "synth"])
    assert res.exit_code == 2 and "holds control characters" in res.stderr and res.stderr.count("\n") == 1
    assert "\x1b" not in res.output and "\x07" not in res.output
    assert not [path for _, path, _ in hub.gets() if "/resolve/" in path]


def test_pull_with_the_shipped_llama2_tokenizer(synth, helium_home):
    hub, _, big = synth
    result = pull(big)
    gets = [path for m, path, _ in hub.requests if m == "GET"]
    assert gets == [f"/{REPO}/resolve/{COMMIT}/synth32k.bin"]  # pinned to the commit the HEAD named
    bundle = load_bundle(result.path)
    assert bundle.config.vocab_size == 32000 and bundle.tokenizer.encode("Once upon a time")[1:] == [
        9038,
        2501,
        263,
        931,
    ]
    assert bundle.metadata["source_files"]["tokenizer"]["name"] == "tokenizer.json"


def test_cli_pull_list_force_and_tell(synth, helium_home, one_thread):
    hub, _, _ = synth
    res = runner.invoke(app, ["models", "pull", "--list"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.stdout.splitlines() if "stories110M" in line)
    assert "109.5M" in row and "438.4 MB" in row and " no " in row
    res = runner.invoke(app, ["models", "pull", "synth"])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("pulled synth: ") and "--model synth" in res.stdout
    assert "bits/byte on the reference text" in res.stdout  # it arrived scored
    listed = next(line for line in runner.invoke(app, ["models", "list"]).stdout.splitlines() if "synth" in line)
    assert "–" not in listed  # models list shows its number without --score
    res = runner.invoke(app, ["models", "pull", "--list"])
    assert " yes " in next(line for line in res.stdout.splitlines() if "synth " in line)
    res = runner.invoke(app, ["models", "pull", "synth"])
    assert res.exit_code == 0 and "already installed" in res.stdout
    gets = len(hub.gets())
    res = runner.invoke(app, ["models", "pull", "synth", "--force"])  # files come from the cache
    assert res.exit_code == 0 and res.stdout.startswith("pulled synth")
    assert len(hub.gets()) == gets
    res = runner.invoke(app, ["tell", "the", "--model", "synth", "--temperature", "0", "--max-tokens", "5"])
    assert res.exit_code == 0 and res.stdout.startswith("the")
    for args, message in [
        (["nope"], "'nope' is not in the catalog (choose from stories260K, stories15M"),
        ([], "which model? give a NAME"),
        (["synth", "--list"], "NAME or --list, not both"),
    ]:
        res = runner.invoke(app, ["models", "pull", *args])
        assert res.exit_code == 2 and res.stderr == f"helium: error: {res.stderr[15:]}"
        assert message in res.stderr and res.stderr.count("\n") == 1


def test_a_closed_port_fails_fast_in_one_line_naming_hf_endpoint(helium_home, hub_cache, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    res = runner.invoke(app, ["models", "pull", "stories15M"])
    assert time.monotonic() - t0 < 15
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith(
        f"helium: error: cannot reach the Hugging Face Hub at http://127.0.0.1:{port} (HF_ENDPOINT)"
    )
    assert not (helium_home / "models" / "stories15M").exists()
    no_leftovers(helium_home, hub_cache)


def test_a_hung_server_times_out_in_one_line(helium_home, monkeypatch):
    with socket.socket() as s:  # accepts connections (kernel backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
        t0 = time.monotonic()
        with pytest.raises(PullError, match=r"cannot reach .* \(HF_ENDPOINT\): .*timed out"):
            pull("stories15M")
        assert time.monotonic() - t0 < 5


@pytest.mark.slow
def test_a_server_that_dies_mid_download_leaves_nothing_and_the_retry_completes(
    synth, helium_home, hub_cache
):
    hub, small, _ = synth
    hub.faults = Faults(die_after=len(hub.files[REPO]["synth/synth.bin"]) // 2)
    t0 = time.monotonic()
    with pytest.raises(PullError) as info:
        pull("synth")
    message = str(info.value)
    assert time.monotonic() - t0 < 15 and "\n" not in message
    assert message.startswith(f"download of {REPO}/synth/synth.bin from {hub.url} (HF_ENDPOINT) failed: ")
    assert not (helium_home / "models" / "synth").exists()
    no_leftovers(helium_home, hub_cache)
    hub.start()  # the Hub is back: pulling again completes
    assert pull("synth").pulled
    assert load_bundle(helium_home / "models" / "synth").config.vocab_size == small.vocab_size


def test_a_dropped_connection_is_retried_within_the_same_pull(synth, helium_home, tmp_path):
    hub, _, _ = synth
    data = hub.files[REPO]["synth/synth.bin"]
    hub.faults = Faults(drop_after=len(data) // 3)
    assert pull("synth").pulled
    # the second GET resumes where the dropped one stopped
    ranges = [r for _, path, r in hub.gets() if path.endswith("synth.bin")]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1] == f"bytes={len(data) // 3}-"
    (tmp_path / "m.bin").write_bytes(data)
    (tmp_path / "t.bin").write_bytes(hub.files[REPO]["synth/tok.bin"])
    direct = load_bundle(import_llama2c(tmp_path / "m.bin", tmp_path / "t.bin", tmp_path / "direct"))
    pulled = load_bundle(helium_home / "models" / "synth")
    torch.testing.assert_close(
        pulled.model.tok_embeddings.weight, direct.model.tok_embeddings.weight, rtol=0, atol=0
    )


def test_corrupt_bytes_fail_the_sha256_check_and_are_not_kept(synth, helium_home, hub_cache):
    hub, _, _ = synth
    hub.faults = Faults(corrupt=True)
    with pytest.raises(PullError, match=r"synth\.bin from .* \(HF_ENDPOINT\) is corrupt \(sha256"):
        pull("synth")
    assert not (helium_home / "models" / "synth").exists()
    assert not [p for p in hub_cache.rglob("*") if p.is_file() and p.stat().st_size > 10_000]
    assert pull("synth").pulled  # downloaded again, intact


def test_offline_pulls_from_the_cache_or_says_why_not(synth, helium_home, monkeypatch):
    hub, _, _ = synth
    assert pull("synth").pulled
    hub.stop()
    assert pull("synth", force=True).pulled  # Hub unreachable, files cached: converted again from the cache
    with pytest.raises(PullError, match=r"cannot reach .* \(HF_ENDPOINT\)"):
        pull("synth32k")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        PullError, match="HF_HUB_OFFLINE is set and synth32k is not in the Hugging Face cache"
    ):
        pull("synth32k")


def test_missing_files_and_non_hub_servers_are_one_line_errors(synth, monkeypatch):
    hub, small, _ = synth
    del hub.files[REPO]["synth/tok.bin"]
    with pytest.raises(PullError, match=r"\(HF_ENDPOINT\) answered 404 for test/tinyllamas/synth/tok\.bin"):
        pull(small)
    monkeypatch.setenv("HF_ENDPOINT", "not-a-url")
    with pytest.raises(PullError, match=r"not-a-url \(HF_ENDPOINT\)"):
        pull(small)


def test_cancelling_stops_the_download(synth, helium_home, hub_cache):
    with pytest.raises(PullCancelled):
        pull("synth", cancelled=lambda: True)
    assert not (helium_home / "models" / "synth").exists()
    no_leftovers(helium_home, hub_cache)


# ---------------------------------------------------------------------------------------------------------
# stories260K from ../shared, served as karpathy/tinyllamas: the story equals llama2.c's run.c output


@NO_PEER
@pytest.mark.slow
def test_pull_stories260k_tells_llama2c_golden_story(helium_home, monkeypatch, one_thread):
    files = {
        "stories260K/stories260K.bin": (LLAMA2C / "stories260K.bin").read_bytes(),
        "stories260K/tok512.bin": (LLAMA2C / "tok512.bin").read_bytes(),
    }
    hub = FakeHub({"karpathy/tinyllamas": files})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        res = runner.invoke(app, ["models", "pull", "stories260K"])
    finally:
        hub.stop()
    assert res.exit_code == 0, res.output
    entry = CATALOG["stories260K"]
    assert entry.checkpoint_bytes == len(files[entry.weights]) and entry.tokenizer_bytes == len(
        files[entry.tokenizer]
    )
    golden = (LLAMA2C / "stories260K_greedy_200.txt").read_text(encoding="utf-8")
    res = runner.invoke(app, ["tell", "", "--model", "stories260K", *GREEDY, "--max-tokens", "200"])
    assert res.exit_code == 0, res.output
    assert res.stdout == golden + "\n"
    assert struct.unpack("<7i", files[entry.weights][:28])[:5] == (64, 172, 5, 8, 4)


def test_bench_decode_takes_a_catalog_shape(one_thread):
    args = ["bench", "decode", "--preset", "stories260K", "--device", "cpu", "--dtype", "float32"]
    res = runner.invoke(app, [*args, "--prompt-tokens", "8", "--new-tokens", "8", "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["preset"] == "stories260K" and report["params"] == CATALOG["stories260K"].params
    res = runner.invoke(app, ["bench", "decode", "--preset", "stories9M"])
    assert res.exit_code == 2 and "choose from nano" in res.stderr and "stories110M" in res.stderr


def as_a_shell_starts_it() -> None:
    """In the child before exec: Ctrl-C delivered and acted on, as an interactive shell starts a command (in CI's
    full run the pull went on after its SIGINT, a Range request and all: the child did not act on it)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def test_ctrl_c_stops_a_cli_pull_cleanly(synth_files, helium_home, hub_cache):
    """A real `helium models pull` process, interrupted mid-download: one line, exit 130, nothing left behind."""
    import os
    import signal

    entry = CATALOG["stories260K"]  # the files have the catalog's sizes (else the pull refuses them at once)
    data = {
        entry.weights: synth_files["synth/synth.bin"].ljust(entry.checkpoint_bytes, b"\0"),
        entry.tokenizer: synth_files["synth/tok.bin"].ljust(entry.tokenizer_bytes, b"\0"),
    }
    hub = FakeHub({"karpathy/tinyllamas": data}, faults=Faults(stall_s=30))
    # the process a user starts: only what it needs from this one, whose environment earlier tests (and the
    # libraries they load) may have changed (in CI's full run the pull once went on after its Ctrl-C)
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "HELIUM_HOME", "HELIUM_CACHE", "HF_HOME", "HF_HUB_DISABLE_TELEMETRY")
    env = {key: os.environ[key] for key in keep if key in os.environ} | {"HF_ENDPOINT": hub.url}
    signals = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Sig")]
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "helium_tui.cli", "models", "pull", "stories260K"],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=as_a_shell_starts_it,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        # the download has started (and stalls): a GET of a file, not huggingface_hub's own early GET of
        # /api/agent-harnesses (its user-agent telemetry), which under load came long before the download
        while not any("/resolve/" in path for _, path, _ in hub.gets()) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        hub.stop()
    assert proc.returncode == 130, (err, hub.requests, signals)
    assert err.splitlines()[-1] == "helium: error: interrupted; nothing was installed"
    assert not (helium_home / "models" / "stories260K").exists()
    no_leftovers(helium_home, hub_cache)
