"""Install a model bundle by name in the user models dir, so `--model NAME` and the studio's picker find it.

One function for every way a bundle arrives: `helium models install` (a copy, optionally re-saved in another
dtype), imports and the studio's finished training runs (a link to the run's bundle). The target appears
whole or not at all: it is built under a hidden temporary name and renamed into place; a copy arrives with its
bits per byte on the reference text in its metadata (engine.bundles.reference.record).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.bundles.info import CONFIG, METADATA, PT_WEIGHTS, TOKENIZER, WEIGHTS, is_bundle
from engine.bundles.reference import METADATA_KEY, record
from engine.errors import BundleError
from engine.files import atomic_directory, remove_path
from engine.paths import user_models_dir
from engine.targets import CARDS, CONTROL, check_target

WEIGHT_DTYPES = ("float32", "bfloat16", "int8", "int4")  # what `dtype=` may ask for (None keeps the stored dtype)
BUNDLE_FILES = (CONFIG, WEIGHTS, PT_WEIGHTS, TOKENIZER, METADATA, *CARDS)  # what a plain copy takes along


def check_model_name(name: str) -> str:
    """name if it can be a directory name in the models dir, else ValueError (one line, safe to print)."""
    if CONTROL.search(name):
        raise ValueError(f"{CONTROL.sub('?', name)!r}: not a valid model name (it holds control characters)")
    if not name or not name.strip() or name.startswith(".") or "/" in name or os.sep in name:
        raise ValueError(f"{name!r}: not a valid model name (no slashes, not starting with a dot)")
    if len(name.encode("utf-8", "surrogatepass")) > 200:
        raise ValueError("model name too long (at most 200 bytes)")
    return name


def check_install_target(target: Path, force: bool) -> bool:
    """ValueError unless a bundle may be installed at target in the models dir (see engine.targets); returns
    whether an installed bundle (or a link to one) is replaced. A folder Helium did not write is never replaced."""
    try:
        return check_target(target, force, ("bundle",), links=True)
    except ValueError as exc:
        if str(exc).endswith("use --force to replace it)"):
            raise ValueError(f"{target}: a model named {target.name!r} is already installed (use --force to replace it)") from None
        raise


def validate_bundle(directory: Path) -> None:
    """BundleError unless directory opens as `helium tell` would open it: config, tokenizer, weights header.

    Called on a bundle in its temporary directory, so that nothing that would fail to load is ever installed.
    """
    from engine.bundles.bundle import check_parts

    check_parts(directory)


def installed_path(name: str) -> Path:
    """Where a model of that name lives in the user models dir."""
    return user_models_dir() / check_model_name(name)


def install_bundle(
    source: str | Path,
    name: str,
    *,
    link: bool = False,
    dtype: str | None = None,
    force: bool = False,
    unique: bool = False,
) -> tuple[str, Path]:
    """Install the bundle directory `source` as `name`; returns (installed name, path).

    link: a symlink to source (a copy where links are not possible), else a validated copy.
    dtype: store the weights in float32, bfloat16, int8 (weight-only, one scale per row) or int4 (Q4_0: blocks
    of 32 with one float16 scale; engine.model.quant4), both loading without quantizing again — copies only; None
    keeps them as they are.
    An existing `name` is an error unless force (replace it) or unique (use name-2, name-3, ...);
    installing the same source again as a link is a no-op.
    """
    source = Path(source).expanduser().resolve()
    if not source.is_dir() or not is_bundle(source):
        raise BundleError(f"{source}: not a model bundle directory (no config.json)")
    if dtype is not None and dtype not in WEIGHT_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use {', '.join(WEIGHT_DTYPES)})")
    models = user_models_dir()
    models.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100 if unique else 2):
        candidate = check_model_name(name if n == 1 else f"{name}-{n}")
        target = models / candidate
        exists = target.is_symlink() or target.exists()
        if exists and link and target.resolve() == source:
            return candidate, target
        if not exists or force:
            check_install_target(target, force)
            break
    else:
        if unique:
            raise ValueError(f"too many models named {name}-N in {models}")
        raise ValueError(f"{target}: a model named {name!r} is already installed (use --force to replace it)")
    if link:
        _link(source, target, force)
    else:
        atomic_directory(target, lambda tmp: _copy_bundle(source, tmp, dtype), force=True)
    return candidate, target


def _link(source: Path, target: Path, force: bool) -> None:
    """target -> source as a symlink made under a temporary name and renamed over target (a copy where links
    cannot be made)."""
    tmp = target.with_name(f".{target.name}.installing")
    remove_path(tmp)
    try:
        tmp.symlink_to(source, target_is_directory=True)
    except OSError:
        atomic_directory(target, lambda d: shutil.copytree(source, d, dirs_exist_ok=True), force=force)
        return
    if target.is_dir() and not target.is_symlink():
        remove_path(target)  # os.replace cannot put a link over a directory
    os.replace(tmp, target)


def _copy_bundle(source: Path, tmp: Path, dtype: str | None) -> None:
    """Validate source by loading it, then copy its files (or re-save the weights in dtype); cards travel too."""
    from engine.bundles.bundle import load_bundle, save_bundle
    from engine.generation.runtime import DTYPES

    bundle = load_bundle(source, quantize=dtype if dtype in ("int8", "int4") else "none")  # quantized from floats
    if dtype is None:
        for path in source.iterdir():
            if path.is_file() and path.name in BUNDLE_FILES:
                shutil.copy2(path, tmp / path.name)
    else:
        dropped = ("created_at", "parameters", "quantization", METADATA_KEY)  # the score is measured again
        meta = {k: v for k, v in bundle.metadata.items() if k not in dropped}
        save_bundle(tmp, bundle.model, bundle.tokenizer, meta, weights_dtype=DTYPES.get(dtype))
        for card in CARDS:
            if (source / card).is_file():
                shutil.copy2(source / card, tmp / card)
    validate_bundle(tmp)
    record(tmp)  # its bits per byte on the reference text, in the copy before it is moved into place


def run_bundle_path(run_dir: str | Path, bundle: str | Path) -> Path:
    """A run's bundle as its final event records it: absolute, or relative to the run dir."""
    bundle = Path(bundle)
    return bundle if bundle.is_absolute() else Path(run_dir) / bundle


def install_run_bundle(run_dir: str | Path, bundle: str | Path, name: str | None = None) -> str:
    """Link a finished training run's bundle into the models dir as `name` (default: the run dir's name).

    A name taken by another bundle gets a numeric suffix; installing the same bundle again is a no-op.
    Returns the installed name.
    """
    run_dir = Path(run_dir)
    source = run_bundle_path(run_dir, bundle)
    if not is_bundle(source):
        raise ValueError(f"{source}: the run's bundle is missing")
    return install_bundle(source, name or run_dir.resolve().name, link=True, unique=True)[0]
