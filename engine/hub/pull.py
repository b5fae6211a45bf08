"""`helium models pull NAME`: download a catalog model from the Hugging Face Hub, convert it, install it by name.

engine.hub.files downloads into the huggingface_hub cache (HF_ENDPOINT picks the Hub) after a short metadata request,
so an offline machine fails in seconds; every answer is checked (hashes, commit, sizes against the catalog) before a
byte is written, and each file against its sha256. The llama2.c importer converts and `install_bundle` installs:
nothing appears half-done.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.hub.catalog import CatalogModel, get_entry, installed_dir, is_installed
from engine.hub.client import hub_endpoint
from engine.hub.files import HubError, HubUnreachable, cached, check_size, fetch, head, remember
from engine.paths import user_data_dir


@dataclass(frozen=True)
class PullProgress:
    """Where a pull stands: `stage` is download (bytes done / total), convert or install (0 / 1)."""

    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class PullResult:
    """A finished pull: the installed name and bundle, and whether anything was done."""

    name: str
    path: Path
    pulled: bool  # False: the model was installed already and nothing was downloaded


class PullError(OSError):
    """A pull that failed; the message is one line and names what to check (the endpoint, HF_ENDPOINT)."""


class PullCancelled(Exception):
    """The caller's cancel check asked the pull to stop; temporary files are removed."""


ProgressFn = Callable[[PullProgress], None]
CancelFn = Callable[[], bool]


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set: use only files already in the cache."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def pull(
    model: str | CatalogModel,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
) -> PullResult:
    """Download, convert and install a catalog model; a no-op when it is installed already (unless force).

    progress(PullProgress) is called from this thread; cancelled() returning True stops the pull with
    PullCancelled. Failures raise PullError (network, integrity), BundleError (a file that does not convert) or
    ValueError (something at the install target that is not a bundle Helium installed: refused before any download).
    """
    from engine.bundles.install import check_install_target

    entry = get_entry(model) if isinstance(model, str) else model
    if is_installed(entry) and not force:
        return PullResult(entry.name, installed_dir(entry), False)
    check_install_target(installed_dir(entry), force)  # what the install would refuse, refused before downloading
    report = progress or (lambda p: None)
    cancelled = cancelled or (lambda: False)
    files = download(entry, report, cancelled)
    if cancelled():
        raise PullCancelled("pull cancelled")
    report(PullProgress("convert", 0, 1))
    from engine.bundles.install import install_bundle
    from engine.formats.llama2c import import_llama2c

    staging = user_data_dir() / "tmp"
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"pull-{entry.name}-", dir=staging) as tmp:
        tokenizer = files[entry.tokenizer] if entry.tokenizer else entry.tokenizer_path()
        bundle = import_llama2c(files[entry.weights], tokenizer, Path(tmp) / entry.name)
        _record_origin(bundle, entry, files)
        report(PullProgress("install", 0, 1))
        name, path = install_bundle(bundle, entry.name, force=force)
    report(PullProgress("install", 1, 1))
    return PullResult(name, path, True)


def _record_origin(bundle: Path, entry: CatalogModel, files: dict[str, Path]) -> None:
    """Add where the model came from (repo, commit, endpoint) to the bundle's metadata.json."""
    from engine.files import atomic_write_text
    from engine.jsonfile import need_object, read_json

    meta_path = bundle / "metadata.json"
    meta = need_object(read_json(meta_path), meta_path)
    parts = files[entry.weights].parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    meta["created_by"] = "helium models pull"
    meta["pulled_from"] = {
        "endpoint": hub_endpoint(), "repo": entry.repo, "revision": entry.revision, "commit": commit,
        "files": list(entry.files),
    }  # fmt: skip
    meta["sampling"] = entry.sampling  # llama2.c's defaults: where `tell` and the studio start for it
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------
# Download


def download(entry: CatalogModel, report: ProgressFn, cancelled: CancelFn) -> dict[str, Path]:
    """Fetch the entry's files into the huggingface_hub cache (or find them there); {repo path: local path}.

    engine.hub.files checks every answer (hashes, commit, sizes against the catalog) before a byte is written.
    """
    endpoint = hub_endpoint()
    if hub_offline():
        return _cached_or_fail(
            entry, f"HF_HUB_OFFLINE is set and {entry.name} is not in the Hugging Face cache"
        )
    try:
        remotes = [head(entry.repo, path, entry.revision, endpoint) for path in entry.files]
        for remote in remotes:
            check_size(remote, endpoint, expected=entry.file_bytes(remote.path))
    except HubUnreachable as exc:
        return _cached_or_fail(entry, str(exc))
    except HubError as exc:
        raise PullError(str(exc)) from None
    total = sum(remote.size for remote in remotes)
    counter = _ByteCounter(total, report, cancelled)
    report(PullProgress("download", 0, total))
    files: dict[str, Path] = {}
    for remote in remotes:
        try:
            files[remote.path] = fetch(remote, endpoint, counter.add)
        except HubError as exc:
            raise PullError(str(exc)) from None
        counter.finish_file(remote.size)
    remember(entry.repo, entry.revision, remotes[0].commit)
    return files


def _cached_or_fail(entry: CatalogModel, message: str) -> dict[str, Path]:
    """The entry's files from the huggingface_hub cache alone (intact), else PullError(message)."""
    files = {path: cached(entry.repo, entry.revision, path) for path in entry.files}
    if any(found is None for found in files.values()):
        raise PullError(message)
    return files  # type: ignore[return-value]


class _ByteCounter:
    """Turns the bytes of a download, as they arrive, into PullProgress reports (at most 20 a second)."""

    def __init__(self, total: int, report: ProgressFn, cancelled: CancelFn) -> None:
        self.total, self.report, self.cancelled = total, report, cancelled
        self.finished = 0  # bytes of the files already done
        self.current = 0  # bytes of the file in flight
        self.last = 0.0  # time of the last report
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        """Count n more bytes (negative when a download restarts), report, and honour cancellation."""
        if self.cancelled():
            raise PullCancelled("pull cancelled")
        with self.lock:
            self.current += n
            now = time.monotonic()
            if now - self.last < 0.05:
                return
            self.last = now
        self.report(PullProgress("download", min(self.finished + self.current, self.total), self.total))

    def finish_file(self, size: int) -> None:
        """One file is in the cache: count it whole (cached files never report bytes)."""
        self.finished += size
        self.current = 0
        self.report(PullProgress("download", min(self.finished, self.total), self.total))
