"""Data-parallel plumbing: this process's place in a torchrun job, and the few collectives the trainer needs.

Without torchrun everything is a one-process no-op. NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0  # global rank
    world: int = 1  # number of processes
    local_rank: int = 0  # rank on this machine (picks the GPU)

    @property
    def main(self) -> bool:
        """Rank 0 alone logs, saves checkpoints and exports the bundle."""
        return self.rank == 0


class RankAbort(Exception):
    """Another rank failed during setup; this rank exits quietly."""


def init_distributed(requested_device: str) -> Dist:
    """Join the process group torchrun set up (NCCL on GPU, gloo on CPU), or a 1-process Dist."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as td

    dist = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = requested_device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(dist.local_rank)
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist


def collective_device(dist: Dist) -> torch.device:
    """Where tensors for collectives live: the rank's GPU under NCCL, else the CPU."""
    import torch.distributed as td

    return torch.device("cuda", dist.local_rank) if td.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(t: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Average t over ranks in place (no-op on one process)."""
    if dist.world > 1:
        import torch.distributed as td

        td.all_reduce(t, op=td.ReduceOp.SUM)
        t /= dist.world
    return t


def all_agree(flag: bool, dist: Dist) -> bool:
    """True on every rank if flag is True on any rank."""
    if dist.world <= 1:
        return flag
    import torch.distributed as td

    t = torch.tensor([1.0 if flag else 0.0], device=collective_device(dist))
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return bool(t.item())


def barrier(dist: Dist) -> None:
    """Wait for every rank (no-op on one process)."""
    if dist.world > 1:
        import torch.distributed as td

        td.barrier()


def check_ranks_in_sync(model: torch.nn.Module, dist: Dist) -> float:
    """Under DDP every rank must hold the same weights: compare a checksum across ranks; returns it."""
    import torch.distributed as td

    total = sum(p.detach().double().sum() for p in model.parameters())
    device = collective_device(dist)
    lo, hi = total.to(device).clone(), total.to(device).clone()
    td.all_reduce(lo, op=td.ReduceOp.MIN)
    td.all_reduce(hi, op=td.ReduceOp.MAX)
    if lo.item() != hi.item():
        raise RuntimeError(f"DDP ranks hold different weights (checksums {lo.item()} vs {hi.item()})")
    return hi.item()


def leave_process_group() -> None:
    """Tear down gloo/NCCL while the interpreter is fully alive.

    The DDP reducer keeps the process group (and gloo's worker threads) alive; left to interpreter
    shutdown they can abort the process ("terminate called without an active exception"). So: collect
    the dropped DDP wrapper, then destroy the group.
    """
    import torch.distributed as td

    gc.collect()
    if td.is_initialized():
        td.destroy_process_group()
