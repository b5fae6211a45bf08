"""Modules that only read paths, JSON or files must not import torch (~1.3 s of start-up for nothing)."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT = [
    "helium_tui.cli",
    "helium_tui.library",
    "engine.bundles.registry",
    "engine.paths",
    "engine.bundles.info",
    "engine.bundles.install",
    "engine.errors",
    "trainer.download",
]


@pytest.mark.parametrize("module", LIGHT)
def test_importing_leaves_torch_unloaded(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", f"importing {module} loads torch"


def test_listing_models_leaves_torch_unloaded(helium_home):
    code = "import sys; from engine.bundles.registry import list_models; list_models(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
