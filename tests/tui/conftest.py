"""Fixtures for the studio tests: a second tiny bundle, a bundle without a start token, isolated model dirs.

Every TUI test sees an empty HELIUM_HOME and no shipped models unless it installs some.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.bundle import save_bundle
from engine.model import TinySLM
from engine.tokenizer import TextTokenizer
from helium_tui.app import HeliumApp
from tests.conftest import TINY


@pytest.fixture(autouse=True)
def isolated_models(helium_home, tmp_path, monkeypatch) -> Path:
    """No shipped models and an empty user dir, so listings and the default model are deterministic."""
    empty = tmp_path / "no-shipped-assets"
    empty.mkdir()
    monkeypatch.setattr("engine.registry.assets_dir", lambda: empty)
    return helium_home


@pytest.fixture
def installed_second(helium_home, tiny_tokenizer) -> Path:
    """A second (different) tiny bundle installed by name as 'tiny-two'."""
    torch.manual_seed(1)
    model = TinySLM(TINY.with_(vocab_size=tiny_tokenizer.vocab_size, d_model=32, n_head=2, n_kv_head=1)).eval()
    return save_bundle(helium_home / "models" / "tiny-two", model, tiny_tokenizer, {"data": "synthetic"})


@pytest.fixture
def no_bos_bundle(tmp_path, tiny_model, tiny_tokenizer) -> Path:
    """A bundle whose tokenizer has no start token: an empty prompt cannot be continued."""
    tok = TextTokenizer(tiny_tokenizer.hf, None, tiny_tokenizer.eos_id)
    return save_bundle(tmp_path / "no-bos", tiny_model, tok, {"data": "synthetic"})


def make_app(model: Path | str | None, **kwargs) -> HeliumApp:
    """The studio on CPU in float32 (exact, deterministic numbers)."""
    return HeliumApp(model=str(model) if model else None, device="cpu", dtype="float32", **kwargs)


async def loaded(app: HeliumApp, pilot) -> None:
    """Wait until a model is loaded (or the no-model screen is up) and nothing else is in flight."""
    from helium_tui.screens.no_model import NoModelScreen

    while app.session is None and not isinstance(app.screen, NoModelScreen):
        await pilot.pause(0.01)
    await app.workers.wait_for_complete()
    await pilot.pause()
