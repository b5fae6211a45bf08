"""The one reference text every model is scored on (assets/reference/): a bundle's bits per byte on it, read
back from its metadata when measured on this same text (name and SHA-256 match), else measured now."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from engine.paths import assets_dir

REFERENCE_NAME = "helium-stories.txt"  # sixteen short stories written for Helium (its README)
METADATA_KEY = "reference_eval"  # metadata.json: {"text", "sha256", "bits_per_byte"}


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


def measure(bundle_dir: Path) -> dict[str, Any]:
    """Score the bundle at bundle_dir on the reference text (float32 on the CPU, exact): the metadata entry."""
    from engine.bundles.bundle import load_bundle
    from engine.generation.evaluate import evaluate_text

    bundle = load_bundle(bundle_dir)
    result = evaluate_text(bundle.model, bundle.tokenizer, reference_path().read_text(encoding="utf-8"))
    return {"text": REFERENCE_NAME, "sha256": reference_digest(), "bits_per_byte": round(result.bits_per_byte, 4)}
