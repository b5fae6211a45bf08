"""Reading files that something outside Helium placed or named: regular files only, never blocking on a FIFO.

`open_regular` is the one way a reader opens such a file (a FIFO, device, socket or directory in its place is
refused at once); `inside` keeps a path that one file names (a shard, a weight file) in that file's directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device", stat.S_IFSOCK: "a socket",
         stat.S_IFDIR: "a directory"}  # fmt: skip


class NotRegularFile(OSError):
    """A path that exists but is not a regular file (its strerror says what it is)."""


def not_regular(path: str | Path, mode: int) -> NotRegularFile:
    """The error for path, which has st_mode mode."""
    kind = KINDS.get(stat.S_IFMT(mode), "not a plain file")
    return NotRegularFile(errno.EINVAL, f"not a regular file (it is {kind})", str(path))


def open_regular(path: str | Path) -> BinaryIO:
    """path opened for binary reading, following links; NotRegularFile (an OSError) unless it is a regular file.

    It is checked before opening (no device is ever opened) and again on the open descriptor (so a FIFO
    swapped in meanwhile is refused too); the open is non-blocking, so a FIFO never waits for a writer.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise not_regular(path, mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(path, mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, limit: int) -> bytes:
    """The whole of a regular file of at most limit bytes; OSError (EFBIG) when it is larger."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {_size(limit)}, too large for this file", str(path))
    return data


def digest_of(f: BinaryIO, digest: Any = None, on_block: Callable[[int], None] | None = None) -> str:
    """The hex digest of what f holds from where it stands (sha256 unless another hash object is given), read
    in 4 MiB blocks; on_block(n) after each block of n bytes."""
    digest = digest or hashlib.sha256()
    while block := f.read(1 << 22):
        digest.update(block)
        if on_block is not None:
            on_block(len(block))
    return digest.hexdigest()


def sha256_file(path: str | Path, on_block: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a regular file (open_regular), on_block(n) as it is read."""
    with open_regular(path) as f:
        return digest_of(f, on_block=on_block)


def check_regular(path: str | Path) -> None:
    """OSError (FileNotFoundError, NotRegularFile, PermissionError) unless path is a readable regular file."""
    with open_regular(path):
        pass


def reason(exc: OSError) -> str:
    """Why an OSError happened, in a few words ("no such file", "not a regular file (it is a FIFO)")."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if exc.strerror:
        return exc.strerror
    text = str(exc).splitlines()
    return text[0] if text else type(exc).__name__


def unreadable(path: str | Path, exc: OSError, what: str = "") -> str:
    """The one line for a file that could not be opened or read: `PATH: missing`, `PATH: cannot be read (why)`;
    what names the file's kind (`PATH: shard missing`)."""
    words = f"{what} " if what else ""
    if isinstance(exc, FileNotFoundError):
        return f"{path}: {words}missing"
    return f"{path}: {words}cannot be read ({reason(exc)})"


def inside(directory: str | Path, name: object, what: str = "file") -> Path:
    """directory / name for a path that a file in directory names; ValueError unless name is a relative path
    that stays in directory (no absolute path, no `..`, no drive; links placed in the directory are allowed)."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"{directory}: a {what} is named {name!r}, which is not a file name")
    parts = Path(name).parts
    if Path(name).is_absolute() or Path(name).drive or ".." in parts:
        raise ValueError(f"{directory}: the {what} {name!r} is outside this directory (refused)")
    return Path(directory, name)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"
