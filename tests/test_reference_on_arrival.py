"""A model arrives with its bits per byte on the reference text (engine.bundles.reference.record): `models install`,
every `helium import` and training's bundle, measured in the staged copy, so `models list` needs no --score."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import engine.bundles.reference as reference
from engine.bundles.install import install_bundle
from engine.bundles.reference import METADATA_KEY, measure, stored_score
from helium_tui.cli import app
from helium_tui.commands.importer import run_import

runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models run faster on one thread of a shared box."""


def _meta(path) -> dict:
    return json.loads((path / "metadata.json").read_text())


def _row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"│ {name} "))


def test_an_installed_copy_arrives_scored_and_models_list_shows_it_without_score(tiny_bundle, helium_home):
    r = runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", "mine"])
    assert r.exit_code == 0, r.output
    path = helium_home / "models" / "mine"
    meta = _meta(path)
    assert stored_score(meta) == measure(tiny_bundle)["bits_per_byte"]  # the same number as measuring it now
    assert {k: v for k, v in meta.items() if k != METADATA_KEY} == _meta(tiny_bundle)  # nothing else changed
    assert f"{stored_score(meta):.4f} bits/byte on the reference text" in r.output
    listed = runner.invoke(app, ["models", "list"])  # no --score: the number is already there
    assert listed.exit_code == 0 and f"{stored_score(meta):.4f}" in _row(listed.output, "mine")


def test_another_dtype_is_measured_again_and_a_known_score_is_kept(tiny_bundle, helium_home):
    meta = _meta(tiny_bundle)
    stale = {"text": reference.REFERENCE_NAME, "sha256": reference.reference_digest(), "bits_per_byte": 0.5}
    (tiny_bundle / "metadata.json").write_text(json.dumps(meta | {METADATA_KEY: stale}))
    _, kept = install_bundle(tiny_bundle, "same")
    assert stored_score(_meta(kept)) == 0.5  # the same weights: the source's score travels, not measured twice
    _, int8 = install_bundle(tiny_bundle, "small", dtype="int8")
    assert stored_score(_meta(int8)) == measure(int8)["bits_per_byte"] != 0.5  # other weights, measured anew


def test_a_model_over_the_limit_arrives_unscored_with_a_note(tiny_bundle, helium_home, monkeypatch):
    monkeypatch.setattr(reference, "MEASURE_LIMIT", 1000)
    measured = []
    monkeypatch.setattr(reference, "measure", lambda d: measured.append(d))
    r = runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", "big"])
    assert r.exit_code == 0 and not measured
    assert "not scored on the reference text" in r.output and "over the 0M measured on arrival" in r.output
    assert METADATA_KEY not in _meta(helium_home / "models" / "big")
    assert "–" in _row(runner.invoke(app, ["models", "list"]).output, "big")


def test_a_failed_measurement_installs_nothing(tiny_bundle, helium_home, monkeypatch):
    def broken(_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(reference, "measure", broken)
    with pytest.raises(OSError):
        install_bundle(tiny_bundle, "half")
    assert not (helium_home / "models" / "half").exists()
    assert [p.name for p in (helium_home / "models").iterdir()] == []  # no temporary directory left either


def test_an_import_arrives_scored(tiny_bundle, helium_home, tmp_path, capsys):
    def build(target):
        shutil.copytree(tiny_bundle, target)
        return target

    run_import("tiny.bin", build, tmp_path / "imported", None, False)
    score = stored_score(_meta(tmp_path / "imported"))
    assert score == measure(tiny_bundle)["bits_per_byte"]
    assert f"{score:.4f} bits/byte on the reference text" in capsys.readouterr().out
