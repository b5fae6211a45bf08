"""CPU threads: how many torch uses (`--threads`, HELIUM_THREADS) and how OpenMP's idle threads wait.

Torch's OpenMP threads spin while they wait for each other. On a busy machine a spinning thread burns the
time slice its partner needs and decoding collapses; `prepare_openmp` (before torch loads) makes them sleep.
"""

from __future__ import annotations

import functools
import os
import sys

from engine.checks import whole

ENV = "HELIUM_THREADS"  # the thread count when no --threads is given
MAX_THREADS = 1024
# Models below this many parameters decode fastest on one thread: their time goes to per-operation overhead,
# which a second thread only adds to (the default model: 346 tok/s on one thread, 97 on two of a busy 2-core box)
SMALL_MODEL_PARAMS = 20_000_000
THREADS_HELP = (  # the --threads help of every command that runs a model
    f"CPU threads (default: {ENV}, else 1 for models under {SMALL_MODEL_PARAMS // 1_000_000}M parameters and "
    "the physical cores for larger ones)."
)
WAIT_ENV = {  # set before torch loads OpenMP, unless the user set them: idle threads sleep instead of spinning
    "OMP_WAIT_POLICY": "PASSIVE",  # GNU libgomp (torch's wheels on Linux) and LLVM's libomp (macOS)
    "KMP_BLOCKTIME": "0",  # Intel's libiomp5 (some conda builds)
}
SET_BY_HELIUM = "HELIUM_OPENMP_SET"  # the WAIT_ENV keys prepare_openmp set (not the user), space-separated


def prepare_openmp(environ: dict[str, str] | None = None) -> bool:
    """Ask OpenMP to let waiting threads sleep; True if it can still take effect (torch not loaded yet).

    OpenMP reads these once, when torch's library loads, so call this before the first `import torch`.
    A value the user set already wins.
    """
    environ = os.environ if environ is None else environ
    ours = [key for key in WAIT_ENV if key not in environ]
    for key in ours:
        environ[key] = WAIT_ENV[key]
    if ours:
        environ[SET_BY_HELIUM] = " ".join(ours)
    return "torch" not in sys.modules


def users_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of environ without what prepare_openmp set, for another program's process (llama.cpp's OpenMP
    pool spins between its matmuls by design: passive waiting makes its 2-thread decode 4-6x slower)."""
    env = dict(os.environ if environ is None else environ)
    for key in env.pop(SET_BY_HELIUM, "").split():
        if env.get(key) == WAIT_ENV.get(key):
            env.pop(key)
    return env


def check_threads(value: object, name: str = "--threads") -> int:
    """value as a thread count (a whole number from 1 to MAX_THREADS), else ValueError naming it."""
    return whole(name, value, high=MAX_THREADS)


def requested_threads(threads: int | None = None, environ: dict[str, str] | None = None) -> int | None:
    """The thread count asked for: threads if given, else HELIUM_THREADS, else None (the default)."""
    if threads is not None:
        return check_threads(threads)
    raw = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not raw:
        return None
    try:
        value: object = int(raw)
    except ValueError:
        value = raw
    return check_threads(value, ENV)


@functools.cache
def torch_default_threads() -> int:
    """torch's own thread count (the physical cores, or OMP_NUM_THREADS), as it was before Helium changed it
    (read once: apply_threads calls this before its first change)."""
    import torch

    return max(1, torch.get_num_threads())


def default_threads(params: int) -> int:
    """Threads for a model of `params` parameters: one below SMALL_MODEL_PARAMS (unless OMP_NUM_THREADS says
    otherwise), else torch's own default."""
    if params < SMALL_MODEL_PARAMS and "OMP_NUM_THREADS" not in os.environ:
        return 1
    return torch_default_threads()


def apply_threads(threads: int | None = None, params: int | None = None) -> int:
    """Set torch's intra-op threads: threads, else HELIUM_THREADS, else default_threads(params) (torch's count
    unchanged without params); returns the count."""
    import torch

    n = requested_threads(threads)
    if n is None and params is not None:
        n = default_threads(params)
    if n is not None and n != torch.get_num_threads():
        torch_default_threads()  # remember torch's own count before changing it
        torch.set_num_threads(n)
    return torch.get_num_threads()
