"""Build engine/model/csrc/native_decode.c (it includes cpu_mm.c, q4_mm.c and native_threads.c) with the system's C
compiler into a private folder of Helium's cache, and load a library from there only when that folder and the file are
yours alone and the file is the one Helium built.

What is trusted: the source file in the package, the compiler $CC names, and files only you (or root) can write.
The cache folder is not: before anything there is loaded, the cache root and its `kernels/` folder must belong to
you (or root) and be writable by no one else (as ssh checks the path to its keys); the library must be a regular
file of yours that no one else can write, whose sha256 equals the one recorded (in a private sidecar, written
atomically) when Helium built it and a child process load-tested it, before it got its name. Anything else is
rebuilt (a library of yours that does not match) or refused with the reason (another owner, others can write).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from engine.files import fsync_dir
from engine.paths import user_cache_dir
from engine.safe_read import digest_of

CSRC = Path(__file__).parent / "csrc"
SOURCES = (CSRC / "cpu_mm.c", CSRC / "q4_mm.c", CSRC / "native_threads.c", CSRC / "native_decode.c")  # all name the library
SOURCE = SOURCES[-1]  # the one file the compiler is given: it includes the others
FLAGS = ("-O3", "-fno-math-errno", "-fPIC", "-shared", "-pthread")
# threads where the compiler has OpenMP (else one thread); without the AVX-VNNI path where it is too old
VARIANTS = (("-fopenmp",), ("-fopenmp", "-DHELIUM_NO_AVX_VNNI"), (), ("-DHELIUM_NO_AVX_VNNI",))
SYMBOLS = (
    "helium_vnni_path", "helium_has_avx512_bf16", "helium_int8_paths_built", "helium_int8_mm", "helium_bf16_mm",
    "helium_decode_attention", "helium_native_sizes", "helium_native_scratch_bytes", "helium_native_step",
)  # fmt: skip
BUILD_TIMEOUT_S = 120
_DIGEST_SUFFIX = ".sha256"


class KernelCacheError(RuntimeError):
    """Why Helium's kernels cannot be built or loaded: one line, shown in the kernel status."""


def compiler() -> list[str]:
    """$CC (else cc) as words, as make reads it ('ccache gcc', 'gcc -O0'), its program found on PATH."""
    raw = os.environ.get("CC", "").strip() or "cc"
    try:
        words = shlex.split(raw)
    except ValueError as exc:
        raise KernelCacheError(f"CC={raw!r} is not a command line ({exc})") from None
    found = shutil.which(words[0]) if words else None
    if found is None:
        raise KernelCacheError(f"no C compiler ({raw}) to build Helium's CPU kernels")
    return [found, *words[1:]]


def kernel_dir() -> Path:
    """The folder of built libraries inside Helium's cache."""
    return user_cache_dir() / "kernels"


def library_path(cc: list[str]) -> Path:
    """Where the library built from this source, these flags and this compiler is kept: named by their hash."""
    try:
        done = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelCacheError(f"the C compiler ({shlex.join(cc)}) does not run: {exc}") from None
    parts = [*(source.read_text(encoding="utf-8") for source in SOURCES), *FLAGS, *cc, done.stdout]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    return kernel_dir() / f"cpu_mm-{key}.so"


def load_library() -> ctypes.CDLL:
    """The kernels' library: the cached build when it checks out, else a new build, load-tested before it is
    cached. KernelCacheError says why neither can be had."""
    private_kernel_dir()
    cc = compiler()
    target = library_path(cc)
    return _load_cached(target) or _build(cc, target)


def private_kernel_dir() -> Path:
    """kernel_dir(), made 0700 where it is new, once it and the cache root above it check out: each a folder that
    belongs to you (or root) and that no one else can write. A link is followed for the root, never for kernels/."""
    root, directory = user_cache_dir(), kernel_dir()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        _refuse_untrusted(root, os.stat(root), "Helium's kernel cache")
        directory.mkdir(exist_ok=True, mode=0o700)
        st = os.lstat(directory)
    except OSError as exc:
        raise KernelCacheError(f"cannot use Helium's kernel cache {root}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise KernelCacheError(f"refusing Helium's kernel cache: {directory} is not a folder (a link?)")
    _refuse_untrusted(directory, st, "Helium's kernel cache")
    return directory


def untrusted(st: os.stat_result) -> str:
    """Why a file or folder with this status cannot be trusted ('' when it can): another owner, or others can
    write it."""
    if st.st_uid not in (os.getuid(), 0):
        return f"belongs to uid {st.st_uid}, not to you"
    if st.st_mode & 0o022:
        return f"can be written by others (mode {stat.S_IMODE(st.st_mode):o}; chmod go-w it)"
    return ""


def _refuse_untrusted(path: Path, st: os.stat_result, what: str) -> None:
    why = untrusted(st)
    if why:
        raise KernelCacheError(f"refusing {what}: {path} {why}")


def _load_cached(target: Path) -> ctypes.CDLL | None:
    """The library at target when it is what Helium built there (its sidecar's sha256), None when it is absent or
    not (to be rebuilt). KernelCacheError when a file there is not yours alone."""
    try:
        expected = _read_private(target.with_suffix(_DIGEST_SUFFIX)).decode("ascii", "replace").strip()
        return _load_verified(target, expected)
    except (OSError, _Mismatch):  # absent, not what was built, or no longer loads: build it again
        return None


class _Mismatch(KernelCacheError):
    """A library of yours that is not the one its sidecar records (a crash between the two renames, an edit)."""


def _open_private(path: Path) -> int:
    """A descriptor on path, a regular file (not a link) of yours that no one else can write; KernelCacheError if
    it is not (FileNotFoundError when absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(path) from None
        why = "is a link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror})"
        raise KernelCacheError(f"refusing Helium's cached kernels: {path} {why}") from None
    st = os.fstat(fd)
    why = "is not a regular file" if not stat.S_ISREG(st.st_mode) else untrusted(st)
    if why:
        os.close(fd)
        raise KernelCacheError(f"refusing Helium's cached kernels: {path} {why}")
    return fd


def _read_private(path: Path) -> bytes:
    fd = _open_private(path)
    with os.fdopen(fd, "rb") as f:
        return f.read(256)


def _load_verified(path: Path, expected: str) -> ctypes.CDLL:
    """dlopen path once it is a file of yours alone whose sha256 is expected (the library Helium built and
    load-tested). Between the check and the load only you (or root) could swap it: the folder is yours alone."""
    if _sha256(path) != expected:
        raise _Mismatch(f"{path} is not the library Helium built there")
    lib = ctypes.CDLL(str(path))
    missing = [name for name in SYMBOLS if not hasattr(lib, name)]
    if missing:
        raise OSError(f"it has no {missing[0]}")
    return lib


def _sha256(path: Path) -> str:
    """The sha256 of path, read through _open_private (a regular file of yours alone)."""
    with os.fdopen(_open_private(path), "rb") as f:
        return digest_of(f)


def _build(cc: list[str], target: Path) -> ctypes.CDLL:
    """Compile into a private temporary folder beside target, load-test the result in a child process, record its
    sha256, then give both their names (the library last): a library that does not load is never cached."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        out = Path(tmp) / target.name
        _compile(cc, out)
        os.chmod(out, 0o700)
        digest = _sha256(out)
        _load_test(cc, out)
        lib = _load_verified(out, digest)  # here, by its unique temporary name: no other build can swap it
        sidecar = out.with_suffix(_DIGEST_SUFFIX)
        fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(digest + "\n")
            f.flush()
            os.fsync(f.fileno())
        with open(out, "rb") as built:  # on disk before it gets its name: never a torn library
            os.fsync(built.fileno())
        os.replace(sidecar, target.with_suffix(_DIGEST_SUFFIX))
        os.replace(out, target)
    fsync_dir(target.parent)
    return lib


# dlopen in a child: a truncated library can pass the ELF checks and then kill its loader (SIGBUS)
_LOAD_TEST = """import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
missing = [name for name in sys.argv[2:] if not hasattr(lib, name)]
sys.exit(f"it has no {missing[0]}" if missing else None if lib.helium_vnni_path() in (0, 1, 2) else "bad answer")
"""


def _load_test(cc: list[str], path: Path) -> None:
    """KernelCacheError unless a child process loads the library at path and finds every kernel in it."""
    try:
        cmd = [sys.executable, "-I", "-c", _LOAD_TEST, str(path), *SYMBOLS]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        why = "loading it hangs"
    else:
        if done.returncode == 0:
            return
        if done.returncode < 0:
            why = f"loading it kills the process with {signal.Signals(-done.returncode).name}"
        else:
            why = (done.stderr.strip().splitlines() or ["no output"])[-1].rsplit(": ", 1)[-1]
    what = f"the C compiler ({shlex.join(cc)}) wrote a library that does not load"
    raise KernelCacheError(f"{what} ({why}); nothing was cached")


def _compile(cc: list[str], out: Path) -> None:
    error = "no output"
    for extra in VARIANTS:
        cmd = [*cc, *FLAGS, *extra, str(SOURCE), "-o", str(out), "-lm"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise KernelCacheError(f"building Helium's CPU kernels took over {BUILD_TIMEOUT_S} s") from None
        except OSError as exc:
            raise KernelCacheError(f"the C compiler ({shlex.join(cc)}) does not run: {exc.strerror}") from None
        if done.returncode == 0 and out.exists():
            return
        error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no output"])[-1]
    raise KernelCacheError(f"Helium's CPU kernels did not build: {error}")
