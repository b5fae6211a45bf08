"""Write a Helium bundle as one GGUF file for llama.cpp and Ollama, with the PyPI `gguf` package.

llama.cpp's `llama` architecture rotates adjacent pairs (x[2i], x[2i+1]) like Helium, so q and k keep their
rows; its tokenizer is embedded as `gpt2` (byte-level BPE) or `llama` (llama2.c's sentencepiece-style BPE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.bundles.bundle import Bundle, stored_quantization
from engine.errors import BundleError
from engine.files import WriteError, atomic_write
from engine.formats.export_checks import check_parent_writable, refuse_sliding_window, stored_dtype
from engine.generation.sampling import MODEL_SETTINGS, SamplingParams, recommended
from engine.model.config import ModelConfig
from engine.targets import check_target

GGUF_DTYPES = ("auto", "f32", "f16", "bf16", "q8_0", "q4_0")  # what --dtype may ask for; auto = as the bundle stores it
PRE_TOKENIZER = "gpt-2"  # llama.cpp's name for GPT-2's split regex, the one HF's ByteLevel pre-tokenizer uses
SPACE = "▁"  # sentencepiece's visible space


@dataclass(frozen=True)
class GGUFVocab:
    """A tokenizer as llama.cpp stores it: its model name, tokens in id order, types and merges or scores."""

    model: str  # "gpt2" (byte-level BPE, merges) or "llama" (sentencepiece-style, scores)
    tokens: list[str]
    types: list[int]  # gguf.TokenType values
    merges: list[str]  # "left right", rank order (gpt2 only)
    scores: list[float]  # higher merges first (llama only)
    unk_id: int | None


# ---------------------------------------------------------------------------------------------------------
# Tokenizer


def gguf_vocab(hf_json: str) -> GGUFVocab:
    """The llama.cpp form of an HF tokenizer.json; BundleError for kinds llama.cpp cannot reproduce."""
    import gguf

    data = json.loads(hf_json)
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise BundleError(f"a {model.get('type')} tokenizer has no llama.cpp equivalent (only BPE)")
    vocab: dict[str, int] = dict(model["vocab"])
    for added in data.get("added_tokens") or []:
        vocab[added["content"]] = added["id"]
    ids = sorted(vocab.values())
    if ids != list(range(len(ids))):
        raise BundleError("the tokenizer's ids are not contiguous from 0")
    tokens = [""] * len(ids)
    for text, i in vocab.items():
        tokens[i] = text
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    special = {a["id"] for a in data.get("added_tokens") or [] if a.get("special")}
    user = {a["id"] for a in data.get("added_tokens") or [] if not a.get("special")}
    if _is_byte_level(data):
        types = [
            gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if i in user else gguf.TokenType.NORMAL
            for i in range(len(tokens))
        ]
        return GGUFVocab("gpt2", tokens, [int(t) for t in types], merges, [], None)
    if _is_sentencepiece_style(data):
        unk = vocab.get(model.get("unk_token") or "")
        types = []
        for i, text in enumerate(tokens):
            if i == unk:
                types.append(gguf.TokenType.UNKNOWN)
            elif text.startswith("<0x") and len(text) == 6 and text.endswith(">"):
                types.append(gguf.TokenType.BYTE)
            elif i in special or (text.startswith("<") and text.endswith(">") and text in ("<s>", "</s>")):
                types.append(gguf.TokenType.CONTROL)
            else:
                types.append(gguf.TokenType.NORMAL)
        return GGUFVocab("llama", tokens, [int(t) for t in types], [], merge_scores(tokens, merges), unk)
    pre = (data.get("pre_tokenizer") or {}).get("type")
    raise BundleError(
        f"this tokenizer (BPE with a {pre} pre-tokenizer) has no llama.cpp equivalent: GGUF export supports "
        "byte-level BPE (Helium's own) and llama2.c's sentencepiece-style BPE"
    )


def _is_byte_level(data: dict) -> bool:
    """HF ByteLevel pre-tokenizer with GPT-2's regex and no prefix space: llama.cpp's gpt2 + gpt-2 split."""
    pre = data.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return (
        len(parts) == 1
        and parts[0].get("type") == "ByteLevel"
        and parts[0].get("use_regex", True)
        and not parts[0].get("add_prefix_space", False)
        and data.get("normalizer") is None
    )


def _is_sentencepiece_style(data: dict) -> bool:
    """llama2.c's layout (engine.formats.llama2c): byte fallback, ▁ for spaces, a dummy-prefix space, no pre-tokenizer."""
    norm = data.get("normalizer") or {}
    steps = norm.get("normalizers", []) if norm.get("type") == "Sequence" else [norm]
    kinds = [(s.get("type"), s.get("prepend") or (s.get("content"))) for s in steps]
    return (
        (data.get("model") or {}).get("byte_fallback", False)
        and data.get("pre_tokenizer") is None
        and ("Prepend", SPACE) in kinds
        and any(s.get("type") == "Replace" for s in steps)
    )


def merge_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """Sentencepiece scores under which llama.cpp's merge loop replays the HF merges' order.

    llama.cpp (like llama2.c's run.c) merges the adjacent pair whose joined token scores highest, the
    leftmost on a tie. A token's score is minus the rank of its first merge. Tokens whose merges interleave
    in the list (engine.formats.llama2c ranks tokens of equal score by their split, e.g. Llama's runs of spaces)
    had equal scores, so they share one again and llama.cpp breaks their ties leftmost, as run.c does.
    Tokens no merge produces score below every merge (they are never built from pairs).
    """
    index = {t: i for i, t in enumerate(tokens)}
    order: list[int] = []  # token ids in the order their first merge appears
    first: dict[int, int] = {}  # token id -> position in order
    tie_from: dict[int, int] = {}  # position where a group of equal scores starts -> where it ends
    for merge in merges:
        left, _, right = merge.partition(" ")
        tid = index.get(left + right)
        if tid is None:
            continue
        if tid not in first:
            first[tid] = len(order)
            order.append(tid)
        elif order[-1] != tid:  # seen before, with other tokens since: all of them tie
            start = first[tid]
            tie_from[start] = len(order) - 1
    group = list(range(len(order)))  # position -> the position whose score it shares
    for start in sorted(tie_from):
        end = tie_from[start]
        for pos in range(start, end + 1):
            group[pos] = min(group[pos], group[start])
    scores = [-float(len(order) + 1)] * len(tokens)
    for pos, tid in enumerate(order):
        scores[tid] = -float(group[pos])
    return scores


# ---------------------------------------------------------------------------------------------------------
# Weights


def gguf_tensors(config: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Helium's state dict as llama.cpp's tensors (float32 numpy, PyTorch shapes); q/k rows stay as they are."""
    q_size, kv_size = config.n_head * config.head_dim, config.kv_heads * config.head_dim
    hidden = config.hidden_dim

    def arr(key: str) -> np.ndarray:
        return state[key].detach().to("cpu", torch.float32).contiguous().numpy()

    out = {"token_embd.weight": arr("tok_embeddings.weight"), "output_norm.weight": arr("norm.weight")}
    if not config.tie_embeddings:
        out["output.weight"] = arr("output.weight")
    for i in range(config.n_layer):
        p, b = f"layers.{i}.", f"blk.{i}."
        wqkv, w13 = arr(p + "attn.wqkv.weight"), arr(p + "mlp.w13.weight")
        out[b + "attn_norm.weight"] = arr(p + "attn_norm.weight")
        out[b + "attn_q.weight"] = wqkv[:q_size]
        out[b + "attn_k.weight"] = wqkv[q_size : q_size + kv_size]
        out[b + "attn_v.weight"] = wqkv[q_size + kv_size :]
        out[b + "attn_output.weight"] = arr(p + "attn.wo.weight")
        out[b + "ffn_norm.weight"] = arr(p + "mlp_norm.weight")
        out[b + "ffn_gate.weight"] = w13[:hidden]
        out[b + "ffn_up.weight"] = w13[hidden:]
        out[b + "ffn_down.weight"] = arr(p + "mlp.w2.weight")
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _file_type(dtype: str):
    import gguf

    return {
        "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
        "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
        "q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),  # = Helium's int4 (quant4.py)
    }[dtype]


def _encode(array: np.ndarray, qtype):
    """(data, raw_dtype) for GGUFWriter.add_tensor: norms stay float32, rows not in whole blocks fall to F16."""
    import gguf

    if array.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32), None
    if qtype == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16), None
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        return array.astype(np.float16), None
    return gguf.quants.quantize(array, qtype), qtype


# ---------------------------------------------------------------------------------------------------------
# Export


def resolve_dtype(dtype: str, bundle: Bundle) -> str:
    """f32/f16/bf16/q8_0/q4_0 for a --dtype value; auto keeps the precision the bundle stores."""
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (use {', '.join(GGUF_DTYPES)})")
    if dtype != "auto":
        return dtype
    if bundle.path is not None and stored_quantization(bundle.path) == "int4":
        return "q4_0"  # an int4 bundle's blocks, exactly (quantizing their values again gives the same blocks)
    return {torch.bfloat16: "bf16", torch.float16: "f16"}.get(stored_dtype(bundle), "f32")


def check_output(out: Path, force: bool) -> None:
    """ValueError/OSError unless out can be written: absent, or with force a GGUF file (never another file, a
    directory or a link: engine.targets), in a writable folder."""
    check_target(out, force, ("gguf",), directory=False)
    check_parent_writable(out)


def export_gguf(bundle: Bundle, out: str | Path, dtype: str = "auto", force: bool = False) -> Path:
    """Write bundle as a GGUF file at out (written to a temp file, then renamed; never half a file)."""
    import gguf

    out = Path(out)
    dtype = resolve_dtype(dtype, bundle)
    check_output(out, force)
    config = bundle.config
    refuse_sliding_window(config, "GGUF")
    vocab = gguf_vocab(bundle.tokenizer.hf.to_str())
    if len(vocab.tokens) != config.vocab_size:
        raise BundleError(f"the tokenizer has {len(vocab.tokens)} tokens but the model has {config.vocab_size}")
    tensors = gguf_tensors(config, bundle.model.state_dict())
    qtype, file_type = _file_type(dtype)

    def write(path: Path) -> None:
        writer = gguf.GGUFWriter(str(path), "llama")
        _add_metadata(writer, bundle, vocab, file_type)
        for name, array in tensors.items():
            data, raw = _encode(array, qtype)
            writer.add_tensor(name, data, raw_dtype=raw)
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()

    try:
        return atomic_write(out, write)  # a full disk: WriteError naming the file and the room left
    except WriteError:
        raise
    except OSError as exc:
        raise OSError(f"{out}: cannot write ({exc.strerror or exc})") from None


def _add_metadata(writer, bundle: Bundle, vocab: GGUFVocab, file_type) -> None:
    """Architecture keys (llama.*), general.*, and the tokenizer (tokenizer.ggml.*)."""
    import gguf

    cfg = bundle.config
    writer.add_name(bundle.name)
    writer.add_description(f"Helium story model ({bundle.metadata.get('data', 'TinyStories')})")
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.n_layer)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.n_head)
    writer.add_head_count_kv(cfg.kv_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(float(cfg.rope_theta))
    writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tokenizer_model(vocab.model)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.model == "gpt2":
        writer.add_tokenizer_pre(PRE_TOKENIZER)
        writer.add_token_merges(vocab.merges)
    else:
        writer.add_token_scores(vocab.scores)
        writer.add_add_space_prefix(True)
        if vocab.unk_id is not None:
            writer.add_unk_token_id(vocab.unk_id)
    tok = bundle.tokenizer
    if tok.bos_id is not None:
        writer.add_bos_token_id(tok.bos_id)
    if tok.eos_id is not None:
        writer.add_eos_token_id(tok.eos_id)
    writer.add_add_bos_token(tok.bos_id is not None)
    writer.add_add_eos_token(False)
    _add_sampling(writer, recommended(bundle.metadata))


# llama.cpp's keys for a model's recommended sampling (read at load since its PR 17120; gguf-py Keys.General)
SAMPLING_KEYS = {"temperature": "general.sampling.temp", "top_k": "general.sampling.top_k",
                 "top_p": "general.sampling.top_p", "repetition_penalty": "general.sampling.penalty_repeat",
                 "repeat_last_n": "general.sampling.penalty_last_n"}  # fmt: skip


def _add_sampling(writer, p: SamplingParams) -> None:
    """The model's recommended sampling in llama.cpp's general.sampling.* keys. llama.cpp has none for frequency
    or presence penalties or for sparing the prompt: docs/models.md gives those as Ollama PARAMETER lines."""
    for field, key in SAMPLING_KEYS.items():
        value = getattr(p, field)
        if MODEL_SETTINGS[field] is int:
            writer.add_int32(key, int(value))
        else:
            writer.add_float32(key, float(value))
