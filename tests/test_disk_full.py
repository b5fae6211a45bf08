"""A disk that fills up (simulated with a file-size limit): one clear line, nothing half-written, nothing lost."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LLAMA2C, needs_shared, tiny_train_config

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


@pytest.mark.slow
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


def says_which_file_and_room(err: str, path: Path, outcome: str = "nothing was left behind") -> None:
    """The one line names the file as it would have been, why, the free bytes there and what became of it."""
    assert f"cannot write {path}:" in err, err
    assert "file-size limit of" in err and "bytes free on that filesystem" in err and err.endswith(outcome), err
    assert "os error" not in err and "requested and" not in err and "serializing" not in err, err


def test_installing_on_a_full_disk_leaves_nothing_behind(tiny_bundle, tmp_path):
    home = tmp_path / "home"
    size = (tiny_bundle / "model.safetensors").stat().st_size
    args = ["helium_tui.cli", "models", "install", str(tiny_bundle), "--name", "m", "--dtype", "bfloat16"]
    err = one_error_line(run_limited(args, size // 4, home))
    says_which_file_and_room(err, home / "models" / "m" / "model.safetensors")
    assert leftovers(home) == [] and not (home / "models" / "m").exists()


@needs_shared(LLAMA2C / "stories260K.bin", covers="importing a real llama2.c file onto a full disk")
@pytest.mark.slow
def test_importing_on_a_full_disk_leaves_nothing_behind(tmp_path):
    home = tmp_path / "home"
    args = ["helium_tui.cli", "import", "llama2c", str(LLAMA2C / "stories260K.bin"), "--tokenizer",
            str(LLAMA2C / "tok512.bin"), "--name", "s260"]  # fmt: skip
    err = one_error_line(run_limited(args, 100_000, home))
    says_which_file_and_room(err, home / "models" / "s260" / "model.safetensors")
    assert leftovers(home) == [] and not (home / "models" / "s260").exists()


@pytest.mark.slow
def test_exporting_on_a_full_disk_names_the_file_and_leaves_nothing(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    limit = (tiny_bundle / "model.safetensors").stat().st_size // 4
    args = ["helium_tui.cli", "export", "hf", str(tiny_bundle), "--out", str(out / "hf")]
    says_which_file_and_room(one_error_line(run_limited(args, limit, tmp_path / "home")), out / "hf" / "model.safetensors")
    pytest.importorskip("gguf")
    args = ["helium_tui.cli", "export", "gguf", str(tiny_bundle), "--out", str(out / "m.gguf"), "--dtype", "f32"]
    err = one_error_line(run_limited(args, limit, tmp_path / "home"))  # gguf writes through numpy: a short write
    says_which_file_and_room(err, out / "m.gguf", "no partial file was left")
    assert list(out.iterdir()) == []


def test_a_full_disk_is_one_error_naming_the_file_and_the_temp_file_goes(tmp_path):
    import errno

    from engine.files import WriteError, atomic_directory, atomic_write

    def fills_up(path: Path) -> None:
        path.write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "kept.bin").write_bytes(b"old")
    with pytest.raises(WriteError, match=r"kept.bin: no space left on the device \(.* bytes free .*\); the old file is as it was"):
        atomic_write(tmp_path / "kept.bin", fills_up)
    assert (tmp_path / "kept.bin").read_bytes() == b"old"
    with pytest.raises(WriteError, match=r"cannot write .*/new/sub/w.bin: no space left .*; nothing was left behind"):
        atomic_directory(tmp_path / "new" / "sub", lambda d: atomic_write(d / "w.bin", fills_up))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.bin"]  # the folders it made went too


@pytest.mark.slow
def test_preparing_data_on_a_full_disk_says_so(tmp_path):
    stories = tmp_path / "stories.txt"
    stories.write_text("".join(f"Story {i}: Lily had a red ball and a cat.\n<|endoftext|>\n" for i in range(3000)))
    args = ["helium_tui.cli", "data", "prepare", str(stories), "--out", str(tmp_path / "data"), "--vocab-size", "300"]
    err = one_error_line(run_limited(args, 20_000, tmp_path / "home"))
    assert "cannot write" in err and "train_000.bin" in err and "file-size limit of 20,000 bytes" in err, err
    assert leftovers(tmp_path / "data") == [] and not (tmp_path / "data" / "manifest.json").exists()
