"""`helium data download`: fetch TinyStories text files from the Hugging Face Hub.

Reachability is checked first with a short timeout, so an offline machine fails in seconds with a hint.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from engine.errors import first_line
from engine.targets import check_folder

REPO = "roneneldan/TinyStories"
VARIANTS = {
    "v2": ("TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt"),
    "v1": ("TinyStories-train.txt", "TinyStories-valid.txt"),
}
DEFAULT_ENDPOINT = "https://huggingface.co"
CHECK_TIMEOUT_S = 5.0  # how long the reachability check waits


def endpoint() -> str:
    """The Hub address (HF_ENDPOINT overrides, as in huggingface_hub)."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def default_out() -> Path:
    """Where downloads go by default: `<user data dir>/data/tinystories`."""
    from engine.paths import user_data_dir

    return user_data_dir() / "data" / "tinystories"


def check_reachable(url: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise OSError with a one-line hint when url cannot be reached (any HTTP answer counts as reachable)."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OSError(
            f"cannot reach {url} ({reason}); offline? use local files instead: "
            "`helium data prepare your.txt --out DIR`"
        ) from None


def download(variant: str = "v2", out: Path | None = None) -> list[Path]:
    """Download the train and valid files of a variant into out; return their paths (a partial file resumes, in
    this run or the next).

    out may hold other files (only the variant's two names and their partial files are written); ValueError for
    a link, a file or a path with control characters. Helium downloads them itself (engine.hub.files): the Hub's
    answers (ETag, commit, size) are checked before a byte is written, and each file's hash before it is named."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (choose from {', '.join(VARIANTS)})")
    out = check_folder(Path(out) if out else default_out())  # before any request
    hub = endpoint()
    check_reachable(hub)
    from engine.hub.files import HubError, fetch_into, head

    paths = []
    for filename in VARIANTS[variant]:
        try:  # every answer checked before a byte is written; see engine.hub.files
            remote = head(REPO, filename, "main", hub, repo_type="dataset")
            out.mkdir(parents=True, exist_ok=True)
            paths.append(fetch_into(remote, out / filename, hub, lambda n: None))
        except HubError as exc:
            raise OSError(f"download of {filename} from {hub} failed: {first_line(exc, 10_000)}") from None
    return paths
