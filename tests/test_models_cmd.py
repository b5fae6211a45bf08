"""`helium models install/list`: install by name, bf16 storage halves the size, clear errors."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from engine.bundles.bundle import load_bundle
from helium_tui.cli import app

runner = CliRunner()


def test_install_bfloat16_then_tell_by_name(tiny_bundle, helium_home, one_thread):
    (tiny_bundle / "MODEL_CARD.md").write_text("# card\n")
    r = runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", "small-one", "--dtype", "bfloat16"])
    assert r.exit_code == 0, r.output
    installed = helium_home / "models" / "small-one"
    assert (installed / "MODEL_CARD.md").read_text() == "# card\n"
    size = (installed / "model.safetensors").stat().st_size
    assert size < 0.6 * (tiny_bundle / "model.safetensors").stat().st_size
    a, b = load_bundle(tiny_bundle), load_bundle(installed)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        torch.testing.assert_close(vb, va.to(torch.bfloat16).float(), rtol=0, atol=0, msg=k)
    assert "small-one" in runner.invoke(app, ["models", "list"]).output
    r = runner.invoke(app, ["tell", "Tom", "--model", "small-one", "--max-tokens", "3", "--json"])
    assert r.exit_code == 0 and '"model": "small-one"' in r.output


def test_install_refuses_to_overwrite_and_bad_sources(tiny_bundle, helium_home, tmp_path):
    assert runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", "m"]).exit_code == 0
    r = runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", "m"])
    assert r.exit_code == 2 and "already installed" in r.stderr
    assert runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", "m", "--force"]).exit_code == 0
    r = runner.invoke(app, ["models", "install", str(tmp_path / "nope"), "--name", "x"])
    assert r.exit_code == 2 and "nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (helium_home / "models" / "x").exists()


def test_list_cuts_long_names_apart_and_compares_models_on_one_reference_text(
    tiny_bundle, helium_home, one_thread, monkeypatch
):
    # a tuned model and its "-2" twin: cut with '…' in the middle, their ends still tell them apart
    for name in ("helium-default-tuned-2026-12-07", "helium-default-tuned-2026-12-07-2"):
        assert runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", name]).exit_code == 0
    monkeypatch.setenv("COLUMNS", "80")
    r = runner.invoke(app, ["models", "list", "--score"])
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.output.splitlines()) <= 80
    rows = [line for line in r.output.splitlines() if line.startswith("│ helium-default…")]
    assert len(rows) == 2 and all("…" in row for row in rows), r.output
    assert rows[0].split("│")[1].strip() != rows[1].split("│")[1].strip()  # never two names that look alike
    # bits per byte on the same reference text: the shipped model's stored number, the others measured now
    from engine.bundles.reference import REFERENCE_NAME, reference_path, stored_score
    from engine.bundles.registry import list_models

    assert f"on {REFERENCE_NAME}" in r.output and reference_path().stat().st_size > 4000
    scores = {m.name: stored_score(m.metadata) for m in list_models()}
    assert scores["helium-default"] is not None and scores["helium-default-tuned-2026-12-07"] is not None
    assert scores["helium-default-tuned-2026-12-07"] == scores["helium-default-tuned-2026-12-07-2"]  # same weights
    assert scores["helium-default-tuned-2026-12-07"] > 2 * scores["helium-default"]  # an untrained tiny model
    assert f"{scores['helium-default']:.4f}" in r.output and "–" not in r.output.split("┩")[1]


def test_a_narrow_terminal_never_cuts_a_listed_name_again(tiny_bundle, helium_home, monkeypatch):
    from helium_tui.commands.models import NAME_WIDTH
    from helium_tui.names import cut_apart

    names = ("helium-default-tuned-2026-12-07", "helium-default-tuned-2026-12-07-2")
    for name in names:
        assert runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", name]).exit_code == 0
    monkeypatch.setenv("COLUMNS", "60")  # Rich would shrink the name column and cut its end ('-2') with its own '…'
    r = runner.invoke(app, ["models", "list"])
    assert r.exit_code == 0, r.output
    for shown in cut_apart(names, NAME_WIDTH).values():
        assert f"│ {shown} " in r.output, r.output


def test_install_takes_an_installed_name_like_every_model_option(tiny_bundle, helium_home, tmp_path, monkeypatch):
    assert runner.invoke(app, ["models", "install", str(tiny_bundle), "--name", "story-f32"]).exit_code == 0
    monkeypatch.chdir(tmp_path)  # no folder of that name here: the name is looked up as --model looks it up
    r = runner.invoke(app, ["models", "install", "story-f32", "--name", "story-int4", "--dtype", "int4"])
    assert r.exit_code == 0, r.output
    assert load_bundle(helium_home / "models" / "story-int4").metadata.get("quantization") == "int4"
    r = runner.invoke(app, ["models", "install", "no-such-model", "--name", "x"])
    assert r.exit_code == 2 and "no such model bundle" in r.stderr and len(r.stderr.strip().splitlines()) == 1
