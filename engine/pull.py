"""`helium models pull NAME`: download a catalog model from the Hugging Face Hub, convert it, install it by name.

huggingface_hub downloads (its cache, file locks, resuming retries, size check; HF_ENDPOINT picks the Hub) after a
short metadata request, so an offline machine fails in seconds; files are also checked against the sha256 the Hub
names them by. The llama2.c importer converts and `install_bundle` installs: nothing appears half-done.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.catalog import CatalogModel, get_entry, installed_dir, is_installed
from engine.hub import hub_endpoint, quiet_hub_logs
from engine.paths import user_data_dir

METADATA_TIMEOUT_S = 5.0  # connect/read timeout of metadata requests: an unreachable Hub fails fast
SHA256 = re.compile(r"[0-9a-f]{64}")  # the ETag of an LFS file is its content's sha256


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


def hub_cache_dir() -> str | None:
    """The huggingface_hub cache from HF_HUB_CACHE or HF_HOME read now (None: the library's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def metadata_timeout() -> float:
    """Seconds to wait for the Hub's metadata answer: HF_HUB_ETAG_TIMEOUT when set, else 5."""
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or METADATA_TIMEOUT_S)
    except ValueError:
        return METADATA_TIMEOUT_S


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
    PullCancelled. Failures raise PullError (network, integrity) or BundleError (a file that does not convert).
    """
    entry = get_entry(model) if isinstance(model, str) else model
    if is_installed(entry) and not force:
        return PullResult(entry.name, installed_dir(entry), False)
    report = progress or (lambda p: None)
    cancelled = cancelled or (lambda: False)
    files = download(entry, report, cancelled)
    if cancelled():
        raise PullCancelled("pull cancelled")
    report(PullProgress("convert", 0, 1))
    from engine.install import install_bundle
    from engine.llama2c import import_llama2c

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

    meta_path = bundle / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    parts = files[entry.weights].parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    meta["created_by"] = "helium models pull"
    meta["pulled_from"] = {
        "endpoint": hub_endpoint(), "repo": entry.repo, "revision": entry.revision, "commit": commit,
        "files": list(entry.files),
    }  # fmt: skip
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------
# Download


def download(entry: CatalogModel, report: ProgressFn, cancelled: CancelFn) -> dict[str, Path]:
    """Fetch the entry's files into the huggingface_hub cache (or find them there); {repo path: local path}."""
    endpoint = hub_endpoint()
    if hub_offline():
        return _cached_or_fail(
            entry, f"HF_HUB_OFFLINE is set and {entry.name} is not in the Hugging Face cache"
        )
    try:
        sizes_and_shas = [_file_metadata(entry, filename, endpoint) for filename in entry.files]
    except _Unreachable as exc:
        return _cached_or_fail(entry, str(exc))
    total = sum(size for size, _ in sizes_and_shas)
    counter = _ByteCounter(total, report, cancelled)
    report(PullProgress("download", 0, total))
    files: dict[str, Path] = {}
    for filename, (size, sha) in zip(entry.files, sizes_and_shas, strict=True):
        with quiet_hub_logs():
            files[filename] = _hub_download(entry, filename, endpoint, counter.bar_class())
        counter.finish_file(size)
        _verify(files[filename], sha, entry, endpoint)
    return files


class _Unreachable(Exception):
    """The Hub could not be reached at all (network, DNS, refused, timed out, offline mode)."""


def _file_metadata(entry: CatalogModel, filename: str, endpoint: str) -> tuple[int, str | None]:
    """(size, sha256 or None) of a repo file from one HEAD request with short timeouts and no retries."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    url = hf_hub_url(entry.repo, filename, revision=entry.revision, endpoint=endpoint)
    where = f"the Hugging Face Hub at {endpoint} (HF_ENDPOINT)"
    try:
        meta = get_hf_file_metadata(url, timeout=metadata_timeout(), endpoint=endpoint, retry_on_errors=False)
    except (httpx2.TransportError, OfflineModeIsEnabled) as exc:
        raise _Unreachable(
            f"cannot reach {where}: {_first_line(exc)}; offline? check the network or HF_ENDPOINT"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise PullError(
            f"{where} answered {status} for {entry.repo}/{filename}: {_first_line(exc)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a bad HF_ENDPOINT (no scheme, ...) must stay one line
        raise PullError(f"cannot query {where}: {_first_line(exc)}") from None
    if meta.commit_hash is None or meta.etag is None:
        raise PullError(
            f"{endpoint} (HF_ENDPOINT) does not answer like a Hugging Face Hub (no X-Repo-Commit/ETag)"
        )
    return meta.size or 0, meta.etag if SHA256.fullmatch(meta.etag) else None


def _hub_download(entry: CatalogModel, filename: str, endpoint: str, bar_class: Any) -> Path:
    """hf_hub_download one file with short metadata timeouts; errors become one-line PullErrors."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            entry.repo, filename, revision=entry.revision, cache_dir=hub_cache_dir(), endpoint=endpoint,
            etag_timeout=metadata_timeout(), tqdm_class=bar_class,
        )  # fmt: skip
    except PullCancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - httpx2 and huggingface_hub errors: one line, no traceback
        raise PullError(
            f"download of {entry.repo}/{filename} from {endpoint} (HF_ENDPOINT) failed: {_first_line(exc)}; "
            "nothing was installed, pull again to retry"
        ) from None
    return Path(path)


def _cached_or_fail(entry: CatalogModel, message: str) -> dict[str, Path]:
    """The entry's files from the huggingface_hub cache alone, else PullError(message)."""
    from huggingface_hub import hf_hub_download

    files: dict[str, Path] = {}
    for filename in entry.files:
        try:
            files[filename] = Path(
                hf_hub_download(
                    entry.repo,
                    filename,
                    revision=entry.revision,
                    cache_dir=hub_cache_dir(),
                    local_files_only=True,
                )
            )
        except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError and friends)
            raise PullError(message) from None
    return files


def _verify(path: Path, sha256: str | None, entry: CatalogModel, endpoint: str) -> None:
    """Check a downloaded file against the sha256 the Hub gave; a mismatch removes it from the cache."""
    if sha256 is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path:
            blob.unlink(missing_ok=True)
        raise PullError(
            f"{entry.repo}/{path.name} from {endpoint} (HF_ENDPOINT) is corrupt (sha256 {digest.hexdigest()[:12]}…, "
            f"expected {sha256[:12]}…); it was removed, pull again to retry"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _ByteCounter:
    """Turns huggingface_hub's progress-bar updates into PullProgress reports (at most 20 a second)."""

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

    def bar_class(self) -> Callable[..., Any]:
        """A stand-in for tqdm that hf_hub_download instantiates for each file."""
        counter = self

        class Bar:
            """The tqdm interface hf_hub_download uses: a context manager with update()."""

            def __init__(self, *args: Any, initial: int = 0, **kwargs: Any) -> None:
                counter.add(initial)

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: Any) -> None:
                return None

            def update(self, n: int = 1) -> None:
                counter.add(n)

            def update_transfer(self, n: int = 1) -> None:
                """Xet's network byte count: one bar here, so only the bytes written count."""

            def close(self) -> None:
                return None

        return Bar
