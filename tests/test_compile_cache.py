"""Honest --compile: compiling happens before the story (said on stderr, timed apart from decoding), and what
Inductor compiled is kept in a private folder of Helium's cache, so the next process loads it (a cache hit)."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from typer.testing import CliRunner

from engine.generation.generate import Generator
from engine.generation.runtime import compile_cache_dir, use_compile_cache
from engine.generation.sampling import SamplingParams
from engine.model.kernel_build import KernelCacheError
from helium_tui.cli import app

pytestmark = pytest.mark.usefixtures("torch_decode")  # these test the PyTorch decode path

@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A fresh HELIUM_CACHE; TORCHINDUCTOR_CACHE_DIR restored after the test."""
    monkeypatch.setenv("HELIUM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(
        "TORCHINDUCTOR_CACHE_DIR", os.environ.get("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "ind"))
    )
    return tmp_path / "cache"


def test_the_compile_cache_is_a_private_folder_of_heliums_cache(cache):
    directory = use_compile_cache()
    assert directory == cache / "kernels" / "inductor" == compile_cache_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_compile_cache_others_can_write_or_a_link_is_refused(cache, tmp_path):
    directory = compile_cache_dir()
    directory.chmod(0o777)
    with pytest.raises(KernelCacheError, match="can be written by others"):
        compile_cache_dir()
    fallback = use_compile_cache()  # never the refused folder: a new private one, compiled from scratch
    assert fallback != directory and stat.S_IMODE(fallback.stat().st_mode) == 0o700
    directory.rmdir()
    directory.symlink_to(tmp_path)
    with pytest.raises(KernelCacheError, match="not a folder"):
        compile_cache_dir()


@pytest.mark.slow
def test_a_second_compile_loads_the_first_from_the_cache(cache, tiny_model, tiny_tokenizer, one_thread):
    """The default model runs in bf16. Frozen weights made both caches bypass: Inductor's (prepacked for oneDNN:
    'mkldnn tensors unpickleable') and AOTAutograd's ('Cannot cache a graph with freezing enabled')."""
    from torch._dynamo.utils import counters

    model = tiny_model.to(torch.bfloat16)
    params = SamplingParams(max_new_tokens=3, temperature=0, stop_at_eos=False)
    hits = []
    for _ in range(2):  # as two processes: Dynamo forgets, Inductor's on-disk cache stays
        torch._dynamo.reset()
        counters.clear()
        gen = Generator(model, tiny_tokenizer, compile=True)
        list(gen.tokens([1, 2, 3], params))
        assert gen.compile_failed is None
        hits.append(
            (counters["inductor"]["fxgraph_cache_hit"], counters["aot_autograd"]["autograd_cache_hit"])
        )
    assert hits == [(0, 0), (1, 1)]
    assert any((cache / "kernels" / "inductor").iterdir())


def test_tell_compile_compiles_before_the_story_and_says_so(tiny_bundle, cache, one_thread):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    r = CliRunner().invoke(app, ["tell", "Lily had", "--model", str(tiny_bundle), "--dtype", "float32",
                                 "--max-tokens", "6", "--compile", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["compiled"] is True and data["compile_s"] > 0 and data["generated_tokens"] == 6
    assert "helium: compiling the decode step" in r.stderr and "helium: compiled in" in r.stderr


def test_no_story_compiles_after_compile_now(tiny_bundle, cache, one_thread):
    """The defect: the first story compiled, and its tokens/s counted the compile. After compile_now() a story
    of another prompt length, sampled, never compiles again."""
    from torch._dynamo.utils import counters

    from engine.generation.session import open_session

    torch._dynamo.reset()
    session = open_session(str(tiny_bundle), device="cpu", dtype="float32", compile=True)
    assert session.compile_now() > 0
    frames = counters["stats"]["unique_graphs"]
    result = session.generator.stream("Once upon a time there", SamplingParams(max_new_tokens=8, seed=1))
    for _ in result:
        pass
    assert counters["stats"]["unique_graphs"] == frames and result.result.generated_tokens == 8
    assert open_session(str(tiny_bundle), device="cpu", dtype="float32").compile_now() == 0.0


FAKE_TELL = r"""
import os, sys, time
from pathlib import Path
inductor = Path(os.environ["HELIUM_CACHE"]) / "kernels" / "inductor"
if "--compile" in sys.argv and not inductor.is_dir():
    time.sleep(0.5)  # compiling, then caching
    inductor.mkdir(parents=True)
print(sys.argv[1], "and a story", end="", flush=True)
"""


def test_bench_startup_compile_times_cold_with_the_cache_emptied_and_warm_with_it_kept(tmp_path, monkeypatch):
    import sys

    from benchmarks.startup import bench_compile_startup

    monkeypatch.setenv("HELIUM_CACHE", str(tmp_path / "mine"))
    script = tmp_path / "fake_tell.py"
    script.write_text(FAKE_TELL)
    c = bench_compile_startup([sys.executable, str(script), "Once"], "Once", repeats=2, cold_runs=2)
    assert len(c.cold.runs_s) == 2 and min(c.cold.runs_s) >= 0.5  # each cold run found the cache empty
    assert len(c.warm.runs_s) == 2 and c.warm.first_token_s < 0.5 and c.warm.command[-1] == "--compile"
    assert "--compile" not in c.uncompiled.command and c.to_dict()["warm_over_uncompiled"] > 0
    assert (
        os.environ["HELIUM_CACHE"] == str(tmp_path / "mine") and not (tmp_path / "mine").exists()
    )  # yours untouched


FAKE_TELL_BUILDING_KERNELS = r"""
import os, sys, time
from pathlib import Path
kernels = Path(os.environ["HELIUM_CACHE"]) / "kernels" / "helium"
if not kernels.is_dir():
    time.sleep(0.5)  # the first process in an empty cache builds Helium's CPU kernels
    kernels.mkdir(parents=True)
print(sys.argv[1], "and a story", end="", flush=True)
"""


def test_bench_startup_compile_never_times_the_kernel_build_as_the_uncompiled_start(tmp_path, monkeypatch):
    """With --repeats 1 the one uncompiled run was the one that built Helium's kernels into the empty cache:
    'warm / uncompiled 0.53x' for a --compile that does nothing."""
    import sys

    from benchmarks.startup import bench_compile_startup

    monkeypatch.setenv("HELIUM_CACHE", str(tmp_path / "mine"))
    script = tmp_path / "fake_tell.py"
    script.write_text(FAKE_TELL_BUILDING_KERNELS)
    c = bench_compile_startup([sys.executable, str(script), "Once"], "Once", repeats=1)
    assert c.uncompiled.first_token_s < 0.5 and len(c.uncompiled.runs_s) == 1


def test_bench_startup_compile_says_when_compile_does_nothing_here(tiny_bundle, monkeypatch):
    from engine.generation.session import NATIVE_COMPILE_NOTE, open_session
    from engine.model.native import native_status
    from helium_tui.commands.bench import compile_note

    native = native_status(open_session(str(tiny_bundle)).bundle.model) == ""
    assert compile_note(str(tiny_bundle), "auto") == (NATIVE_COMPILE_NOTE if native else None)
    monkeypatch.setenv("HELIUM_NATIVE_DECODE", "off")
    assert compile_note(str(tiny_bundle), "auto") is None
