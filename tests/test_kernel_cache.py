"""The kernel cache is not trusted: a cache others can write, a file someone else owns, a planted library or a
link is never loaded; a library that does not load is never cached; $CC may hold words. Each case says why in
the kernel status, and builds with the real compiler where one is needed (gcc)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.model import kernel_build
from engine.model.cpu_kernels import kernel_status, load_kernels
from engine.model.kernel_build import compiler, library_path, private_kernel_dir

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build Helium's CPU kernels")

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
  FILE* f = fopen(MARKER, "w");
  if (f) { fputs("the planted library ran\n", f); fclose(f); }
}
int helium_vnni_path(void) { return 0; }  // and every other kernel's name: a library that passes a symbol check
int helium_has_avx512_bf16(void) { return 0; }
int helium_int8_paths_built(void) { return 0; }
int helium_int8_mm(void) { return -1; }
int helium_bf16_mm(void) { return -1; }
int helium_decode_attention(void) { return -1; }
"""


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    """A fresh HELIUM_CACHE (not yet created), gcc as the compiler, and no kernels loaded in this process."""
    monkeypatch.setenv("HELIUM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "gcc")
    monkeypatch.delenv("HELIUM_CPU_KERNELS", raising=False)
    load_kernels.cache_clear()
    yield tmp_path / "cache"
    load_kernels.cache_clear()


def fresh_status() -> tuple[object, str]:
    """The kernels and the status line as a new process would see them."""
    load_kernels.cache_clear()
    return load_kernels(), kernel_status()


def plant(target: Path, marker: Path, digest: bool) -> None:
    """A library with a constructor that writes marker, at target (with a matching sidecar when digest)."""
    source = target.parent.parent / "planted.c"
    source.write_text(PLANTED)
    cmd = ["gcc", "-shared", "-fPIC", f'-DMARKER="{marker}"', str(source), "-o", str(target)]
    subprocess.run(cmd, check=True)
    if digest:
        target.with_suffix(".sha256").write_text(hashlib.sha256(target.read_bytes()).hexdigest() + "\n")
    assert not marker.exists()


def built_files(cache: Path) -> list[str]:
    kernels = cache / "kernels"
    return sorted(p.name for p in kernels.iterdir()) if kernels.exists() else []


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o1777])
@pytest.mark.parametrize("where", ["the cache", "kernels/"])
def test_a_cache_others_can_write_is_refused(cache, mode, where):
    folder = cache if where == "the cache" else cache / "kernels"
    folder.mkdir(parents=True)
    folder.chmod(mode)
    kernels, status = fresh_status()
    assert kernels.lib is None
    why = f"refusing Helium's kernel cache: {folder} can be written by others (mode {mode & 0o7777:o}; chmod go-w it)"
    assert status == f"int8 torch ({why}), bf16 torch ({why})"
    assert built_files(cache) == []  # nothing compiled into it either


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
@pytest.mark.parametrize("what", ["library", "sidecar", "kernels/", "the cache"])
@pytest.mark.slow
def test_a_file_or_folder_someone_else_owns_is_refused(cache, what):
    assert fresh_status()[0].lib is not None
    target = library_path(compiler())
    path = {"library": target, "sidecar": target.with_suffix(".sha256"), "kernels/": target.parent}.get(what, cache)
    os.chown(path, 65534, 65534)
    kernels, status = fresh_status()
    assert kernels.lib is None
    assert f"{path} belongs to uid 65534, not to you" in kernels.why_not and kernels.why_not in status


@pytest.mark.parametrize("how", ["no sidecar", "a stale sidecar", "a link", "in a group-writable cache"])
@pytest.mark.slow
def test_a_planted_library_is_never_loaded(cache, tmp_path, how):
    private_kernel_dir()
    target, marker = library_path(compiler()), tmp_path / "marker"
    if how == "a link":  # a link to a library with a matching sidecar
        plant(tmp_path / "elsewhere.so", marker, digest=True)
        target.symlink_to(tmp_path / "elsewhere.so")
        (tmp_path / "elsewhere.sha256").rename(target.with_suffix(".sha256"))
    else:
        plant(target, marker, digest=how == "in a group-writable cache")
    if how == "a stale sidecar":
        target.with_suffix(".sha256").write_text("0" * 64 + "\n")
    if how == "in a group-writable cache":
        (cache / "kernels").chmod(0o770)
    kernels, status = fresh_status()
    assert not marker.exists()
    if how in ("no sidecar", "a stale sidecar"):  # a file of yours that is not what Helium built: built again
        assert kernels.lib is not None and kernels.lib.helium_int8_paths_built() > 0
        recorded = target.with_suffix(".sha256").read_text().strip()
        assert hashlib.sha256(target.read_bytes()).hexdigest() == recorded
    else:
        assert kernels.lib is None
        why = "is a link" if how == "a link" else "can be written by others"
        assert why in kernels.why_not and kernels.why_not in status


@pytest.mark.parametrize("output", ["junk", "truncated"])
@pytest.mark.slow
def test_a_library_that_does_not_load_is_never_cached(cache, tmp_path, monkeypatch, output):
    fake = tmp_path / "fake-cc"  # exits 0 and leaves a library that does not load
    spoil = "echo 'not a library' >" if output == "junk" else "gcc \"$@\" && truncate -s 4096"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && exec gcc --version\n'
        'out=; prev=; for a; do [ "$prev" = -o ] && out=$a; prev=$a; done\n'
        f'{spoil} "$out"; exit 0\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    for _ in range(2):  # and the next run tries again: nothing was left for it to fall back on quietly
        kernels, status = fresh_status()
        assert kernels.lib is None
        assert f"the C compiler ({fake}) wrote a library that does not load (" in kernels.why_not
        assert kernels.why_not.endswith("; nothing was cached") and kernels.why_not in status
        assert built_files(cache) == []  # no library, no sidecar, no build folder
    monkeypatch.setenv("CC", "gcc")
    assert fresh_status()[0].lib is not None


@pytest.mark.parametrize("cc", ["gcc -O0", "env gcc", "  'gcc'  "])
@pytest.mark.slow
def test_a_compiler_with_words_builds(cache, monkeypatch, cc):
    monkeypatch.setenv("CC", cc)
    kernels, status = fresh_status()
    assert kernels.lib is not None, status
    assert "C compiler" not in status
    words = library_path(compiler())
    monkeypatch.setenv("CC", "gcc")
    assert (words == library_path(compiler())) == (cc.strip() == "'gcc'")  # the words are part of the name


def test_a_compiler_line_that_does_not_parse_says_so(cache, monkeypatch):
    monkeypatch.setenv("CC", "gcc '-O0")
    kernels, status = fresh_status()
    assert kernels.lib is None
    assert kernels.why_not == "CC=\"gcc '-O0\" is not a command line (No closing quotation)"


def test_kernels_as_a_link_is_refused(cache, tmp_path):
    cache.mkdir(mode=0o700)
    (tmp_path / "other").mkdir(mode=0o700)
    (cache / "kernels").symlink_to(tmp_path / "other")
    kernels, _ = fresh_status()
    assert kernels.lib is None
    assert kernels.why_not == f"refusing Helium's kernel cache: {cache / 'kernels'} is not a folder (a link?)"


def test_new_folders_and_files_are_private(cache):
    assert fresh_status()[0].lib is not None
    target = library_path(compiler())
    for path, mode in [(cache, 0o700), (cache / "kernels", 0o700), (target, 0o700), (target.with_suffix(".sha256"), 0o600)]:
        assert path.stat().st_mode & 0o7777 == mode, path
    assert kernel_build.untrusted(target.stat()) == ""
