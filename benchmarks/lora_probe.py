"""Would LoRA pay off? One fine-tuning step of a preset, full (every weight trained) vs LoRA, on this machine.

LoRA here is the usual recipe: every linear of the blocks frozen with a trainable rank-r update B·A beside it,
embeddings and norms frozen. Each measurement runs in its own process (peak RSS is per process); docs/BENCHMARKS.md
records the results and the decision. `python -m benchmarks.lora_probe --preset mini --rank 8 --repeats 3`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.model.config import get_preset
from engine.model.tinyslm import TinySLM
from trainer.optim import make_optimizer


class LoRALinear(nn.Module):
    """A frozen linear plus a trainable low-rank update: y = W x + (alpha / r) B (A x), B starting at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 16.0) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.a = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)
        self.b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.a), self.b) * self.scale


def add_lora(model: TinySLM, rank: int) -> None:
    """Freeze everything, then wrap every block linear (wqkv, wo, w13, w2) in a LoRALinear."""
    model.requires_grad_(False)
    for layer in model.layers:
        for parent, name in ((layer.attn, "wqkv"), (layer.attn, "wo"), (layer.mlp, "w13"), (layer.mlp, "w2")):
            setattr(parent, name, LoRALinear(getattr(parent, name), rank))


def measure(preset: str, rank: int, batch: int, steps: int) -> dict:
    """Time `steps` AdamW steps after one untimed step (rank 0: full fine-tuning); peak RSS of this process."""
    config = get_preset(preset)
    torch.manual_seed(0)
    model = TinySLM(config).train()
    if rank:
        add_lora(model, rank)
    optimizer = make_optimizer(model, 1e-4, 0.1, (0.9, 0.95), torch.device("cpu"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    context = config.context_length
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        tokens = torch.randint(0, config.vocab_size, (batch, context + 1), generator=gen)
        logits = model(tokens[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten()).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    step_s = (time.perf_counter() - t0) / steps
    return {
        "preset": preset, "mode": f"lora r={rank}" if rank else "full", "batch": batch, "context": context,
        "trainable": sum(p.numel() for p in trainable), "step_s": step_s, "tokens_per_s": batch * context / step_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run full and LoRA measurements alternately in child processes; print a table and one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lora_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)  # the rank to measure
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.preset, args.child, args.batch_size, args.steps)))
        return 0
    runs: dict[int, list[dict]] = {0: [], args.rank: []}
    for _ in range(args.repeats):
        for rank in runs:
            cmd = [sys.executable, "-m", "benchmarks.lora_probe", "--preset", args.preset, "--child", str(rank),
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[rank].append(json.loads(out.strip().splitlines()[-1]))
    rows = []
    for results in runs.values():
        row = dict(results[0])
        for key in ("step_s", "tokens_per_s", "peak_rss_mib"):
            row[key] = statistics.median(r[key] for r in results)
        rows.append(row)
    print(f"{'preset':8} {'mode':10} {'trainable':>11} {'tokens/s':>9} {'step':>8} {'peak RSS':>10}")
    for r in rows:
        print(
            f"{r['preset']:8} {r['mode']:10} {r['trainable']:>11,} {r['tokens_per_s']:>9,.0f} "
            f"{r['step_s']:>7.2f}s {r['peak_rss_mib']:>7,.0f} MiB"
        )
    print(json.dumps({"runs": rows, "repeats": args.repeats}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
