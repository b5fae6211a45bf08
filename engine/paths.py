"""Where Helium keeps the user's things: the data dir and its models/, runs/, stories/ and data/ folders.

Torch-free, so commands that only look up paths start fast.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_data_dir() -> Path:
    """Helium's data directory (HELIUM_HOME overrides, for tests and portable installs)."""
    override = os.environ.get("HELIUM_HOME")
    if override:
        return Path(override)
    import platformdirs  # here, not at the top: the trainer and benchmarks run where it is not installed

    return Path(platformdirs.user_data_dir("helium", appauthor=False))


def user_cache_dir() -> Path:
    """Files Helium can rebuild (compiled kernels): HELIUM_CACHE, else HELIUM_HOME/cache, else the platform's."""
    if os.environ.get("HELIUM_CACHE"):
        return Path(os.environ["HELIUM_CACHE"])
    override = os.environ.get("HELIUM_HOME")
    if override:
        return Path(override) / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("helium", appauthor=False))


def user_models_dir() -> Path:
    """Where trained and imported bundles are installed by name."""
    return user_data_dir() / "models"


def user_runs_dir() -> Path:
    """Where the studio puts the training runs it starts."""
    return user_data_dir() / "runs"


def user_stories_dir() -> Path:
    """The story library."""
    return user_data_dir() / "stories"


def assets_dir() -> Path:
    """The bundles shipped inside the package."""
    import assets

    return Path(assets.__file__).parent
