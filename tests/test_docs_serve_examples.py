"""The serving guide's and README's examples, run as written against a real server: every `curl` line of their bash
blocks and every Python block (only the address changes). An example that fails here fails for a reader.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("openai")
pytest.importorskip("ollama")

from engine.bundles.bundle import save_bundle  # noqa: E402
from engine.generation.session import open_session  # noqa: E402
from engine.model.tinyslm import TinySLM  # noqa: E402
from helium_server.app import build_app  # noqa: E402
from helium_server.background import BackgroundServer  # noqa: E402
from helium_server.models import Loader  # noqa: E402
from tests.conftest import TINY  # noqa: E402

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "serve.md"]
ADDRESS = "http://127.0.0.1:11435"
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def curl_commands(block: str) -> list[str]:
    """The block's curl commands, each with its continuation lines (an open quote or a trailing backslash)."""
    commands, current = [], ""
    for line in block.splitlines():
        if not current and not line.startswith("curl "):
            continue
        current += line + "\n"
        if current.count("'") % 2 == 0 and not line.rstrip().endswith("\\"):
            commands.append(current)
            current = ""
    return commands


EXAMPLES = [(p.name, c) for p in DOCS for b in blocks(p, "bash") for c in curl_commands(b)]
PYTHON = [(p.name, b) for p in DOCS for b in blocks(p, "python") if ADDRESS in b]


@pytest.fixture(scope="module")
def url(tmp_path_factory, tiny_tokenizer):
    """The shipped model served first, and a second installed model named as the guide's example names it."""
    home = tmp_path_factory.mktemp("home")
    torch.manual_seed(0)
    save_bundle(home / "models" / "stories15M", TinySLM(TINY.with_(vocab_size=tiny_tokenizer.vocab_size)),
                tiny_tokenizer, {"data": "synthetic"})  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HELIUM_HOME", str(home))
        loader = Loader("cpu", "float32", None, 1)
        session = open_session(None, device="cpu", dtype="float32", threads=1)
        with BackgroundServer(build_app(session, max_batch=4, others=True, loader=loader)) as address:
            yield address


def test_the_docs_have_examples_to_run():
    assert len(EXAMPLES) >= 6 and len(PYTHON) >= 2


@pytest.mark.parametrize(("doc", "command"), EXAMPLES, ids=[f"{d}:{c.split()[1][22:]}" for d, c in EXAMPLES])
def test_each_curl_example_gets_an_answer(url, doc, command):
    command = command.replace(ADDRESS, url).replace("curl ", "curl -sS --fail-with-body --max-time 60 ", 1)
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=90)
    assert run.returncode == 0 and '"error"' not in run.stdout, f"{doc}: {command}\n{run.stdout}\n{run.stderr}"
    assert run.stdout.strip()


@pytest.mark.parametrize(("doc", "code"), PYTHON, ids=[d for d, _ in PYTHON])
def test_each_python_example_runs(url, doc, code):
    run = subprocess.run([sys.executable, "-c", code.replace(ADDRESS, url)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip(), f"{doc}\n{code}\n{run.stderr}"
