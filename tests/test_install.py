"""engine.bundles.install: one way to install a bundle by name (copy, dtype, link), whole or not at all."""

from __future__ import annotations

import json
import os
import stat

import pytest

from engine.bundles.install import install_bundle, install_run_bundle
from engine.bundles.registry import list_models, resolve_model
from engine.errors import BundleError


def test_a_plain_copy_keeps_the_files_byte_for_byte_and_adds_its_score(tiny_bundle, helium_home):
    (tiny_bundle / "MODEL_CARD.md").write_text("# card\n")
    (tiny_bundle / "notes.bin").write_bytes(b"junk")
    name, path = install_bundle(tiny_bundle, "copy")
    assert name == "copy" and path == helium_home / "models" / "copy" and not path.is_symlink()
    for f in ("config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md"):
        assert (path / f).read_bytes() == (tiny_bundle / f).read_bytes(), f
    meta = json.loads((path / "metadata.json").read_text())  # the source's, and its score on the reference text
    assert meta.pop("reference_eval")["bits_per_byte"] > 0 and meta == json.loads((tiny_bundle / "metadata.json").read_text())
    assert not (path / "notes.bin").exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~_umask()  # not mkdtemp's 0700
    assert resolve_model("copy") == path


def test_force_replaces_a_linked_install_without_touching_its_target(tiny_bundle, helium_home):
    install_bundle(tiny_bundle, "m", link=True)
    assert (helium_home / "models" / "m").is_symlink()
    with pytest.raises(ValueError, match="already installed.*--force"):
        install_bundle(tiny_bundle, "m")
    _, path = install_bundle(tiny_bundle, "m", force=True)
    assert not path.is_symlink() and tiny_bundle.joinpath("model.safetensors").is_file()


def test_a_broken_source_leaves_nothing_behind(tiny_bundle, helium_home):
    (tiny_bundle / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(BundleError, match="model.safetensors"):
        install_bundle(tiny_bundle, "broken")
    assert sorted(os.listdir(helium_home / "models")) == []


def test_bad_names_and_dtypes_are_refused(tiny_bundle, helium_home):
    for bad in ("", ".hidden", "a/b", ".."):
        with pytest.raises(ValueError, match="not a valid model name"):
            install_bundle(tiny_bundle, bad)
    with pytest.raises(ValueError, match="unknown dtype"):
        install_bundle(tiny_bundle, "x", dtype="int2")


def test_run_bundles_link_under_unique_names(tmp_path, tiny_bundle, helium_home):
    run_dir = tmp_path / "my-run"
    run_dir.mkdir()
    assert install_run_bundle(run_dir, tiny_bundle) == "my-run"
    assert install_run_bundle(run_dir, tiny_bundle) == "my-run"  # the same bundle again: a no-op
    other = tmp_path / "other"
    other.mkdir()
    install_bundle(tiny_bundle, "elsewhere")
    (other / "bundle").symlink_to(helium_home / "models" / "elsewhere")
    assert install_run_bundle(other, other / "bundle", name="my-run") == "my-run-2"
    assert {"my-run", "my-run-2", "elsewhere"} <= {m.name for m in list_models()}
    with pytest.raises(ValueError, match="bundle is missing"):
        install_run_bundle(run_dir, "nope")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
