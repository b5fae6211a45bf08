"""What a model bundle directory holds, read without torch: file names, config.json and metadata.json.

A bundle is `config.json` + `model.safetensors` + `tokenizer.json` + `metadata.json` (docs/INTERFACES.md);
`engine.bundles.bundle` loads and saves the weights, this module only reads the small JSON files.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import BundleError, first_line
from engine.generation.sampling import model_defaults
from engine.jsonfile import JsonFileError, field, need_object, read_json
from engine.model.config import ModelConfig

CONFIG, WEIGHTS, TOKENIZER, METADATA = "config.json", "model.safetensors", "tokenizer.json", "metadata.json"
PT_WEIGHTS = "model.pt"  # the model card's plain PyTorch state dict, accepted instead of safetensors
FORMAT = "helium-bundle/1"


FORMAT_NAME, FORMAT_MAJOR = FORMAT.split("/")  # a bundle of another major version is refused, not guessed at
HF_KEYS = ("model_type", "architectures", "transformers_version")  # a transformers config.json has these


def read_config(directory: Path) -> tuple[ModelConfig, dict]:
    """Parse config.json into the model config and the raw dict (format, start/end token ids checked too)."""
    path = directory / CONFIG
    if not (path.exists() or path.is_symlink()):
        raise BundleError(f"{path}: missing (not a Helium model bundle)")
    raw = need_object(read_json(path), path)
    _check_format(raw, path)
    if "model" not in raw and any(key in raw for key in HF_KEYS):
        raise BundleError(
            f"{directory}: a transformers (Hugging Face) model directory, not a Helium bundle; "
            f"import it first: helium import hf {directory} --name NAME"
        )
    model = field(raw, "model", dict, source=path)
    try:
        config = ModelConfig.from_dict(model)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{path}: bad model config ({first_line(exc)})") from None
    for key in ("bos_token_id", "eos_token_id"):
        field(raw, key, int, None, source=path, low=0, high=config.vocab_size - 1)
    return config, raw


def _check_format(raw: dict, path: Path) -> None:
    """BundleError unless "format" is absent or helium-bundle/<the major version this Helium reads>[.minor]."""
    fmt = field(raw, "format", str, None, source=path)
    if fmt is None:
        return
    name, _, version = fmt.partition("/")
    if name != FORMAT_NAME:
        raise BundleError(f"{path}: format {fmt[:40]!r} is not a Helium bundle ({FORMAT})")
    if version.split(".")[0] != FORMAT_MAJOR:
        raise BundleError(
            f"{path}: format {fmt[:40]!r} is a bundle version this Helium cannot read (it reads {FORMAT}); "
            "update Helium or re-export the model"
        )


# The metadata keys Helium reads back, and what each must be; a value of another kind is dropped (metadata only
# informs, so a wrong one never makes a model unusable), other keys are kept as they are.
METADATA_KINDS: dict[str, type | tuple[type, ...]] = {
    "parameters": int, "steps": int, "tokens": int, "val_loss": float, "wall_time_s": float,
    "eval_valid_txt": dict, "license": str, "data": str, "preset": str, "base_model": dict, "created_by": str,
    "created_at": str, "source": str, "hardware": str, "prepared_with": str, "train_command": str,
    "quantization": str, "end_token": str,
}  # fmt: skip


def read_metadata(directory: Path) -> dict:
    """metadata.json as a dict ({} when absent, unreadable or not an object; known keys of the wrong kind
    dropped, see METADATA_KINDS)."""
    try:
        meta = read_json(directory / METADATA)
    except JsonFileError:
        return {}
    if not isinstance(meta, dict):
        return {}
    clean = {}
    for key, value in meta.items():
        try:
            if key in METADATA_KINDS:
                field(meta, key, METADATA_KINDS[key], source=METADATA)
            if key == "sampling":  # recommended settings: all checked, or none kept
                model_defaults(meta, METADATA)
            clean[key] = value
        except JsonFileError:
            continue
    return clean


def is_bundle(directory: Path) -> bool:
    """True when directory looks like a bundle (it has a config.json)."""
    return directory.joinpath(CONFIG).is_file()


def check_bundle_target(out_dir: Path, force: bool = False) -> bool:
    """Where an importer may write a new bundle: out_dir absent or an empty directory, or with force something
    Helium wrote there (a bundle or an export; never a folder of other files, never a link); else BundleError.
    Returns whether something is replaced (engine.targets has the rules)."""
    from engine.targets import DIR_KINDS, check_target

    try:
        return check_target(out_dir, force, DIR_KINDS)
    except ValueError as exc:
        raise BundleError(str(exc)) from None
