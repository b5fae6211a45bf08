"""Files from the Hugging Face Hub (or any mirror at HF_ENDPOINT), fetched so that no answer chooses where we write.

Every name a Hub answers is checked before a byte is written: an ETag must be a sha256 or git sha1 (lowercase hex),
a commit 40 hex, a file name a plain relative path, a size what the caller expects and what the disk holds. Bytes
go to a private temporary folder (0700) inside the huggingface_hub cache, are checked against that hash, then move
to `models--OWNER--NAME/blobs/HASH` with a link at `snapshots/COMMIT/PATH` (the cache's own layout, so `hf cache`
and offline use keep working). Redirects change where bytes come from, never where they go.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import first_line
from engine.safe_read import digest_of
from engine.targets import CONTROL

HEX40 = re.compile(r"[0-9a-f]{40}")  # a git commit, or the git blob sha1 of a small (non-LFS) file
HEX64 = re.compile(r"[0-9a-f]{64}")  # the sha256 of an LFS file
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
METADATA_TIMEOUT_S = 5.0  # connect/read timeout of metadata requests: an unreachable Hub fails fast
DOWNLOAD_TIMEOUT_S = 10.0  # seconds without a byte before a download attempt gives up (then resumes)
RETRIES = 4  # attempts in a row that bring no byte before a download fails


class HubError(OSError):
    """A Hub answer Helium refuses, or a download that failed; one line, and nothing was written."""


class HubUnreachable(HubError):
    """The Hub could not be reached at all (network, DNS, refused, timed out)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Hub repo as the Hub described it, every field checked."""

    repo: str
    path: str  # a plain relative path inside the repo
    commit: str  # 40 hex
    etag: str  # 64 hex (sha256) or 40 hex (git blob sha1)
    size: int  # bytes
    repo_type: str = "model"  # or "dataset" (TinyStories' text for `helium data download`)


def metadata_timeout() -> float:
    """Seconds to wait for the Hub's metadata answer: HF_HUB_ETAG_TIMEOUT when set, else 5."""
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or METADATA_TIMEOUT_S)
    except ValueError:
        return METADATA_TIMEOUT_S


def cache_root() -> Path:
    """The huggingface_hub cache: HF_HUB_CACHE, else HF_HOME/hub (read now), else the library's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def where(endpoint: str) -> str:
    return f"the Hugging Face Hub at {endpoint} (HF_ENDPOINT)"


def shown(value: object) -> str:
    """A value from the network, quoted, short, control characters escaped."""
    text = repr(str(value))
    return text if len(text) <= 80 else text[:77] + "…'"


# ---------------------------------------------------------------------------------------------------------
# Checks


def check_repo(repo: str) -> str:
    """A repo id as the Hub allows them (OWNER/NAME of letters, digits, '.', '_', '-'), else ValueError."""
    if not REPO_ID.fullmatch(repo) or ".." in repo:
        raise ValueError(f"{shown(repo)} is not a Hub repo id (OWNER/NAME)")
    return repo


def check_path(path: object, endpoint: str, repo: str) -> str:
    """A repo file name that is a plain relative path: no '..', no absolute path, backslash or control character."""
    if not isinstance(path, str) or not _plain_path(path):
        raise HubError(
            f"{where(endpoint)} lists a file name Helium will not write in {repo}: {shown(path)}; nothing was written"
        )
    return path


def _plain_path(path: str) -> bool:
    parts = path.split("/")
    return (
        0 < len(path) <= 512
        and "\\" not in path and ":" not in path
        and not CONTROL.search(path)
        and all(part not in ("", ".", "..") for part in parts)
    )  # fmt: skip


def check_commit(commit: object, endpoint: str, repo: str) -> str:
    """A commit hash as the Hub sends it (40 lowercase hex), else HubError."""
    if not isinstance(commit, str) or not HEX40.fullmatch(commit):
        raise HubError(
            f"{where(endpoint)} answered a commit for {repo} that is not a commit hash ({shown(commit)}); "
            "refused, nothing was written"
        )
    return commit


def check_etag(etag: object, endpoint: str, repo: str, path: str) -> str:
    """An ETag as the Hub sends it (sha256 or git sha1, lowercase hex), else HubError."""
    if not isinstance(etag, str) or not (HEX64.fullmatch(etag) or HEX40.fullmatch(etag)):
        raise HubError(
            f"{where(endpoint)} answered an ETag for {repo}/{path} that is not a file hash ({shown(etag)}); "
            "refused, nothing was written"
        )
    return etag


def check_size(remote: RemoteFile, endpoint: str, expected: int | None = None) -> None:
    """HubError when the Hub's size is not the one expected (a catalog's) or more than the cache's disk holds."""
    from engine.hub.catalog import human_bytes

    name = f"{remote.repo}/{remote.path}"
    if expected is not None and remote.size != expected:
        raise HubError(
            f"{where(endpoint)} says {name} is {human_bytes(remote.size)} ({remote.size:,} bytes), but the catalog "
            f"says {human_bytes(expected)} ({expected:,} bytes): a wrong mirror? refused, nothing was written"
        )
    folder = cache_root()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if remote.size > free:
        raise HubError(
            f"{where(endpoint)} says {name} is {human_bytes(remote.size)}, more than the {human_bytes(free)} free "
            f"in {cache_root()}; refused, nothing was written"
        )


# ---------------------------------------------------------------------------------------------------------
# Metadata


def head(repo: str, path: str, revision: str, endpoint: str, repo_type: str = "model") -> RemoteFile:
    """What the Hub says of one file (one HEAD request, short timeouts, no retries), every field checked."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    url = hf_hub_url(repo, path, revision=revision, endpoint=endpoint, repo_type=repo_type)
    try:
        meta = get_hf_file_metadata(url, timeout=metadata_timeout(), endpoint=endpoint, retry_on_errors=False)
    except (httpx2.TransportError, OfflineModeIsEnabled) as exc:
        raise HubUnreachable(
            f"cannot reach {where(endpoint)}: {first_line(exc)}; offline? check the network or HF_ENDPOINT"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise HubError(f"{where(endpoint)} answered {status} for {repo}/{path}: {first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - a bad HF_ENDPOINT (no scheme, ...) must stay one line
        raise HubError(f"cannot query {where(endpoint)}: {first_line(exc)}") from None
    if meta.commit_hash is None or meta.etag is None or meta.size is None:
        raise HubError(
            f"{endpoint} (HF_ENDPOINT) does not answer like a Hugging Face Hub (no X-Repo-Commit, ETag or size)"
        )
    commit = check_commit(meta.commit_hash, endpoint, repo)
    if type(meta.size) is not int or meta.size < 0:
        raise HubError(f"{where(endpoint)} answered a size for {repo}/{path} that is not a size ({shown(meta.size)}); "
                       "refused, nothing was written")  # fmt: skip
    return RemoteFile(repo, path, commit, check_etag(meta.etag, endpoint, repo, path), meta.size, repo_type)


# ---------------------------------------------------------------------------------------------------------
# The cache


def repo_dir(repo: str) -> Path:
    """The repo's folder in the huggingface_hub cache (models--OWNER--NAME)."""
    return cache_root() / ("models--" + check_repo(repo).replace("/", "--"))


def cached(repo: str, revision: str, path: str) -> Path | None:
    """A file already in the cache for this revision, intact (its hash checked), else None. Reads only."""
    folder = repo_dir(repo)
    commit = revision
    if not HEX40.fullmatch(revision):
        try:
            commit = (folder / "refs" / revision).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
    if not HEX40.fullmatch(commit) or not _plain_path(path):
        return None
    pointer = folder / "snapshots" / commit / path
    if not pointer.is_file():
        return None
    blob = pointer.resolve()
    hashed = HEX64.fullmatch(blob.name) or HEX40.fullmatch(blob.name)
    return None if hashed and _digest(blob, blob.name, blob.stat().st_size) != blob.name else pointer


def remember(repo: str, revision: str, commit: str) -> None:
    """Record that `revision` (a branch or tag) is at `commit`, as huggingface_hub does (refs/REVISION)."""
    from engine.files import atomic_write_text

    if revision != commit and _plain_path(revision):
        atomic_write_text(_inside(repo_dir(repo), "refs", revision), commit)


def fetch(remote: RemoteFile, endpoint: str, on_bytes: Callable[[int], None]) -> Path:
    """The file in the cache (downloaded unless an intact copy is there); on_bytes(n) as bytes arrive."""
    folder = repo_dir(remote.repo)
    blob = _inside(folder, "blobs", remote.etag)
    intact = blob.is_file() and blob.stat().st_size == remote.size
    if not (intact and _digest(blob, remote.etag, remote.size) == remote.etag):
        blob.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".helium-download-", dir=folder) as private:  # mode 0700
            part = Path(private) / "part"
            _download(remote, endpoint, part, on_bytes)
            digest = _digest(part, remote.etag, remote.size)
            if digest != remote.etag:
                kind = "sha256" if len(remote.etag) == 64 else "sha1"
                raise HubError(
                    f"{remote.repo}/{remote.path} from {endpoint} (HF_ENDPOINT) is corrupt ({kind} {digest[:12]}…, "
                    f"expected {remote.etag[:12]}…); nothing was kept, pull again to retry"
                )
            os.replace(part, blob)
    pointer = _inside(folder, "snapshots", remote.commit, *remote.path.split("/"))
    pointer.parent.mkdir(parents=True, exist_ok=True)
    link = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(blob, pointer.parent), link)
    os.replace(link, pointer)
    return pointer


def fetch_into(remote: RemoteFile, dest: Path, endpoint: str, on_bytes: Callable[[int], None]) -> Path:
    """The file at dest, a name Helium chose in a folder of the user's (`helium data download`): downloaded unless
    an intact copy is there, resumed across runs from a partial file beside it (`.NAME.ETAG16.part`, a name made
    of checked parts), hash-checked before it takes dest's name. Nothing else in the folder is touched."""
    if dest.is_file() and dest.stat().st_size == remote.size and _digest(dest, remote.etag, remote.size) == remote.etag:
        return dest
    part = dest.with_name(f".{dest.name}.{remote.etag[:16]}.part")
    _download(remote, endpoint, part, on_bytes, resume=True)
    digest = _digest(part, remote.etag, remote.size)
    if digest != remote.etag:
        part.unlink()
        raise HubError(f"{remote.repo}/{remote.path} from {endpoint} (HF_ENDPOINT) is corrupt ({digest[:12]}…, "
                       f"expected {remote.etag[:12]}…); nothing was kept, download again to retry")  # fmt: skip
    os.replace(part, dest)
    return dest


def _inside(root: Path, *parts: str) -> Path:
    """root/parts, refusing (HubError) anything that would not stay inside root; every part is checked already."""
    path = root.joinpath(*parts)
    if os.path.commonpath([os.path.normpath(root), os.path.normpath(path)]) != os.path.normpath(root):
        raise HubError(f"refusing to write {shown(path)} outside {root}")
    return path


def _digest(path: Path, etag: str, size: int) -> str:
    """sha256 of the file's bytes (a 64-hex ETag), or its git blob sha1 (a 40-hex one)."""
    digest = hashlib.sha256() if len(etag) == 64 else hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        return digest_of(f, digest)


# ---------------------------------------------------------------------------------------------------------
# The download


def _download(
    remote: RemoteFile, endpoint: str, part: Path, on_bytes: Callable[[int], None], resume: bool = False
) -> None:
    """Write the file's bytes to part: resume after a dropped connection (and, with resume, from what part already
    holds), never more bytes than the Hub said. part is never a link (O_NOFOLLOW)."""
    import httpx2

    fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | (0 if resume else os.O_TRUNC), 0o666)
    with os.fdopen(fd, "r+b") as out:
        done = out.seek(0, os.SEEK_END)
        if done > remote.size:  # not a prefix of this file: start over
            out.truncate(0)
            done = out.seek(0)
        if done:
            on_bytes(done)
        idle = 0
        while done < remote.size:
            before, reason = done, "the connection closed early"
            try:
                done = _attempt(remote, endpoint, out, done, on_bytes)
            except httpx2.TransportError as exc:
                reason, done = first_line(exc), out.tell()  # the bytes that did arrive count
            idle = 0 if done > before else idle + 1
            if idle > RETRIES:
                raise HubError(
                    f"download of {remote.repo}/{remote.path} from {endpoint} (HF_ENDPOINT) failed: {reason}; "
                    "nothing was installed, pull again to retry"
                )
            if done < remote.size and idle:
                time.sleep(min(0.25 * idle, 1.0))


def _attempt(remote: RemoteFile, endpoint: str, out, done: int, on_bytes: Callable[[int], None]) -> int:
    """One GET (a Range from `done` when resuming); returns the bytes written so far."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session

    url = hf_hub_url(remote.repo, remote.path, revision=remote.commit, endpoint=endpoint, repo_type=remote.repo_type)
    headers = {**build_hf_headers(), "Accept-Encoding": "identity"}
    if done:
        headers["Range"] = f"bytes={done}-"
    with get_session().stream(
        "GET", url, headers=headers, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_S
    ) as response:
        start = _start(response, remote, endpoint, done)
        if start != done:  # the server ignored the Range: start over
            out.seek(0)
            out.truncate()
            on_bytes(-done)
            done = 0
        for chunk in response.iter_raw():  # as the bytes arrive, not in 10 MB blocks
            if done + len(chunk) > remote.size:
                raise HubError(
                    f"{where(endpoint)} sent more than the {remote.size:,} bytes it said {remote.repo}/{remote.path} "
                    "has; refused, nothing was written"
                )
            out.write(chunk)
            done += len(chunk)
            on_bytes(len(chunk))
    return done


def _start(response, remote: RemoteFile, endpoint: str, done: int) -> int:
    """Where this response's body starts in the file; HubError for an error status or a size that disagrees."""
    name = f"{remote.repo}/{remote.path}"
    if response.status_code not in (200, 206):
        raise HubError(f"{where(endpoint)} answered {response.status_code} for {name}")
    start = 0
    if response.status_code == 206:
        match = re.fullmatch(r"bytes (\d+)-\d+/\d+", response.headers.get("Content-Range", ""))
        start = int(match.group(1)) if match else -1
        if start != done:
            raise HubError(f"{where(endpoint)} answered a range of {name} that was not asked for")
    length = response.headers.get("Content-Length")
    if length is not None and response.headers.get("Content-Encoding", "identity") == "identity":
        if not length.isdigit() or int(length) != remote.size - start:
            raise HubError(
                f"{where(endpoint)} sends {shown(length)} bytes of {name}, but said it has {remote.size - start:,}; "
                "refused, nothing was written"
            )
    return start

