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
