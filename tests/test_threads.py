"""engine.generation.threads: OpenMP's wait policy set before torch loads (a user's own setting wins), and the thread count
from --threads or HELIUM_THREADS."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from engine.generation.threads import (
    ENV,
    SMALL_MODEL_PARAMS,
    apply_threads,
    default_threads,
    prepare_openmp,
    requested_threads,
    torch_default_threads,
    users_environment,
)


def test_prepare_openmp_lets_idle_threads_sleep_unless_the_user_chose():
    env: dict[str, str] = {}
    prepare_openmp(env)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["KMP_BLOCKTIME"] == "0"
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    prepare_openmp(mine)
    assert mine["OMP_WAIT_POLICY"] == "ACTIVE"


def test_other_programs_get_the_users_openmp_settings_not_ours():
    # llama.cpp's worker inherited PASSIVE and its 2-thread decode ran 4-6x slower than a user's
    env = {"PATH": "/bin"}
    prepare_openmp(env)
    assert users_environment(env) == {"PATH": "/bin"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    prepare_openmp(mine)
    assert users_environment(mine) == {"OMP_WAIT_POLICY": "ACTIVE"}  # the user's kept, ours dropped


def test_the_cli_sets_the_policy_before_torch_loads():
    code = (
        "import os, sys; sys.argv = ['helium', '--help']; from helium_tui.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE False"  # set, and torch (OpenMP) not loaded yet


@pytest.mark.parametrize(
    "given, env, want",
    [(3, None, 3), (None, "2", 2), (None, " 4 ", 4), (5, "2", 5), (None, None, None), (None, "", None)],
)
def test_requested_threads(given, env, want):
    assert requested_threads(given, {} if env is None else {ENV: env}) == want


@pytest.mark.parametrize("given, env", [(0, None), (-1, None), (2000, None), (None, "two"), (None, "1.5")])
def test_bad_thread_counts_are_refused(given, env):
    with pytest.raises(ValueError, match="must be a whole number from 1"):
        requested_threads(given, {} if env is None else {ENV: env})


def test_apply_threads_sets_torch(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(ENV, raising=False)
        assert apply_threads(1) == 1 == torch.get_num_threads()
        assert apply_threads(None) == 1  # nothing asked: torch's count stays as it is
        monkeypatch.setenv(ENV, "2")
        assert apply_threads(None) == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_small_models_default_to_one_thread(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv(ENV, raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        cores = torch_default_threads()
        assert default_threads(SMALL_MODEL_PARAMS - 1) == 1
        assert default_threads(SMALL_MODEL_PARAMS) == cores
        assert apply_threads(None, params=5_000_000) == 1
        assert apply_threads(None, params=45_000_000) == cores  # back to torch's own count, not the last one
        assert apply_threads(3, params=5_000_000) == 3  # asked for: always wins
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's OpenMP setting is a choice too
        assert default_threads(5_000_000) == cores
    finally:
        torch.set_num_threads(before)
