"""Where Helium writes: --force replaces only what Helium wrote, a failed import installs nothing, names and
paths with control characters are refused, and every file written for others to read follows the umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.bundles.bundle import save_bundle
from engine.bundles.install import install_bundle
from engine.targets import check_target, kind_of
from helium_tui.cli import app
from tests.export_helpers import one_error

runner = CliRunner()
ESC_NAMES = ("e\x1b]0;T\x07", "m\x1b[31mred", "n\x1b[2Jx")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models on one intra-op thread."""


def user_folder(path: Path) -> Path:
    """A folder of the user's own files, as in the issue: notes.txt and sub/."""
    path.mkdir()
    (path / "notes.txt").write_text("notes\n")
    (path / "sub").mkdir()
    (path / "sub" / "more.txt").write_text("more\n")
    return path


def intact(path: Path) -> bool:
    return (path / "notes.txt").read_text() == "notes\n" and (path / "sub" / "more.txt").read_text() == "more\n"


def temp_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".old", ".installing")))


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------------------------------------------------
# --force replaces only what Helium wrote


def test_export_hf_force_never_deletes_a_folder_of_the_users_files(tiny_bundle, tmp_path, helium_home):
    full = user_folder(tmp_path / "full")
    msg = one_error(invoke("export", "hf", tiny_bundle, "--out", full))
    assert "notes.txt, sub/" in msg
    msg = one_error(invoke("export", "hf", tiny_bundle, "--out", full, "--force"))
    assert "--force replaces only" in msg and "notes.txt, sub/" in msg
    assert intact(full) and temp_names(tmp_path) == []


def test_force_refuses_a_helium_output_the_user_added_files_to(tiny_bundle, tmp_path, helium_home):
    out = tmp_path / "hf"
    assert invoke("export", "hf", tiny_bundle, "--out", out).exit_code == 0
    assert kind_of(out) == "hf" and kind_of(tiny_bundle) == "bundle"
    (out / "notes.txt").write_text("mine")
    assert "notes.txt" in one_error(invoke("export", "hf", tiny_bundle, "--out", out, "--force"))
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert invoke("export", "hf", tiny_bundle, "--out", out, "--force").exit_code == 0  # an earlier export: yes
    copy = tmp_path / "copy"
    assert invoke("import", "hf", out, "--out", copy).exit_code == 0
    assert invoke("export", "hf", tiny_bundle, "--out", copy, "--force").exit_code == 0  # a bundle: yes


def test_a_link_is_never_an_output(tiny_bundle, tmp_path, helium_home):
    real = user_folder(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    for args in (("export", "hf", tiny_bundle), ("import", "hf", tiny_bundle)):
        msg = one_error(invoke(*args, "--out", tmp_path / "link", "--force"))
        assert "is a symbolic link" in msg and "not a directory" not in msg
    (tmp_path / "file.gguf").write_text("mine")
    (tmp_path / "link.gguf").symlink_to(tmp_path / "file.gguf")
    assert "is a symbolic link" in one_error(invoke("export", "gguf", tiny_bundle, "--out", tmp_path / "link.gguf", "--force"))
    assert intact(real) and (tmp_path / "file.gguf").read_text() == "mine"


def test_export_gguf_force_replaces_only_a_gguf_file(tiny_bundle, tmp_path, helium_home):
    pytest.importorskip("gguf")
    mine = tmp_path / "m.gguf"
    mine.write_text("my notes, not a model")
    msg = one_error(invoke("export", "gguf", tiny_bundle, "--out", mine, "--force"))
    assert "--force replaces only a GGUF file" in msg and mine.read_text() == "my notes, not a model"
    gguf = tmp_path / "real.gguf"
    assert invoke("export", "gguf", tiny_bundle, "--out", gguf, "--dtype", "f32").exit_code == 0
    assert kind_of(gguf) == "gguf"
    assert invoke("export", "gguf", tiny_bundle, "--out", gguf, "--dtype", "q8_0", "--force").exit_code == 0
    assert temp_names(tmp_path) == []


def test_import_and_install_force_never_replace_a_folder_helium_did_not_write(tiny_bundle, tmp_path, helium_home):
    papers = user_folder(tmp_path / "papers")
    assert "--force replaces only" in one_error(invoke("import", "hf", tiny_bundle, "--out", papers, "--force"))
    models = helium_home / "models"
    models.mkdir(parents=True)
    theirs = user_folder(models / "m")
    for args in (("models", "install", tiny_bundle), ("import", "hf", tiny_bundle)):
        assert "--force replaces only" in one_error(invoke(*args, "--name", "m", "--force"))
    with pytest.raises(ValueError, match="--force replaces only"):
        install_bundle(tiny_bundle, "m", force=True)  # `models pull --force` installs through here
    assert intact(papers) and intact(theirs) and temp_names(tmp_path) == []


def test_data_prepare_never_writes_among_the_users_files(tmp_path):
    stories = tmp_path / "stories.txt"
    stories.write_text("".join(f"Story {i}: Lily had a red ball.\n<|endoftext|>\n" for i in range(50)))
    full = user_folder(tmp_path / "full")
    msg = one_error(invoke("data", "prepare", stories, "--out", full, "--vocab-size", "300"))
    assert "notes.txt, sub/" in msg and sorted(p.name for p in full.iterdir()) == ["notes.txt", "sub"]
    data = tmp_path / "data"
    assert invoke("data", "prepare", stories, "--out", data, "--vocab-size", "300").exit_code == 0
    assert kind_of(data) == "data"
    assert invoke("data", "prepare", stories, "--out", data, "--vocab-size", "301").exit_code == 0  # ours: rebuilt


def test_data_download_out_is_checked_before_any_request(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a request would say "cannot reach"
    real = user_folder(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "file").write_text("mine\n")
    for out, words in [(tmp_path / "link", "symbolic link"), (tmp_path / "e\x1b]0;T\x07", "control characters"),
                       (tmp_path / "file", "not a directory")]:  # fmt: skip
        msg = one_error(invoke("data", "download", "--out", out))
        assert words in msg and "\x1b" not in msg, msg
    assert intact(real) and sorted(p.name for p in real.iterdir()) == ["notes.txt", "sub"]
    assert (tmp_path / "file").read_text() == "mine\n"
    assert "cannot reach" in one_error(invoke("data", "download", "--out", real))  # other files may be there


def test_bench_gpu_out_never_writes_through_a_link_or_among_the_users_files(tmp_path):
    real = user_folder(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "log.txt").symlink_to(real / "notes.txt")  # a link where the check writes its log
    for out, words in [(tmp_path / "link", "symbolic link"), (tmp_path / "e\x1b]0;T\x07", "control characters"),
                       (real, "notes.txt, sub/"), (ours, "log.txt")]:  # fmt: skip
        msg = one_error(invoke("bench", "gpu", "--dry-run", "--out", out))
        assert words in msg and "\x1b" not in msg, msg
    assert intact(real) and sorted(p.name for p in real.iterdir()) == ["notes.txt", "sub"]
    assert not (tmp_path / "e\x1b]0;T\x07").exists()


def test_check_target_in_the_models_dir_replaces_links_only_with_force(tiny_bundle, tmp_path):
    (tmp_path / "link").symlink_to(tiny_bundle)
    with pytest.raises(ValueError, match="use --force"):
        check_target(tmp_path / "link", False, ("bundle",), links=True)
    assert check_target(tmp_path / "link", True, ("bundle",), links=True) is True


# ---------------------------------------------------------------------------------------------------------
# A failed import installs nothing


def broken_hf_dir(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A transformers directory whose config names an end token the vocabulary lacks (as in the issue)."""
    d = tmp_path / "D"
    assert invoke("export", "hf", tiny_bundle, "--out", d).exit_code == 0
    cfg = json.loads((d / "config.json").read_text())
    cfg["eos_token_id"] = [99999]
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_a_failed_import_installs_nothing_and_a_retry_is_not_already_installed(tiny_bundle, tmp_path, helium_home):
    d = broken_hf_dir(tiny_bundle, tmp_path)
    for _ in range(2):  # the retry fails the same way, not "already installed"
        msg = one_error(invoke("import", "hf", d, "--name", "z"))
        assert "already installed" not in msg
        assert not (helium_home / "models" / "z").exists()
    assert not (tmp_path / "out").exists()
    one_error(invoke("import", "hf", d, "--out", tmp_path / "out"))
    assert not (tmp_path / "out").exists() and temp_names(tmp_path) == [] and temp_names(helium_home) == []


def test_every_importer_validates_in_its_temp_dir_before_the_rename(tiny_bundle, tmp_path, helium_home, monkeypatch):
    """A converter that writes a bundle which would not load (truncated weights): nothing appears."""
    import engine.formats.llama2c

    def truncated(model_bin, tokenizer_bin, out_dir, force=False):
        out_dir.mkdir()
        for f in tiny_bundle.iterdir():
            (out_dir / f.name).write_bytes(f.read_bytes())
        weights = out_dir / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        return out_dir

    monkeypatch.setattr(engine.formats.llama2c, "import_llama2c", truncated)
    args = ("import", "llama2c", tmp_path / "x.bin", "--tokenizer", tmp_path / "t.bin")
    assert "model.safetensors" in one_error(invoke(*args, "--name", "t"))
    assert "model.safetensors" in one_error(invoke(*args, "--out", tmp_path / "t"))
    assert not (helium_home / "models" / "t").exists() and not (tmp_path / "t").exists()
    assert temp_names(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------
# Control characters


@pytest.mark.parametrize("bad", ESC_NAMES)
def test_names_and_paths_with_control_characters_are_refused(tiny_bundle, tmp_path, helium_home, bad):
    cases = [
        ("export", "gguf", tiny_bundle, "--out", tmp_path / f"{bad}.gguf"),
        ("export", "hf", tiny_bundle, "--out", tmp_path / bad / "x"),
        ("import", "hf", tiny_bundle, "--out", tmp_path / bad / "x"),
        ("models", "install", tiny_bundle, "--name", bad),
        ("import", "hf", tiny_bundle, "--name", bad),
        ("train", "--out", tmp_path / bad),
        ("data", "prepare", tiny_bundle / "config.json", "--out", tmp_path / bad),
    ]
    for args in cases:
        r = invoke(*args)
        msg = one_error(r)
        assert "control characters" in msg, msg
        assert not any(c in r.output for c in "\x1b\x07"), repr(r.output)
    assert not any("\x1b" in p.name for p in tmp_path.rglob("*"))


def test_success_output_and_models_list_show_names_safely(tiny_model, tiny_tokenizer, tmp_path, helium_home):
    pytest.importorskip("gguf")
    odd = save_bundle(tmp_path / "b\x1b]0;T\x07", tiny_model, tiny_tokenizer, {})
    r = invoke("export", "gguf", odd, "--out", tmp_path / "ok.gguf")
    assert r.exit_code == 0 and "\x1b" not in r.output and "\x07" not in r.output and "ok.gguf" in r.output
    models = helium_home / "models"
    models.mkdir(parents=True)
    for name in ("a\x1b]0;TITLE\x07", "b[red]markup", "zz-last"):
        save_bundle(models / name, tiny_model, tiny_tokenizer, {})
    r = runner.invoke(app, ["models", "list"], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and "\x1b" not in r.output and "\x07" not in r.output
    assert "zz-last" in r.output and "[red]markup" in r.output  # the rest of the table, markup as text


# ---------------------------------------------------------------------------------------------------------
# Permissions: what Helium writes for others to read follows the umask (safetensors alone makes 0600)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> set[tuple[str, int]]:
    found = {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in root.rglob("*")}
    if root.is_dir():
        found.add(("dir", stat.S_IMODE(root.stat().st_mode)))
    return found


def test_every_output_kind_gets_the_umask_permissions(tiny_bundle, tmp_path, helium_home, umask_022):
    os.chmod(tiny_bundle / "model.safetensors", 0o600)  # a bundle an older Helium wrote: copies get 0644
    stories = tmp_path / "stories.txt"
    stories.write_text("".join(f"Story {i}: Tom saw a big cat.\n<|endoftext|>\n" for i in range(50)))
    commands = {
        "hf": ("export", "hf", tiny_bundle, "--out", tmp_path / "hf"),
        "import": ("import", "hf", tmp_path / "hf", "--out", tmp_path / "imported"),
        "install": ("models", "install", tiny_bundle, "--name", "copy"),
        "install-bf16": ("models", "install", tiny_bundle, "--name", "half", "--dtype", "bfloat16"),
        "data": ("data", "prepare", stories, "--out", tmp_path / "data", "--vocab-size", "300"),
    }
    try:
        import gguf  # noqa: F401

        commands["gguf"] = ("export", "gguf", tiny_bundle, "--out", tmp_path / "m.gguf")
    except ImportError:
        pass
    for what, args in commands.items():
        r = invoke(*args)
        assert r.exit_code == 0, (what, r.output)
    for root in (tmp_path / "hf", tmp_path / "imported", helium_home / "models" / "copy",
                 helium_home / "models" / "half", tmp_path / "data", tmp_path / "m.gguf"):  # fmt: skip
        if root.exists():
            assert modes(root) <= {("file", 0o644), ("dir", 0o755)}, (root, modes(root))
