"""The Hugging Face Hub, the few ways Helium talks to it: its address, quiet logs, pushing and downloading exports.

Torch-free; huggingface_hub is imported inside the calls. `engine.hub.pull` (the model catalog) and
`engine.formats.hf` (export and import) share it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import BundleError

DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_FILES = [  # what `import hf` downloads from a Hub repo
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
]  # fmt: skip


def hub_endpoint() -> str:
    """The Hub's address: HF_ENDPOINT read now (so a value set after import counts), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def check_token() -> None:
    """BundleError unless a Hub token is available (HF_TOKEN or a saved login)."""
    from huggingface_hub import get_token

    if not get_token():
        raise BundleError("no Hugging Face token: set HF_TOKEN (or run `hf auth login`) to push")


def push_to_hub(directory: str | Path, repo: str) -> str:
    """Upload an exported directory to the Hub repo (created if needed); returns the repo's URL.

    The token comes from the environment (HF_TOKEN) or `hf auth login`; every failure is one BundleError line.
    """
    from huggingface_hub import HfApi

    endpoint = hub_endpoint()
    check_token()
    api = HfApi(endpoint=endpoint)
    try:
        with quiet_hub_logs():
            url = api.create_repo(repo, exist_ok=True)
            api.upload_folder(folder_path=str(directory), repo_id=repo, commit_message="Upload a Helium model")
    except Exception as exc:  # noqa: BLE001 - network, auth and HTTP errors all become one line
        raise BundleError(f"cannot push to {repo} on {endpoint} (HF_ENDPOINT): {_reason(exc)}") from None
    return str(url)


def download_from_hub(repo: str) -> Path:
    """A local snapshot of a Hub repo's config, tokenizer and safetensors weights (in huggingface_hub's cache).

    The listing's commit and file names and every file's hash and size are checked before a byte is written
    (engine.hub.files); any failure is one BundleError line.
    """
    from engine.hub.files import HubError, HubUnreachable, check_repo

    endpoint = hub_endpoint()
    try:
        check_repo(repo)
        return _snapshot(repo, endpoint)
    except HubUnreachable as exc:
        raise BundleError(f"cannot download {repo} from {endpoint} (HF_ENDPOINT): {exc}") from None
    except (HubError, ValueError) as exc:
        raise BundleError(f"cannot download {repo}: {exc}") from None


def _snapshot(repo: str, endpoint: str) -> Path:
    """List the repo at main, fetch the files `import hf` reads at that commit; the snapshot folder."""
    from fnmatch import fnmatchcase

    from engine.hub.files import HubError, check_size, fetch, head, remember, repo_dir

    commit, names = _listing(repo, endpoint)
    wanted = [n for n in names if "/" not in n and any(fnmatchcase(n, pattern) for pattern in HUB_FILES)]
    if "config.json" not in wanted:
        raise HubError(f"{repo} on {endpoint} (HF_ENDPOINT) has no config.json: not a transformers model repo")
    remotes = [head(repo, name, commit, endpoint) for name in wanted]
    for remote in remotes:
        if remote.commit != commit:
            raise HubError(f"{endpoint} (HF_ENDPOINT) answered commit {remote.commit[:12]} for {repo}/{remote.path}, "
                           f"but listed the repo at {commit[:12]}; refused, nothing was written")  # fmt: skip
        check_size(remote, endpoint)
    for remote in remotes:
        fetch(remote, endpoint, lambda n: None)
    remember(repo, "main", commit)
    return repo_dir(repo) / "snapshots" / commit


def _listing(repo: str, endpoint: str) -> tuple[str, list[str]]:
    """The commit of the repo's main branch and its file names, each checked (engine.hub.files)."""
    import httpx2
    from huggingface_hub import HfApi

    from engine.hub.files import HubError, HubUnreachable, check_commit, check_path, metadata_timeout, where

    try:
        with quiet_hub_logs():
            info = HfApi(endpoint=endpoint).model_info(repo, revision="main", timeout=metadata_timeout())
    except httpx2.TransportError as exc:
        raise HubUnreachable(f"{_reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - missing repo, HTTP errors, a non-Hub answer: one line
        raise HubError(f"{where(endpoint)} answered: {_reason(exc)}") from None
    commit = check_commit(info.sha, endpoint, repo)
    names = [check_path(getattr(s, "rfilename", None), endpoint, repo) for s in info.siblings or []]
    return commit, names


@contextmanager
def quiet_hub_logs() -> Iterator[None]:
    """Silence huggingface_hub's retry warnings, so a failure stays one line."""
    log = logging.getLogger("huggingface_hub")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _reason(exc: BaseException) -> str:
    """One line: the error's type and first line, and a hint when the Hub could not be reached at all."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
    unreachable = ("ConnectError", "ConnectTimeout", "Connection refused", "timed out", "LocalEntryNotFound")
    return line + ("; offline? check the network or HF_ENDPOINT" if any(u in line for u in unreachable) else "")
