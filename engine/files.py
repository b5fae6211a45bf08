"""Atomic writes: a file (temp file in the same directory, fsync, rename) or a whole directory (built under a
hidden temp name, then renamed into place) — a crash never leaves half a file or half a bundle.

Everything written gets the usual permissions (0666/0777 less the umask, as `open` would give), and a full disk
or a file-size limit becomes one WriteError naming the file and the space left, with the temp files removed.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# how libraries report a write that did not fit: errno 28/27/122 in Rust's words (safetensors, tokenizers) or
# numpy's short write ("N requested and M written", no errno) as gguf and np.tofile raise it
_DISK_WORDS = re.compile(r"No space left|File too large|Disk quota|os error (28|27|122)\b|requested and \d+ written")
_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "the file is larger than this system lets one file be",
    errno.EDQUOT: "the disk quota is used up",
}


class WriteError(OSError):
    """A file could not be written for lack of room; str() is the whole one-line message."""

    def __init__(self, code: int, path: Path, reason: str, outcome: str) -> None:
        super().__init__(code, reason)
        self.path, self.reason, self.outcome = Path(path), reason, outcome  # what, why, what became of it

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason} ({free_bytes(self.path)}); {self.outcome}"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp_path) then move tmp_path over path atomically (fsynced); WriteError when it does not fit."""
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
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        kept = "the old file is as it was" if path.exists() else "no partial file was left"
        error = write_error(exc, path, kept)
        if error is not None:
            raise error from None
        raise
    fsync_dir(path.parent)
    return path


def write_error(exc: BaseException, path: Path, outcome: str) -> WriteError | None:
    """exc as a WriteError naming path, the reason and the free space (None when exc is not about room)."""
    if isinstance(exc, WriteError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    if code not in _REASONS and not (isinstance(exc, Exception) and _DISK_WORDS.search(str(exc))):
        return None
    text = str(exc)
    if code not in _REASONS:
        code = next((c for c, words in ((errno.EFBIG, "too large"), (errno.EDQUOT, "quota")) if words in text),
                    errno.ENOSPC)  # fmt: skip
    if "requested and" in text and _file_size_limit() is not None:  # numpy's short write: a limit, or a full disk
        code = errno.EFBIG
    reason = _REASONS[code]
    if code == errno.EFBIG and _file_size_limit() is not None:
        reason = f"the file would pass this process's file-size limit of {_file_size_limit():,} bytes (ulimit -f)"
    return WriteError(code, path, reason, outcome)


def _file_size_limit() -> int | None:
    """RLIMIT_FSIZE in bytes, None when unlimited or unknown."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def free_bytes(path: Path) -> str:
    """'1,937,952 bytes free on that filesystem' for the nearest existing folder of path."""
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{shutil.disk_usage(folder).free:,} bytes free on that filesystem"
    except OSError:
        return "free space unknown"


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
    made = _missing_folders(out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = _unused(out.parent, f".{out.name}.", ".old")  # never a name someone else uses
    try:
        build(tmp)
        share_tree(tmp)
        if out.is_symlink() or out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old.is_symlink() or old.exists():
                old.rename(out)
            raise
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # the folders made for out go too, if still empty
            try:
                folder.rmdir()
            except OSError:
                break
        error = write_error(exc, out, "nothing was left behind")
        if error is not None:  # name the file as it would have been, not its temp folder
            named = [error.path, Path(getattr(exc, "filename", None) or out)]
            where = next((out / p.relative_to(tmp) for p in named if p.is_relative_to(tmp)), out)
            raise WriteError(error.errno or errno.ENOSPC, where, error.reason, "nothing was left behind") from None
        raise
    remove_path(old)
    fsync_dir(out.parent)
    return out


def share_tree(directory: Path) -> None:
    """Give directory and everything under it the usual permissions: 0777 (folders) or 0666 (files) less the
    umask, as mkdtemp, mkstemp and some writers (safetensors: 0600) do not."""
    mask = _umask()
    os.chmod(directory, 0o777 & ~mask)
    for root, dirs, files in os.walk(directory):
        for name, mode in [(d, 0o777) for d in dirs] + [(f, 0o666) for f in files]:
            path = os.path.join(root, name)
            if not os.path.islink(path):  # a link's own mode means nothing; never change what it points to
                os.chmod(path, mode & ~mask)


def _missing_folders(folder: Path) -> list[Path]:
    """The folders mkdir(parents=True) would create for folder, deepest first."""
    missing = []
    while not (folder.exists() or folder.is_symlink()) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _unused(folder: Path, prefix: str, suffix: str) -> Path:
    """folder / (prefix + random hex + suffix), a name nothing uses."""
    while True:
        candidate = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        if not (candidate.is_symlink() or candidate.exists()):
            return candidate


def remove_path(path: Path) -> None:
    """Delete a file, a link (never what it points to) or a directory tree, if present."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
