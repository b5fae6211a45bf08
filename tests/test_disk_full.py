"""A disk that fills up (simulated with a file-size limit): one clear line, nothing half-written, nothing lost."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LLAMA2C, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]


def run_limited(args: list[str], max_file_bytes: int, home: Path) -> subprocess.CompletedProcess:
    """Run a Python module with every file it writes capped at max_file_bytes (writes past it fail, EFBIG)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write instead of a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    env = {"PATH": "/usr/bin:/bin", "HELIUM_HOME": str(home), "OMP_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}  # a .pyc cut short by the limit would break later imports
    return subprocess.run([sys.executable, "-m", *args], preexec_fn=limit, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)  # fmt: skip


def one_error_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert err.startswith("helium: error:") and len(err.splitlines()) == 1, err
    return err


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".tmp", ".installing", ".old")))


def test_training_on_a_full_disk_fails_cleanly_and_the_dir_takes_the_run_again(prepared_dir, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_train_config(prepared_dir, out, max_steps=10)
    out.mkdir()
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict()))
    r = run_limited(["trainer.train", "--config", str(out / "train_config.json")], 200_000, tmp_path / "home")
    assert "disk is full" in one_error_line(r)
    assert leftovers(out) == [] and not any((out / "checkpoints").glob("*.pt"))
    last = json.loads((out / "events.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "status" and last["status"] == "failed"
    r = run_limited(["trainer.train", "--config", str(out / "train_config.json")], 1 << 40, tmp_path / "home")
    assert r.returncode == 0, r.stderr  # room again: the same command runs to the end
    assert (out / "bundle" / "model.safetensors").is_file()


def test_installing_on_a_full_disk_leaves_nothing_behind(tiny_bundle, tmp_path):
    home = tmp_path / "home"
    size = (tiny_bundle / "model.safetensors").stat().st_size
    args = ["helium_tui.cli", "models", "install", str(tiny_bundle), "--name", "m", "--dtype", "bfloat16"]
    err = one_error_line(run_limited(args, size // 4, home))
    assert "no space left" in err or "too large" in err
    assert leftovers(home) == [] and not (home / "models" / "m").exists()


@pytest.mark.skipif(not (LLAMA2C / "stories260K.bin").is_file(), reason="needs ../shared/peers/llama2c")
def test_importing_on_a_full_disk_leaves_nothing_behind(tmp_path):
    home = tmp_path / "home"
    args = ["helium_tui.cli", "import", "llama2c", str(LLAMA2C / "stories260K.bin"), "--tokenizer",
            str(LLAMA2C / "tok512.bin"), "--name", "s260"]  # fmt: skip
    one_error_line(run_limited(args, 100_000, home))
    assert leftovers(home) == [] and not (home / "models" / "s260").exists()


def test_preparing_data_on_a_full_disk_says_so(tmp_path):
    stories = tmp_path / "stories.txt"
    stories.write_text("".join(f"Story {i}: Lily had a red ball and a cat.\n<|endoftext|>\n" for i in range(3000)))
    args = ["helium_tui.cli", "data", "prepare", str(stories), "--out", str(tmp_path / "data"), "--vocab-size", "300"]
    err = one_error_line(run_limited(args, 20_000, tmp_path / "home"))
    assert "disk is full" in err or "no space left" in err, err
    assert leftovers(tmp_path / "data") == [] and not (tmp_path / "data" / "manifest.json").exists()
