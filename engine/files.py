"""Atomic writes: a file (temp file in the same directory, fsync, rename) or a whole directory (built under a
hidden temp name, then renamed into place) — a crash never leaves half a file or half a bundle."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path) then move tmp_path over path atomically (fsynced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically (UTF-8)."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(directory: Path) -> None:
    """Make a rename inside directory durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_directory(out: str | Path, build: Callable[[Path], None], force: bool = False) -> Path:
    """Call build(tmp_dir) on a new hidden directory beside out, then move it to out whole.

    An absent or empty out is simply replaced. A non-empty one (or a link) is an error unless force: then it
    is moved aside, and deleted only once the new directory is in place (put back if that fails). The new
    directory gets the usual permissions, not mkdtemp's 0700.
    """
    out = Path(out)
    if (out.is_symlink() or out.exists()) and not force and not (out.is_dir() and not any(out.iterdir())):
        raise ValueError(f"{out}: already exists and is not empty (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = out.with_name(f".{out.name}.old")
    try:
        build(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        remove_path(old)
        if out.is_symlink() or out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old.is_symlink() or old.exists():
                old.rename(out)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    remove_path(old)
    fsync_dir(out.parent)
    return out


def remove_path(path: Path) -> None:
    """Delete a file, a link (never what it points to) or a directory tree, if present."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
