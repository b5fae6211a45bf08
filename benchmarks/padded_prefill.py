"""Why `Slots.join` prefills different prompt lengths separately: `python -m benchmarks.padded_prefill`.

Prompts of different lengths could share one forward, right-padded to the longest (causal attention keeps a row's
real tokens from seeing its padding). This checks whether a row's last prompt logits are then bit for bit what its
own prefill gives, on the shipped model as the server runs it (bf16 on a CPU that has it): random prompts of 2-59
tokens in batches of 2-7, seed 0. A seeded story must not depend on what arrived with it, so anything short of
all rows equal rules padding out.
"""

from __future__ import annotations

import torch

from engine.generation.session import open_session


def main(trials: int = 20) -> None:
    session = open_session(None)
    model, vocab = session.bundle.model, session.bundle.config.vocab_size
    session.generator.ensure_cache(8)
    torch.manual_seed(0)

    def alone(ids: list[int]) -> torch.Tensor:
        return model(torch.tensor([ids]), torch.arange(len(ids)), last_only=True, rows=slice(0, 1))[0, -1]

    def padded(batch: list[list[int]]) -> list[torch.Tensor]:
        longest = max(map(len, batch))
        window = torch.tensor([ids + [0] * (longest - len(ids)) for ids in batch])
        out = model(window, torch.arange(longest), rows=slice(0, len(batch)))
        return [out[i, len(ids) - 1] for i, ids in enumerate(batch)]

    same = total = 0
    with torch.inference_mode():
        for _ in range(trials):
            n = int(torch.randint(2, 8, ()))
            batch = [torch.randint(1, vocab, (int(torch.randint(2, 60, ())),)).tolist() for _ in range(n)]
            for ids, logits in zip(batch, padded(batch), strict=True):
                total += 1
                same += bool(torch.equal(alone(ids), logits))
    print(f"{session.name} ({session.precision}): {same} of {total} padded rows bit-identical to their own prefill")


if __name__ == "__main__":
    main()
