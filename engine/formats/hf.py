"""Helium bundles to and from the Hugging Face layout that transformers' `LlamaForCausalLM` loads.

Helium rotates adjacent pairs (x[2i], x[2i+1]); transformers rotates halves (x[i], x[i + D/2]), so q and k
rows are permuted as transformers' own convert_llama_weights_to_hf.py does (and back on import).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from engine.bundles.bundle import Bundle, build_model, load_state_dict, save_bundle
from engine.bundles.info import check_bundle_target
from engine.errors import BundleError
from engine.files import atomic_directory, atomic_write, atomic_write_text
from engine.formats.export_checks import check_parent_writable, refuse_sliding_window, stored_dtype
from engine.formats.hf_card import model_card
from engine.generation.sampling import MODEL_SETTINGS, SamplingParams, model_defaults, recommended
from engine.jsonfile import REQUIRED, JsonFileError, field, need_object, read_json, shown
from engine.model.config import ModelConfig
from engine.model.tokenizer import TextTokenizer, TokenizerFileError
from engine.safe_read import inside
from engine.targets import DIR_KINDS, check_target

HELIUM_SAMPLING = "helium_sampling"  # generation_config.json: every recommended setting, as Helium samples them
HF_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------------------
# Weights


def rope_to_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q or k rows (n_heads·D, C) from adjacent-pair order to transformers' half-split order, per head."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def rope_from_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of rope_to_hf."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def to_hf_state(config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Helium's state dict as LlamaForCausalLM's (q, k, v and gate, up unfused; q/k rows permuted)."""
    q_size, kv_size = config.n_head * config.head_dim, config.kv_heads * config.head_dim
    out = {"model.embed_tokens.weight": state["tok_embeddings.weight"], "model.norm.weight": state["norm.weight"]}
    if not config.tie_embeddings:
        out["lm_head.weight"] = state["output.weight"]
    for i in range(config.n_layer):
        p, h = f"layers.{i}.", f"model.layers.{i}."
        q, k, v = state[p + "attn.wqkv.weight"].split([q_size, kv_size, kv_size])
        gate, up = state[p + "mlp.w13.weight"].chunk(2)
        out[h + "input_layernorm.weight"] = state[p + "attn_norm.weight"]
        out[h + "self_attn.q_proj.weight"] = rope_to_hf(q, config.n_head)
        out[h + "self_attn.k_proj.weight"] = rope_to_hf(k, config.kv_heads)
        out[h + "self_attn.v_proj.weight"] = v
        out[h + "self_attn.o_proj.weight"] = state[p + "attn.wo.weight"]
        out[h + "post_attention_layernorm.weight"] = state[p + "mlp_norm.weight"]
        out[h + "mlp.gate_proj.weight"] = gate
        out[h + "mlp.up_proj.weight"] = up
        out[h + "mlp.down_proj.weight"] = state[p + "mlp.w2.weight"]
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def from_hf_state(config: ModelConfig, hf: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM's state dict as Helium's; BundleError naming the first missing tensor."""

    def get(key: str) -> torch.Tensor:
        if key not in hf:
            raise BundleError(f"{source}: missing tensor {key}")
        return hf[key]

    state = {"tok_embeddings.weight": get("model.embed_tokens.weight"), "norm.weight": get("model.norm.weight")}
    if not config.tie_embeddings:
        state["output.weight"] = get("lm_head.weight")
    for i in range(config.n_layer):
        p, h = f"layers.{i}.", f"model.layers.{i}.self_attn."
        q = rope_from_hf(get(h + "q_proj.weight"), config.n_head)
        k = rope_from_hf(get(h + "k_proj.weight"), config.kv_heads)
        state[p + "attn.wqkv.weight"] = torch.cat([q, k, get(h + "v_proj.weight")])
        state[p + "attn.wo.weight"] = get(h + "o_proj.weight")
        m = f"model.layers.{i}."
        state[p + "attn_norm.weight"] = get(m + "input_layernorm.weight")
        state[p + "mlp_norm.weight"] = get(m + "post_attention_layernorm.weight")
        state[p + "mlp.w13.weight"] = torch.cat([get(m + "mlp.gate_proj.weight"), get(m + "mlp.up_proj.weight")])
        state[p + "mlp.w2.weight"] = get(m + "mlp.down_proj.weight")
    return {k: v.contiguous() for k, v in state.items()}


# ---------------------------------------------------------------------------------------------------------
# Configs


def hf_config(config: ModelConfig, tok: TextTokenizer, dtype: torch.dtype) -> dict:
    """config.json for LlamaForCausalLM (keys read by transformers 4.x and 5.x)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": tok.bos_id,
        "eos_token_id": tok.eos_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }


def config_from_hf(hf: dict, source: Path) -> ModelConfig:
    """The TinySLM config of a LlamaForCausalLM config.json; BundleError (a JsonFileError for a field of the wrong
    kind) for anything Helium cannot run."""
    hf = need_object(hf, source)
    arch = field(hf, "architectures", list, ["LlamaForCausalLM"], source=source)
    model_type = field(hf, "model_type", str, None, source=source)
    if model_type != "llama" or "LlamaForCausalLM" not in arch:
        raise BundleError(f"{source}: not a LlamaForCausalLM model (model_type {model_type!r}, {shown(arch)})")
    act = field(hf, "hidden_act", str, "silu", source=source)
    if act not in ("silu", "swish"):
        raise BundleError(f"{source}: activation {act[:40]!r} is not supported (Helium uses SwiGLU)")
    if field(hf, "attention_bias", bool, False, source=source) or field(hf, "mlp_bias", bool, False, source=source):
        raise BundleError(f"{source}: bias terms in attention or MLP are not supported")
    rope_key = "rope_parameters" if hf.get("rope_parameters") is not None else "rope_scaling"
    rope = field(hf, rope_key, dict, {}, source=source)
    rope_type = field(rope, "rope_type", str, None, source=source, label=f"{rope_key}.rope_type")
    rope_type = rope_type or field(rope, "type", str, "default", source=source, label=f"{rope_key}.type")
    if rope_type != "default":
        raise BundleError(f"{source}: RoPE scaling {rope_type[:40]!r} is not supported")
    big = 1 << 24  # no dimension of a model Helium can run comes near this

    def whole(key: str, default=REQUIRED, low: int = 1) -> int:
        return field(hf, key, int, default, source=source, low=low, high=big)

    d_model, n_head = whole("hidden_size"), whole("num_attention_heads")
    n_kv = whole("num_key_value_heads", n_head)
    if whole("head_dim", d_model // n_head) * n_head != d_model:
        raise BundleError(f"{source}: head_dim × heads ≠ hidden_size is not supported")
    theta = field(hf, "rope_theta", float, 10000.0, source=source)
    try:
        return ModelConfig(
            vocab_size=whole("vocab_size"),
            d_model=d_model,
            n_layer=whole("num_hidden_layers"),
            n_head=n_head,
            n_kv_head=None if n_kv == n_head else n_kv,
            hidden_dim=whole("intermediate_size"),
            context_length=whole("max_position_embeddings", 2048),
            rope_theta=float(field(rope, "rope_theta", float, theta, source=source, label=f"{rope_key}.rope_theta")),
            norm_eps=float(field(hf, "rms_norm_eps", float, 1e-6, source=source)),
            tie_embeddings=field(hf, "tie_word_embeddings", bool, False, source=source),
        )
    except ValueError as exc:
        raise BundleError(f"{source}: unsupported model shape ({exc})") from None


def generation_config(tok: TextTokenizer, config: ModelConfig, p: SamplingParams) -> dict:
    """generation_config.json: the model's recommended sampling p in transformers' keys (top_k 0 = off; its
    repetition penalty counts every token), all of p in HELIUM_SAMPLING for `helium import hf`; stories up to the
    context length."""
    out = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.eos_id, "do_sample": not p.greedy}
    if not p.greedy:  # transformers warns about sampling settings on greedy decoding
        out |= {"temperature": p.temperature, "top_k": p.top_k, "top_p": p.top_p}
    return out | {"repetition_penalty": p.repetition_penalty, "max_length": config.context_length,
                  HELIUM_SAMPLING: {key: getattr(p, key) for key in MODEL_SETTINGS if key != "max_new_tokens"}}


def sampling_from_generation_config(data: dict, source: Path) -> dict:
    """The "sampling" metadata from a generation_config.json: Helium's own (HELIUM_SAMPLING) as written, else
    transformers' temperature, top_k, top_p and repetition_penalty (do_sample false: greedy); {} when it has none.
    JsonFileError (one line) for values Helium cannot sample with."""
    raw = data.get(HELIUM_SAMPLING)
    if raw is None:
        raw = {key: data[key] for key in ("temperature", "top_k", "top_p", "repetition_penalty") if data.get(key) is not None}
        if data.get("do_sample") is False:
            raw["temperature"] = 0.0
    return model_defaults({"sampling": raw}, str(source))


def tokenizer_json(tok: TextTokenizer) -> str:
    """tokenizer.json whose post-processor puts BOS first, so transformers encodes prompts as Helium does."""
    from tokenizers import Tokenizer, processors

    hf = Tokenizer.from_str(tok.hf.to_str())
    if tok.bos_id is not None:
        bos = hf.id_to_token(tok.bos_id)
        hf.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.bos_id)]
        )
    return hf.to_str()


def tokenizer_config(tok: TextTokenizer, config: ModelConfig) -> dict:
    """tokenizer_config.json: a fast tokenizer with the special tokens named, no clean-up of spaces."""
    unk = json.loads(tok.hf.to_str()).get("model", {}).get("unk_token")
    out = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config.context_length,
        "clean_up_tokenization_spaces": False,
    }
    for name, tid in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id)):
        if tid is not None:
            out[name] = tok.hf.id_to_token(tid)
    if unk:
        out["unk_token"] = unk
    return out


# ---------------------------------------------------------------------------------------------------------
# Export and import


def resolve_dtype(dtype: str, bundle: Bundle) -> torch.dtype:
    """The weights dtype for --dtype (auto: as the bundle stores them, so nothing is rounded)."""
    if dtype == "auto":
        return stored_dtype(bundle)
    if dtype not in HF_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use auto, {', '.join(HF_DTYPES)})")
    return HF_DTYPES[dtype]


def check_out_dir(out: Path, force: bool) -> bool:
    """ValueError unless out is absent, an empty directory, or (with force) an earlier export or bundle — never
    a folder of other files or a link (engine.targets); returns whether something is replaced."""
    replace = check_target(out, force, DIR_KINDS)
    check_parent_writable(out)
    return replace


def export_hf(
    bundle: Bundle, out: str | Path, dtype: str = "auto", force: bool = False, repo: str | None = None
) -> Path:
    """Write bundle as a transformers model directory at out; it appears whole (temp dir, then rename).

    repo: the Hub repo it is meant for, named in the model card's examples (default: the bundle's name).
    """
    from safetensors.torch import save_file

    out = Path(out)
    weights_dtype = resolve_dtype(dtype, bundle)
    replace = check_out_dir(out, force)
    config, tok = bundle.config, bundle.tokenizer
    refuse_sliding_window(config, "transformers")
    state = {k: v.to(weights_dtype) for k, v in to_hf_state(config, bundle.model.state_dict()).items()}
    files = {
        "config.json": hf_config(config, tok, weights_dtype),
        "generation_config.json": generation_config(tok, config, recommended(bundle.metadata)),
        "tokenizer_config.json": tokenizer_config(tok, config),
    }

    def write(tmp: Path) -> None:
        atomic_write(tmp / "model.safetensors", lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        for name, data in files.items():
            atomic_write_text(tmp / name, json.dumps(data, indent=2) + "\n")
        atomic_write_text(tmp / "tokenizer.json", tokenizer_json(tok))
        atomic_write_text(tmp / "README.md", model_card(bundle, repo))
        if bundle.path is not None and (bundle.path / "MODEL_CARD.md").is_file():
            shutil.copy2(bundle.path / "MODEL_CARD.md", tmp / "MODEL_CARD.md")

    return atomic_directory(out, write, force=replace)


def import_hf(source: str | Path, out: str | Path, origin: str | None = None, force: bool = False) -> Path:
    """A Helium bundle at out (absent or empty; with force an existing bundle) from a LlamaForCausalLM directory;
    it appears whole.

    origin names where it came from in the bundle's metadata (a Hub repo id; default: the directory).
    """
    source, out = Path(source), Path(out)
    replace = check_bundle_target(out, force)
    check_parent_writable(out)
    config_path = source / "config.json"
    if not (config_path.exists() or config_path.is_symlink()):
        raise BundleError(f"{config_path}: missing (not a transformers model directory)")
    hf = read_json(config_path)
    config = config_from_hf(hf, config_path)
    tok = _read_tokenizer(source, hf)
    if tok.vocab_size != config.vocab_size:
        raise BundleError(
            f"{source}: the tokenizer has {tok.vocab_size} tokens but the model's embedding has {config.vocab_size}"
        )
    hf_state = _read_weights(source)
    dtypes = {v.dtype for v in hf_state.values()}
    model = build_model(config, from_hf_state(config, hf_state, source), source)
    metadata = {"created_by": "helium import hf", "source": origin or str(source), "source_format": "LlamaForCausalLM"}
    sampling = _recommended_sampling(source)
    if sampling:
        metadata["sampling"] = sampling
    weights_dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32  # one stored dtype stays bit for bit
    return atomic_directory(
        out, lambda tmp: save_bundle(tmp, model, tok, metadata, weights_dtype=weights_dtype), force=replace
    )


def _recommended_sampling(source: Path) -> dict:
    """The sampling that source's generation_config.json recommends, as bundle metadata ({} without one)."""
    path = source / "generation_config.json"
    if not _present(path):
        return {}
    return sampling_from_generation_config(need_object(read_json(path, max_bytes=16 << 20), path), path)


def _read_weights(source: Path) -> dict[str, torch.Tensor]:
    """Tensors of model.safetensors, its shards (model.safetensors.index.json) or pytorch_model.bin."""
    index = source / "model.safetensors.index.json"
    if _present(source / "model.safetensors"):
        return load_state_dict(source / "model.safetensors")
    if _present(index):
        state: dict[str, torch.Tensor] = {}
        for shard in shard_files(index):
            state |= load_state_dict(shard)
        return state
    if _present(source / "pytorch_model.bin"):
        return load_state_dict(source / "pytorch_model.bin")
    raise BundleError(f"{source}: no model.safetensors (or shards, or pytorch_model.bin)")


def shard_files(index: Path) -> list[Path]:
    """The weight files that model.safetensors.index.json names, each confined to the index's directory."""
    weight_map = field(need_object(read_json(index, max_bytes=64 << 20), index), "weight_map", dict, source=index)
    names = set()
    for key in weight_map:
        names.add(field(weight_map, key, str, source=index, label=f"weight_map[{key[:40]!r}]"))
    try:
        return [inside(index.parent, name, "weight file") for name in sorted(names)]
    except ValueError as exc:
        raise BundleError(f"{index}: {exc}") from None


def _present(path: Path) -> bool:
    """path exists in any form (a FIFO or a dangling link too, so the reader reports it instead of skipping it)."""
    return path.exists() or path.is_symlink()


def _read_tokenizer(source: Path, hf: dict) -> TextTokenizer:
    """tokenizer.json with BOS/EOS ids from config.json, generation_config.json or tokenizer_config.json."""
    path = source / "tokenizer.json"
    if not _present(path):
        raise BundleError(f"{path}: missing (only fast tokenizers, tokenizer.json, can be imported)")
    ids = {"bos": _token_id(hf, "bos", source / "config.json"), "eos": _token_id(hf, "eos", source / "config.json")}
    for extra in ("generation_config.json", "tokenizer_config.json"):
        if not _present(source / extra):
            continue
        data = need_object(read_json(source / extra, max_bytes=16 << 20), source / extra)
        for key in ids:
            if ids[key] is None:
                ids[key] = _token_id(data, key, source / extra)
    try:
        tok = TextTokenizer.from_file(path, None, None)
    except TokenizerFileError as exc:
        raise BundleError(str(exc)) from None
    tok.bos_id, tok.eos_id = ids["bos"], ids["eos"]
    return tok


def _token_id(data: dict, which: str, source: Path) -> int | None:
    """data's bos/eos_token_id: an id, or the first of a list (transformers allows several EOS ids), or None."""
    key = f"{which}_token_id"
    value = field(data, key, (int, list), None, source=source)
    if isinstance(value, list):
        value = field({key: value[0]}, key, int, source=source, label=f"{key}[0]") if value else None
    if value is not None and value < 0:
        raise JsonFileError(f"{source}: {key} must be a token id (at least 0), got {value}")
    return value
