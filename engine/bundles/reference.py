"""The one reference text every model is scored on (assets/reference/): a bundle's bits per byte on it, measured
when the bundle arrives (`record`: install, import, training's bundle) and read back from its metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.paths import assets_dir

REFERENCE_NAME = "helium-stories.txt"  # sixteen short stories written for Helium (its README)
METADATA_KEY = "reference_eval"  # metadata.json: {"text", "sha256", "bits_per_byte"}
# Models above this many parameters are not measured on arrival (about a minute on 2 CPU cores at this size;
# `helium models list --score` still measures them)
MEASURE_LIMIT = 150_000_000


def reference_path() -> Path:
    """The reference text shipped with Helium."""
    return assets_dir() / "reference" / REFERENCE_NAME


def reference_digest() -> str:
    """The reference text's SHA-256 (hex): a stored score counts only for these exact bytes."""
    return hashlib.sha256(reference_path().read_bytes()).hexdigest()


def stored_score(metadata: dict[str, Any]) -> float | None:
    """The bits per byte metadata records on this reference text, or None (absent, another text, not a number)."""
    entry = metadata.get(METADATA_KEY)
    if not isinstance(entry, dict) or entry.get("text") != REFERENCE_NAME:
        return None
    value = entry.get("bits_per_byte")
    if entry.get("sha256") != reference_digest() or type(value) not in (int, float) or not 0 <= value < 100:
        return None
    return float(value)


def score_model(model: Any, tokenizer: Any) -> dict[str, Any]:
    """Score a loaded model (TinySLM) and its tokenizer on the reference text: the metadata entry."""
    from engine.generation.evaluate import evaluate_text

    result = evaluate_text(model, tokenizer, reference_path().read_text(encoding="utf-8"))
    return {"text": REFERENCE_NAME, "sha256": reference_digest(), "bits_per_byte": round(result.bits_per_byte, 4)}


def measure(bundle_dir: Path) -> dict[str, Any]:
    """Score the bundle at bundle_dir on the reference text (as `load_bundle` opens it, on the CPU, with the
    threads `helium tell` would use for its size; torch's count is put back after): the entry."""
    import torch

    from engine.bundles.bundle import load_bundle
    from engine.generation.threads import apply_threads

    bundle = load_bundle(bundle_dir)
    before = torch.get_num_threads()
    apply_threads(params=bundle.config.parameters)  # one thread for a small model: two on a busy box take 8x longer
    try:
        return score_model(bundle.model, bundle.tokenizer)
    finally:
        torch.set_num_threads(before)


def too_big(parameters: int) -> str | None:
    """Why a model of this size is not measured on arrival, or None when it is measured."""
    if parameters <= MEASURE_LIMIT:
        return None
    return (f"{parameters / 1e6:,.0f}M parameters is over the {MEASURE_LIMIT / 1e6:,.0f}M measured on arrival "
            "(helium models list --score measures it)")  # fmt: skip


def record(bundle_dir: Path) -> str | None:
    """Measure the bundle being built at bundle_dir and add the entry to its metadata.json (before the bundle is
    moved into place, so it arrives with its score or not at all); a score already there for this text is kept.
    Returns a note (one line) when it is not measured: too big (MEASURE_LIMIT)."""
    from engine.bundles.info import METADATA, read_config, read_metadata
    from engine.files import atomic_write_text

    meta = read_metadata(bundle_dir)
    if stored_score(meta) is not None:
        return None
    config, _ = read_config(bundle_dir)
    note = too_big(config.parameters)
    if note is None:
        meta[METADATA_KEY] = measure(bundle_dir)
        atomic_write_text(bundle_dir / METADATA, json.dumps(meta, indent=2) + "\n")
    return note


def arrival_note(bundle_dir: Path) -> str:
    """What to print after a bundle arrived: its bits per byte on the reference text, or why it has none."""
    from engine.bundles.info import read_config, read_metadata

    value = stored_score(read_metadata(bundle_dir))
    if value is not None:
        return f"{value:.4f} bits/byte on the reference text ({REFERENCE_NAME})"
    config, _ = read_config(bundle_dir)
    return f"not scored on the reference text: {too_big(config.parameters) or 'helium models list --score measures it'}"
