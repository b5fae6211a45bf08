"""Read and write the model card author's HeliumLM checkpoints (DebmalyaSen34/HeliumLM, Apache-2.0).

The author saves a plain state dict of their `TinySLM(config)`: the tensors give the shape, their config JSON
the rest (query heads, sliding window, context). Their 32k tokenizer has no decoder, so the import gives it
one that writes natural text ("time, there", not "time , there").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Regex, decoders

from engine import jsonfile
from engine.bundles.bundle import build_model, load_state_dict, save_bundle
from engine.bundles.info import check_bundle_target
from engine.errors import BundleError
from engine.files import atomic_directory
from engine.model.config import ModelConfig
from engine.model.tokenizer import TextTokenizer, TokenizerFileError, read_tokenizer
from engine.safe_read import sha256_file

NORM_EPS = 1e-6  # the reference's RMSNorm default
ROPE_THETA = 10000.0  # the reference's precompute_freq_cis default
END_TOKEN = (
    "[SEP]"  # the author's dataset appends it after every text; their inference stops when it is sampled
)
MLP_RATIO = 2.5  # the reference's default SwiGLU expansion (hidden = int(d_model * mlp_ratio))


@dataclass(frozen=True)
class AuthorConfig:
    """What the author's config JSON adds to the tensors; the defaults are the card's Helium-Nano."""

    n_head: int = 8  # query heads (the tensors only give their total width)
    window_size: int = 128  # each token attends to itself and window_size - 1 tokens before it
    max_seq_len: int = 512  # the context the model was trained on
    declared: dict = field(
        default_factory=dict
    )  # shape keys the JSON states too, checked against the tensors


def read_author_config(path: str | Path) -> AuthorConfig:
    """Parse the author's training config JSON (helium-nano-config.json); keys it lacks keep the defaults."""
    path = Path(path)
    data = jsonfile.need_object(jsonfile.read_json(path), path)
    values = {}
    for key in ("n_head", "window_size", "max_seq_len", "vocab_size", "d_model", "n_layers", "n_kv_head"):
        if key in data:
            values[key] = jsonfile.field(data, key, int, source=path, low=1, high=1 << 24)
    if "mlp_ratio" in data:
        values["mlp_ratio"] = jsonfile.field(data, "mlp_ratio", float, source=path, low=1e-6, high=999)
    main = {k: values.pop(k) for k in ("n_head", "window_size", "max_seq_len") if k in values}
    return AuthorConfig(**main, declared=values)


# ---------------------------------------------------------------------------------------------------------
# Weights


def model_config(state: dict[str, torch.Tensor], author: AuthorConfig, source: str | Path) -> ModelConfig:
    """The TinySLM config of an author-format state dict: shapes from the tensors, the rest from `author`."""
    state = _unprefixed(state)
    emb = _get(state, "token_embedding.weight", source, ndim=2)
    vocab, width = emb.shape
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))})
    if not layers or layers != list(range(len(layers))):
        raise BundleError(f"{source}: no layers.0 ... layers.N keys (not a HeliumLM checkpoint)")
    if width % author.n_head:
        raise BundleError(
            f"{source}: width {width} is not divisible by n_head {author.n_head} (wrong --config?)"
        )
    head_dim = width // author.n_head
    kv_width = _get(state, "layers.0.self_attn.k_proj.weight", source, ndim=2).shape[0]
    if kv_width % head_dim or author.n_head % (kv_width // head_dim or 1):
        raise BundleError(
            f"{source}: key width {kv_width} is not a whole number of {head_dim}-wide heads dividing "
            f"n_head {author.n_head} (wrong --config?)"
        )
    hidden = _get(state, "layers.0.mlp.gate_proj.weight", source, ndim=2).shape[0]
    found = {
        "vocab_size": vocab,
        "d_model": width,
        "n_layers": len(layers),
        "n_kv_head": kv_width // head_dim,
    }
    for key, value in author.declared.items():
        want = int(width * value) if key == "mlp_ratio" else value
        have = hidden if key == "mlp_ratio" else found[key]
        if want != have:
            what = f"mlp_ratio {value} (hidden {want})" if key == "mlp_ratio" else f"{key} {value}"
            raise BundleError(f"{source}: the config says {what} but the checkpoint has {have}")
    output = state.get("output.weight")
    try:
        return ModelConfig(
            vocab_size=vocab,
            d_model=width,
            n_layer=len(layers),
            n_head=author.n_head,
            n_kv_head=kv_width // head_dim,
            hidden_dim=hidden,
            context_length=author.max_seq_len,
            rope_theta=ROPE_THETA,
            norm_eps=NORM_EPS,
            tie_embeddings=output is None or (output.shape == emb.shape and torch.equal(output, emb)),
            sliding_window=author.window_size,
        )
    except ValueError as exc:
        raise BundleError(f"{source}: unsupported model shape ({exc})") from None


def _author_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the author's state dict and its shape (output.weight may be left out when tied)."""
    V, D, H, KV = cfg.vocab_size, cfg.d_model, cfg.hidden_dim, cfg.kv_heads * cfg.head_dim
    shapes = {"token_embedding.weight": (V, D), "norm.weight": (D,), "output.weight": (V, D)}
    for i in range(cfg.n_layer):
        p = f"layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (D, D),
            p + "self_attn.k_proj.weight": (KV, D),
            p + "self_attn.v_proj.weight": (KV, D),
            p + "self_attn.output_proj.weight": (D, D),
            p + "mlp.gate_proj.weight": (H, D),
            p + "mlp.up_proj.weight": (H, D),
            p + "mlp.down_proj.weight": (D, H),
            p + "input_layernorm.weight": (D,),
            p + "post_attn_layernorm.weight": (D,),
        }
    return shapes


def helium_state(
    state: dict[str, torch.Tensor], cfg: ModelConfig, source: str | Path
) -> dict[str, torch.Tensor]:
    """Map an author-format state dict onto TinySLM's names (fused wqkv, w13), checking every key and shape."""
    state = _unprefixed(state)
    shapes = _author_shapes(cfg)
    missing = sorted(set(shapes) - set(state) - {"output.weight"})
    unexpected = sorted(set(state) - set(shapes))
    if missing or unexpected:
        parts = [f"missing {_short(missing)}"] if missing else []
        parts += [f"unexpected {_short(unexpected)}"] if unexpected else []
        raise BundleError(f"{source}: not a HeliumLM state dict of this shape: {'; '.join(parts)}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != shapes[key]:
            raise BundleError(f"{source}: {key} has shape {tuple(tensor.shape)}, expected {shapes[key]}")
    out = {"tok_embeddings.weight": state["token_embedding.weight"], "norm.weight": state["norm.weight"]}
    if not cfg.tie_embeddings:
        out["output.weight"] = state["output.weight"]
    for i in range(cfg.n_layer):
        a, h = f"layers.{i}.self_attn.", f"layers.{i}."
        qkv = [state[a + f"{n}_proj.weight"] for n in "qkv"]  # GQA: both repeat kv head j for queries j*rep..
        mlp = [state[f"layers.{i}.mlp.{n}_proj.weight"] for n in ("gate", "up")]
        out[h + "attn_norm.weight"] = state[h + "input_layernorm.weight"]
        out[h + "attn.wqkv.weight"] = torch.cat(qkv, dim=0)
        out[h + "attn.wo.weight"] = state[a + "output_proj.weight"]
        out[h + "mlp_norm.weight"] = state[h + "post_attn_layernorm.weight"]
        out[h + "mlp.w13.weight"] = torch.cat(mlp, dim=0)
        out[h + "mlp.w2.weight"] = state[f"layers.{i}.mlp.down_proj.weight"]
    return out


def author_state(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The reverse of `helium_state`: a TinySLM state dict in the author's names (their TinySLM loads it)."""
    D, KV = cfg.d_model, cfg.kv_heads * cfg.head_dim
    emb = state["tok_embeddings.weight"]
    out = {"token_embedding.weight": emb, "norm.weight": state["norm.weight"]}
    out["output.weight"] = emb if cfg.tie_embeddings else state["output.weight"]
    for i in range(cfg.n_layer):
        a, h = f"layers.{i}.self_attn.", f"layers.{i}."
        q, k, v = state[h + "attn.wqkv.weight"].split([D, KV, KV], dim=0)
        gate, up = state[h + "mlp.w13.weight"].chunk(2, dim=0)
        out |= {a + "q_proj.weight": q, a + "k_proj.weight": k, a + "v_proj.weight": v}
        out[a + "output_proj.weight"] = state[h + "attn.wo.weight"]
        out[h + "mlp.gate_proj.weight"], out[h + "mlp.up_proj.weight"] = gate, up
        out[h + "mlp.down_proj.weight"] = state[h + "mlp.w2.weight"]
        out[h + "input_layernorm.weight"] = state[h + "attn_norm.weight"]
        out[h + "post_attn_layernorm.weight"] = state[h + "mlp_norm.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def _get(state: dict[str, torch.Tensor], key: str, source: str | Path, ndim: int) -> torch.Tensor:
    tensor = state.get(key)
    if tensor is None:
        raise BundleError(f"{source}: no {key} (not a HeliumLM checkpoint)")
    if tensor.ndim != ndim:
        raise BundleError(f"{source}: {key} has shape {tuple(tensor.shape)}, expected {ndim} dimensions")
    return tensor


def _unprefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the `_orig_mod.` that saving a torch.compile'd module adds."""
    return {k.removeprefix("_orig_mod."): v for k, v in state.items()}


def _short(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


# ---------------------------------------------------------------------------------------------------------
# Tokenizer

GLUE_PREV = "\ue000"  # private-use marks: "no space before this token" (the decoder's WordPiece prefix) ...
GLUE_NEXT = "\ue001"  # ... and "no space after it"; neither survives decoding
OPENERS = (
    "\"“‘([$'’-"  # a token that is exactly one of these joins the next word: `"Hi`, `(soft`, `ice-cream`
)
CLOSERS = ".,!?;:)]}”’…%'-"  # a token starting with one of these joins the previous word: `time,` `Lily's`
MOJIBAKE = [("€™", "’"), ("€˜", "‘"), ("€“", "–"), ("€”", "—"), ("€¦", "…")]  # "â€™" = ’ read as cp1252


def natural_decoder() -> decoders.Decoder:
    """A decoder for the author's Whitespace-split BPE that writes tokens with natural spacing.

    The tokenizer keeps no spaces, so the decoder puts one between tokens except before closing punctuation,
    after an opening quote or bracket, and around apostrophes and hyphens. It also repairs the UTF-8-read-as-
    cp1252 quotes of the author's training text (`donâ €™ t` -> `don’t`, `â € œHi` -> `“Hi`). Whether a space
    goes between two tokens depends on those two tokens only, so streamed text never has to change.
    What it cannot restore: words the BPE split ("Ame li"), dashes (" - " reads as "-"), a closing `"`
    right after a word, and a closing ” the author's data kept only as a bare "€".
    """
    glue_next = Regex("(?<=^[" + re.escape(OPENERS) + "])$")
    glue_prev = Regex("^(?=[" + re.escape(CLOSERS) + '])|^(?="[^\\w' + GLUE_NEXT + "])")
    return decoders.Sequence(
        [
            decoders.Replace(
                Regex("^[â€]$"), GLUE_PREV
            ),  # fragments of a broken quote: vanish, with no space
            decoders.Replace(Regex("â$"), ""),  # "donâ" -> "don"
            decoders.Replace(Regex("^œ"), "“"),  # "œHi" -> "“Hi"
            *[decoders.Replace(bad, good) for bad, good in MOJIBAKE],
            decoders.Replace(Regex("^€"), "”"),  # "€." -> "”."
            decoders.Replace(glue_next, GLUE_NEXT),
            decoders.Replace(glue_prev, GLUE_PREV),
            decoders.WordPiece(
                prefix=GLUE_PREV, cleanup=False
            ),  # " " before every token not marked GLUE_PREV
            decoders.Fuse(),
            decoders.Replace(Regex(GLUE_NEXT + " ?"), ""),
            decoders.Replace(GLUE_PREV, ""),  # the first token keeps its mark
        ]
    )


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """The author's tokenizer.json with a natural-text decoder (if it has none), no start token, and [SEP] as
    the end token, as the author's training data and inference use them."""
    path = Path(path)
    try:
        hf = read_tokenizer(path)
    except TokenizerFileError as exc:
        raise BundleError(str(exc)) from None
    end = hf.token_to_id(END_TOKEN)
    if end is None:
        raise BundleError(f"{path}: has no {END_TOKEN} token (the HeliumLM end-of-text marker)")
    if hf.decoder is None:
        hf.decoder = natural_decoder()
    return TextTokenizer(hf, bos_id=None, eos_id=end)


# ---------------------------------------------------------------------------------------------------------
# Import


def import_heliumlm(
    checkpoint: str | Path,
    tokenizer: str | Path,
    out_dir: str | Path,
    config: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Convert an author-format checkpoint (+ tokenizer, + optional config JSON) into a bundle at out_dir.

    out_dir must be absent or empty, or with force an existing bundle to replace. The bundle appears whole
    (built in a temporary sibling directory, then renamed into place).
    """
    checkpoint, tokenizer, out_dir = Path(checkpoint), Path(tokenizer), Path(out_dir)
    replace = check_bundle_target(out_dir, force)
    author = read_author_config(config) if config is not None else AuthorConfig()
    state = load_state_dict(
        checkpoint
    )  # torch.load(weights_only=True); a {"model": ...} wrapper is unwrapped
    cfg = model_config(state, author, checkpoint)
    tok = load_tokenizer(tokenizer)
    if tok.vocab_size != cfg.vocab_size:
        raise BundleError(
            f"{tokenizer}: tokenizer has {tok.vocab_size} tokens but {checkpoint.name} has a vocabulary of "
            f"{cfg.vocab_size}"
        )
    model = build_model(cfg, helium_state(state, cfg, checkpoint), checkpoint)
    files = {"checkpoint": checkpoint, "tokenizer": tokenizer} | ({"config": Path(config)} if config else {})
    metadata = {
        "created_by": "helium import heliumlm",
        "source": "DebmalyaSen34/HeliumLM checkpoint (Apache-2.0)",
        "end_token": END_TOKEN,
        "source_files": {k: {"name": p.name, "sha256": sha256_file(p)} for k, p in files.items()},
    }
    atomic_directory(out_dir, lambda tmp: save_bundle(tmp, model, tok, metadata), force=replace)
    return out_dir
