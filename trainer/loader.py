"""Random training windows from a prepared data directory (uint16 shards read through np.memmap).

Batches depend only on (seed, step, rank), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.safe_read import check_regular, unreadable
from trainer.manifest import FORMAT, MANIFEST, read_manifest, shard_path

__all__ = ["FORMAT", "MANIFEST", "TokenLoader", "read_manifest"]


class TokenLoader:
    """Random windows of context+1 tokens from one split, drawn from (seed, step, rank) only.

    The split's shards are one list of token streams; a window never crosses a shard boundary (shards are
    large, so this loses at most `context` start positions per shard). Every start position in the split is
    equally likely. Each rank draws from its own random stream, so ranks see different windows.
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        batch_size: int,
        context: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
    ) -> None:
        if batch_size < 1 or context < 1:
            raise ValueError(f"batch size and context must be positive, got {batch_size} and {context}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.data_dir = Path(data_dir)
        self.manifest = read_manifest(self.data_dir)
        splits = self.manifest["splits"]
        if split not in splits:
            raise ValueError(f"{self.data_dir}: no split {split!r} (have: {', '.join(sorted(splits))})")
        self.split = split
        self.batch_size = batch_size  # rows per batch
        self.context = context  # tokens per row of x (windows hold context + 1)
        self.seed = seed  # base seed of the window stream
        self.rank = rank  # this process's rank: its own window stream
        self.world_size = world_size  # number of ranks (validated only; streams differ per rank)
        self.pin_memory = pin_memory  # batches in page-locked memory, so non_blocking copies to a GPU overlap
        self.vocab_size = int(self.manifest["vocab_size"])  # ids are < vocab_size
        self.eot_id = int(self.manifest.get("eot_id") or 0)  # story separator / BOS
        self.shards = [self._open(name) for name in splits[split]["shards"]]
        self.tokens = sum(len(s) for s in self.shards)  # tokens in the split
        if self.tokens != int(splits[split]["tokens"]):
            raise ValueError(
                f"{self.data_dir}: split {split!r} has {self.tokens} tokens on disk but the manifest says "
                f"{splits[split]['tokens']}; run `helium data prepare` again"
            )
        starts = np.array([max(0, len(s) - context) for s in self.shards], dtype=np.int64)
        self._cum_starts = np.cumsum(starts)  # start positions up to and including each shard
        if self._cum_starts.size == 0 or self._cum_starts[-1] == 0:
            raise ValueError(
                f"{self.data_dir}: split {split!r} has no shard with {context + 1} tokens (context {context} + 1)"
            )

    def _open(self, name: str) -> np.memmap:
        """Memory-map one shard; ValueError when it is outside the data dir, missing or not whole uint16s."""
        path = shard_path(self.data_dir, name)
        try:
            check_regular(path)
        except OSError as exc:
            raise ValueError(f"{unreadable(path, exc, 'shard')}; run `helium data prepare` again") from None
        size = path.stat().st_size
        if size % 2:
            raise ValueError(f"{path}: truncated shard ({size} bytes); run `helium data prepare` again")
        if size == 0:
            return np.zeros(0, dtype=np.uint16).view(np.memmap)  # np.memmap cannot map empty files
        return np.memmap(path, dtype=np.uint16, mode="r")

    def rng(self, step: int) -> np.random.Generator:
        """The random stream for one step of this rank."""
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.rank, step])))

    def starts(self, step: int) -> list[tuple[int, int]]:
        """(shard index, offset) of each window of this step's batch."""
        picks = self.rng(step).integers(0, int(self._cum_starts[-1]), size=self.batch_size)
        shard_ids = np.searchsorted(self._cum_starts, picks, side="right")
        before = np.concatenate([[0], self._cum_starts[:-1]])
        return [(int(i), int(p - before[i])) for i, p in zip(shard_ids, picks, strict=True)]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) int64 tensors (batch_size, context) on CPU; y is x shifted left by one token.

        With pin_memory they live in page-locked memory (torch caches those blocks and keeps one from reuse
        until the copy that reads it has run), so `.to("cuda", non_blocking=True)` returns at once.
        """
        n = self.context + 1
        rows = np.stack([np.asarray(self.shards[i][o : o + n], dtype=np.int64) for i, o in self.starts(step)])
        if rows.max() >= self.vocab_size:  # a damaged shard, or one written by another tokenizer
            raise ValueError(
                f"{self.data_dir}: split {self.split!r} holds token id {int(rows.max())}, beyond the vocabulary "
                f"({self.vocab_size}); the shards are damaged: run `helium data prepare` again"
            )
        data = torch.from_numpy(rows)
        x, y = data[:, :-1], data[:, 1:]
        if self.pin_memory:
            return _pinned(x), _pinned(y)
        return x.contiguous(), y.contiguous()


def _pinned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of t in page-locked host memory (needs CUDA)."""
    return torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t)
