"""The catalog of public TinyStories models that `helium models pull NAME` downloads from the Hugging Face Hub.

Torch-free: names, Hub files, shapes and sizes only. `engine.hub.pull` downloads, converts and installs an entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.paths import assets_dir, user_models_dir

# Llama 2's vocabulary for the storiesNNM models, under assets/ (llama2.c's tokenizer.bin, converted once)
LLAMA2_TOKENIZER = "llama2-tokenizer/tokenizer.json"


# llama2.c's own sampling defaults (run.c: temperature 1.0, top-p 0.9, no repetition penalty): what a pulled
# model recommends (its metadata's "sampling"), so `tell` and the studio start where its authors did
LLAMA2C_SAMPLING: dict[str, float] = {"temperature": 1.0, "top_p": 0.9, "repetition_penalty": 1.0}


@dataclass(frozen=True)
class CatalogModel:
    """One llama2.c checkpoint on the Hub, installed under `name`; the shape fields are its header's."""

    name: str  # installed name: `--model NAME`
    repo: str  # Hub model repo
    weights: str  # the llama2.c checkpoint (legacy float32 .bin) in the repo
    tokenizer: str | None  # its tokenizer.bin in the repo; None: Llama 2's, shipped in assets/
    checkpoint_bytes: int  # size of `weights` (header + float32 blocks + legacy RoPE tables)
    tokenizer_bytes: int  # size of `tokenizer` (0 when shipped)
    dim: int  # width of the residual stream
    hidden_dim: int  # SwiGLU inner width
    n_layers: int  # transformer blocks
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads
    vocab_size: int  # tokens
    seq_len: int  # context length
    about: str  # one line for listings
    revision: str = "main"  # Hub branch, tag or commit

    @property
    def sampling(self) -> dict[str, float]:
        """The settings the pulled model recommends (its metadata's "sampling"): llama2.c's."""
        return dict(LLAMA2C_SAMPLING)

    @property
    def params(self) -> int:
        """Parameters (the classifier shares the embedding, as in every tinyllamas checkpoint)."""
        kv_dim = self.n_kv_heads * self.dim // self.n_heads
        per_layer = (
            2 * self.dim + 2 * self.dim * self.dim + 2 * kv_dim * self.dim + 3 * self.dim * self.hidden_dim
        )
        return self.vocab_size * self.dim + self.n_layers * per_layer + self.dim

    @property
    def download_bytes(self) -> int:
        """Bytes fetched from the Hub by a pull."""
        return self.checkpoint_bytes + self.tokenizer_bytes

    def file_bytes(self, path: str) -> int:
        """The size of one of `files`, as the catalog knows it."""
        return self.checkpoint_bytes if path == self.weights else self.tokenizer_bytes

    @property
    def files(self) -> tuple[str, ...]:
        """Repo paths a pull downloads, checkpoint first."""
        return (self.weights,) if self.tokenizer is None else (self.weights, self.tokenizer)

    def tokenizer_path(self) -> Path | None:
        """The shipped tokenizer.json this model uses (None: it comes from the Hub)."""
        return assets_dir() / LLAMA2_TOKENIZER if self.tokenizer is None else None

    def model_config(self):
        """The equivalent engine ModelConfig (for `helium bench decode --preset NAME`)."""
        from engine.model.config import ModelConfig

        return ModelConfig(
            vocab_size=self.vocab_size, d_model=self.dim, n_layer=self.n_layers, n_head=self.n_heads,
            n_kv_head=self.n_kv_heads, hidden_dim=self.hidden_dim, context_length=self.seq_len,
            tie_embeddings=True,
        )  # fmt: skip


TINYLLAMAS = "karpathy/tinyllamas"  # llama2.c's TinyStories models (MIT), trained on all of TinyStories

CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            name="stories260K", repo=TINYLLAMAS, weights="stories260K/stories260K.bin",
            tokenizer="stories260K/tok512.bin", checkpoint_bytes=1_056_540, tokenizer_bytes=6_227,
            dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512, seq_len=512,
            about="a toy",
        ),
        CatalogModel(
            name="stories15M", repo=TINYLLAMAS, weights="stories15M.bin", tokenizer=None,
            checkpoint_bytes=60_816_028, tokenizer_bytes=0,
            dim=288, hidden_dim=768, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=32000, seq_len=256,
            about="small, fast",
        ),
        CatalogModel(
            name="stories42M", repo=TINYLLAMAS, weights="stories42M.bin", tokenizer=None,
            checkpoint_bytes=167_020_572, tokenizer_bytes=0,
            dim=512, hidden_dim=1376, n_layers=8, n_heads=8, n_kv_heads=8, vocab_size=32000, seq_len=1024,
            about="good stories",
        ),
        CatalogModel(
            name="stories110M", repo=TINYLLAMAS, weights="stories110M.bin", tokenizer=None,
            checkpoint_bytes=438_381_596, tokenizer_bytes=0,
            dim=768, hidden_dim=2048, n_layers=12, n_heads=12, n_kv_heads=12, vocab_size=32000, seq_len=1024,
            about="best stories",
        ),
    )
}  # fmt: skip


def get_entry(name: str) -> CatalogModel:
    """A catalog entry by name; ValueError listing the names otherwise."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"{name!r} is not in the catalog (choose from {', '.join(CATALOG)})") from None


def bench_config(name: str):
    """The ModelConfig of a preset (engine.model.config.PRESETS) or of a catalog model's shape, for benchmarks."""
    from engine.model.config import PRESETS

    if name in CATALOG and name not in PRESETS:
        return CATALOG[name].model_config()
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join([*PRESETS, *CATALOG])}")
    return PRESETS[name]


def installed_dir(entry: CatalogModel) -> Path:
    """Where a pulled model lives: the user models dir, under the catalog name."""
    return user_models_dir() / entry.name


def is_installed(entry: CatalogModel) -> bool:
    """True when a bundle of that name is installed in the user models dir."""
    return installed_dir(entry).joinpath("config.json").is_file()


def human_bytes(n: int) -> str:
    """60816028 → '60.8 MB' (decimal units, as download sizes are usually given)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
