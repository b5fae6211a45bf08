"""Import karpathy/llama2.c checkpoints and tokenizers as Helium bundles (the engine's outside oracle).

Reads legacy (version 0) and version-1 float32 `.bin` checkpoints and the `tokenizer.bin` vocabulary, and
turns the vocabulary into an HF `tokenizers` BPE that encodes exactly like llama2.c's `encode()` in run.c.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers

from engine.bundles.bundle import build_model, save_bundle
from engine.bundles.info import check_bundle_target
from engine.errors import BundleError
from engine.files import atomic_directory
from engine.hub.catalog import LLAMA2C_SAMPLING
from engine.model.config import ModelConfig
from engine.model.tokenizer import TextTokenizer, TokenizerFileError
from engine.safe_read import open_regular, read_regular, sha256_file, unreadable

MAGIC = 0x616B3432  # "ak42": the header of llama2.c's versioned exports
V1_HEADER_BYTES = 256  # versioned headers are padded to 256 bytes
LEGACY_HEADER_BYTES = 7 * 4  # seven int32 fields
SPACE = "▁"  # sentencepiece's visible space; llama2.c's tokenizer.bin stores a plain " " instead
BOS_ID = 1  # `<s>`: starts every sequence; llama2.c's run.c also stops generating when it samples it
SPECIALS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 in every llama2.c (sentencepiece) vocabulary
N_BYTES = 256  # byte-fallback tokens <0x00>..<0xFF> at ids 3..258
MAX_TOKENIZER_BIN_BYTES = 64 << 20  # llama2.c's 32k tokenizer.bin is 424 KB
NO_MERGE_SCORE = -1e10  # run.c starts its best-score search here: tokens scored at or below never merge


@dataclass(frozen=True)
class Llama2cHeader:
    """The hyperparameters and layout flags from a llama2.c checkpoint header."""

    version: int  # 0 = legacy (no magic), 1 = "ak42" float32 export
    dim: int  # width of the residual stream
    hidden_dim: int  # SwiGLU inner width
    n_layers: int  # transformer blocks
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads
    vocab_size: int  # tokens (always positive here)
    seq_len: int  # context length
    shared_classifier: bool  # the output head reuses the token embedding
    data_offset: int  # byte offset of the first weight

    @property
    def head_size(self) -> int:
        """Width of one attention head."""
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        """Width of all key (or value) heads together."""
        return self.n_kv_heads * self.head_size

    def model_config(self) -> ModelConfig:
        """The equivalent TinySLM configuration."""
        return ModelConfig(
            vocab_size=self.vocab_size,
            d_model=self.dim,
            n_layer=self.n_layers,
            n_head=self.n_heads,
            n_kv_head=self.n_kv_heads,
            hidden_dim=self.hidden_dim,
            context_length=self.seq_len,
            rope_theta=10000.0,
            norm_eps=1e-5,
            tie_embeddings=self.shared_classifier,
            dropout=0.0,
        )


# ---------------------------------------------------------------------------------------------------------
# Checkpoint


def read_header(path: Path) -> Llama2cHeader:
    """Parse the header of a llama2.c checkpoint; BundleError naming the file when it is not one."""
    try:
        with open_regular(path) as f:
            head = f.read(V1_HEADER_BYTES)
    except OSError as exc:
        raise BundleError(unreadable(path, exc)) from None
    if len(head) < LEGACY_HEADER_BYTES:
        raise BundleError(f"{path}: too short for a llama2.c checkpoint ({len(head)} bytes)")
    magic, version = struct.unpack_from("<Ii", head, 0)
    if magic == MAGIC:
        if version == 2:
            raise BundleError(
                f"{path}: int8-quantized llama2.c checkpoint (version 2) is not supported; "
                "export it with `export.py --version 1` (float32)"
            )
        if version != 1:
            raise BundleError(f"{path}: unknown llama2.c checkpoint version {version} (supported: 0 and 1)")
        if len(head) < V1_HEADER_BYTES:
            raise BundleError(f"{path}: truncated version-1 header ({len(head)} of {V1_HEADER_BYTES} bytes)")
        params = struct.unpack_from("<7i", head, 8)
        shared = bool(head[36])
        offset = V1_HEADER_BYTES
    else:
        version = 0
        params = struct.unpack_from("<7i", head, 0)
        shared = params[5] > 0  # legacy: a negative vocab_size means separate classifier weights
        params = (*params[:5], abs(params[5]), params[6])
        offset = LEGACY_HEADER_BYTES
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = params
    if min(params) <= 0 or dim % n_heads or n_heads % n_kv or (dim // n_heads) % 2 or max(params) > 1 << 20:
        raise BundleError(
            f"{path}: not a llama2.c checkpoint (header dim={dim} hidden_dim={hidden} n_layers={n_layers} "
            f"n_heads={n_heads} n_kv_heads={n_kv} vocab_size={vocab} seq_len={seq_len})"
        )
    return Llama2cHeader(version, dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len, shared, offset)


def _layout(h: Llama2cHeader) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every float32 block in file order; names are llama2.c's, `skip` blocks are ignored."""
    L, D, H, V, KV = h.n_layers, h.dim, h.hidden_dim, h.vocab_size, h.kv_dim
    wcls = [] if h.shared_classifier else [("wcls", (V, D))]
    attn_ffn = [
        ("wq", (L, D, D)),
        ("wk", (L, KV, D)),
        ("wv", (L, KV, D)),
        ("wo", (L, D, D)),
    ]
    if h.version == 0:
        rope = (h.seq_len, h.head_size // 2)
        return [
            ("tok_embeddings", (V, D)),
            ("rms_att", (L, D)),
            *attn_ffn,
            ("rms_ffn", (L, D)),
            ("w1", (L, H, D)),
            ("w2", (L, D, H)),
            ("w3", (L, H, D)),
            ("rms_final", (D,)),
            ("skip_freq_cos", rope),
            ("skip_freq_sin", rope),
            *wcls,
        ]
    return [
        ("rms_att", (L, D)),
        ("rms_ffn", (L, D)),
        ("rms_final", (D,)),
        ("tok_embeddings", (V, D)),
        *attn_ffn,
        ("w1", (L, H, D)),
        ("w2", (L, D, H)),
        ("w3", (L, H, D)),
        *wcls,
    ]


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], Llama2cHeader]:
    """The TinySLM config and state dict (fused wqkv and w13) of a float32 llama2.c checkpoint."""
    path = Path(path)
    h = read_header(path)
    layout = _layout(h)
    n_floats = sum(int(np.prod(shape)) for _, shape in layout)
    expected = h.data_offset + 4 * n_floats
    size = path.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "too long"
        raise BundleError(
            f"{path}: {what}: {size} bytes, but a version-{h.version} llama2.c checkpoint with this header "
            f"needs {expected}"
        )
    try:
        config = h.model_config()
    except ValueError as exc:
        raise BundleError(f"{path}: unsupported model shape ({exc})") from None
    flat = np.memmap(path, dtype="<f4", mode="r", offset=h.data_offset, shape=(n_floats,))
    blocks: dict[str, torch.Tensor] = {}
    start = 0
    for name, shape in layout:
        count = int(np.prod(shape))
        if not name.startswith("skip"):
            blocks[name] = torch.from_numpy(np.array(flat[start : start + count]).reshape(shape))
        start += count
    del flat
    state = {"tok_embeddings.weight": blocks["tok_embeddings"], "norm.weight": blocks["rms_final"]}
    for i in range(h.n_layers):
        p = f"layers.{i}."
        state[p + "attn_norm.weight"] = blocks["rms_att"][i]
        state[p + "attn.wqkv.weight"] = torch.cat([blocks["wq"][i], blocks["wk"][i], blocks["wv"][i]], dim=0)
        state[p + "attn.wo.weight"] = blocks["wo"][i]
        state[p + "mlp_norm.weight"] = blocks["rms_ffn"][i]
        state[p + "mlp.w13.weight"] = torch.cat([blocks["w1"][i], blocks["w3"][i]], dim=0)
        state[p + "mlp.w2.weight"] = blocks["w2"][i]
    if not h.shared_classifier:
        state["output.weight"] = blocks["wcls"]
    state = {k: v.contiguous() for k, v in state.items()}
    return config, state, h


# ---------------------------------------------------------------------------------------------------------
# Tokenizer


def read_tokenizer_bin(path: str | Path) -> tuple[list[bytes], list[float]]:
    """Pieces (raw bytes, as llama2.c stores them) and scores from a llama2.c tokenizer.bin."""
    path = Path(path)
    try:
        data = read_regular(path, MAX_TOKENIZER_BIN_BYTES)
    except OSError as exc:
        raise BundleError(unreadable(path, exc)) from None
    if len(data) < 4:
        raise BundleError(f"{path}: too short for a llama2.c tokenizer ({len(data)} bytes)")
    (max_len,) = struct.unpack_from("<i", data, 0)
    if not 0 < max_len <= 1024:
        raise BundleError(f"{path}: not a llama2.c tokenizer (max_token_length {max_len})")
    pieces: list[bytes] = []
    scores: list[float] = []
    offset = 4
    while offset < len(data):
        if offset + 8 > len(data):
            raise BundleError(f"{path}: truncated at token {len(pieces)} (byte {offset})")
        score, n = struct.unpack_from("<fi", data, offset)
        offset += 8
        if not 0 <= n <= max_len + 16 or offset + n > len(data):  # "\n<s>\n" may exceed max_token_length
            raise BundleError(
                f"{path}: truncated or corrupt at token {len(pieces)} (length {n}, byte {offset})"
            )
        pieces.append(data[offset : offset + n])
        scores.append(score)
        offset += n
    return pieces, scores


def tokenizer_vocab(pieces: list[bytes], source: str | Path = "tokenizer") -> dict[str, int]:
    """HF vocabulary (token string → id): specials renamed, spaces shown as ▁, byte tokens kept as <0xNN>."""
    if len(pieces) < len(SPECIALS) + N_BYTES:
        raise BundleError(
            f"{source}: {len(pieces)} tokens is too few for a llama2.c vocabulary (needs ≥ 259)"
        )
    vocab: dict[str, int] = {}
    for i, raw in enumerate(pieces):
        if i < len(SPECIALS):
            text = SPECIALS[i]  # tokenizer.bin stores "<unk>", "\n<s>\n", "\n</s>\n"
        elif i < len(SPECIALS) + N_BYTES:
            text = f"<0x{i - len(SPECIALS):02X}>"
            if raw.decode("ascii", "replace") != text:
                raise BundleError(f"{source}: token {i} is {raw!r}, expected the byte-fallback token {text}")
        else:
            try:
                text = raw.decode("utf-8").replace(" ", SPACE)
            except UnicodeDecodeError:
                raise BundleError(f"{source}: token {i} is not valid UTF-8 ({raw!r})") from None
        if text in vocab:
            raise BundleError(f"{source}: token {i} {text!r} duplicates token {vocab[text]}")
        vocab[text] = i
    return vocab


def bpe_merges(vocab: dict[str, int], scores: list[float]) -> list[tuple[str, str]]:
    """Merges that replay run.c's loop "merge the adjacent pair whose concatenation scores highest".

    Every split of a normal token into two vocabulary tokens is a merge; ranks follow the merged token's
    score (higher first). Equal scores (the whitespace runs of Llama's vocabulary) rank a longer left part
    first, so a run of spaces grows from its left end as run.c's leftmost-wins tie-break does.
    """
    first_normal = len(SPECIALS) + N_BYTES
    ranked: list[tuple[float, int, int, str, str]] = []
    for token, tid in vocab.items():
        if tid < first_normal or len(token) < 2 or scores[tid] <= NO_MERGE_SCORE:
            continue
        for k in range(1, len(token)):
            left, right = token[:k], token[k:]
            if vocab.get(left, -1) >= first_normal and vocab.get(right, -1) >= first_normal:
                ranked.append((-scores[tid], -len(left), tid, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def build_tokenizer(pieces: list[bytes], scores: list[float], source: str | Path = "tokenizer") -> Tokenizer:
    """An HF tokenizer that encodes like llama2.c: dummy-prefix space, byte fallback, score-ordered merges.

    `<unk>`, `<s>` and `</s>` live in the BPE vocabulary only (not as added tokens), so a prompt that
    literally contains "<s>" is spelled out as llama2.c does; the decoder drops `<s>` and `</s>`.
    """
    vocab = tokenizer_vocab(pieces, source)
    tok = Tokenizer(
        models.BPE(vocab, bpe_merges(vocab, scores), unk_token=SPECIALS[0], byte_fallback=True, fuse_unk=True)
    )
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(SPECIALS[1], ""),
            decoders.Replace(SPECIALS[2], ""),
            decoders.Replace(SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),  # sentencepiece drops the dummy-prefix space at the start of a text
        ]
    )
    return tok


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """A llama2.c tokenizer.bin as a TextTokenizer with `<s>` as both start and end-of-story token.

    A `.json` path is a tokenizer.json converted from a tokenizer.bin by `build_tokenizer` (as shipped in
    assets/llama2-tokenizer/), loaded as is.
    """
    if Path(path).suffix == ".json":
        try:
            return TextTokenizer.from_file(path, bos_id=BOS_ID, eos_id=BOS_ID)
        except TokenizerFileError as exc:
            raise BundleError(str(exc)) from None
    pieces, scores = read_tokenizer_bin(path)
    return TextTokenizer(build_tokenizer(pieces, scores, path), bos_id=BOS_ID, eos_id=BOS_ID)


# ---------------------------------------------------------------------------------------------------------
# Import


def import_llama2c(
    model_bin: str | Path, tokenizer_bin: str | Path, out_dir: str | Path, force: bool = False
) -> Path:
    """Convert a llama2.c checkpoint and tokenizer into a Helium bundle at out_dir (absent or empty; with force an
    existing bundle is replaced).

    The bundle appears all at once (built in a temporary sibling directory, then renamed).
    """
    model_bin, tokenizer_bin, out_dir = Path(model_bin), Path(tokenizer_bin), Path(out_dir)
    replace = check_bundle_target(out_dir, force)
    config, state, header = read_checkpoint(model_bin)
    tokenizer = load_tokenizer(tokenizer_bin)
    if tokenizer.vocab_size != config.vocab_size:
        raise BundleError(
            f"{tokenizer_bin}: tokenizer has {tokenizer.vocab_size} tokens but {model_bin.name} has a vocabulary "
            f"of {config.vocab_size}"
        )
    model = build_model(config, state, model_bin)
    metadata = {
        "created_by": "helium import llama2c",
        "data": "TinyStories (llama2.c)",
        "source": "karpathy/llama2.c checkpoint (MIT)",
        "llama2c_version": header.version,
        "source_files": {
            "model": {"name": model_bin.name, "sha256": sha256_file(model_bin)},
            "tokenizer": {"name": tokenizer_bin.name, "sha256": sha256_file(tokenizer_bin)},
        },
        "sampling": dict(LLAMA2C_SAMPLING),  # where `tell` and the studio start for it, pulled or imported
    }
    return atomic_directory(out_dir, lambda tmp: save_bundle(tmp, model, tokenizer, metadata), force=replace)
