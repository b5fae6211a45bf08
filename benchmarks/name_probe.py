"""Would a name-aware penalty keep the story's characters? A measured experiment, not a shipped sampler option.

The story's names (tokens that are one capitalised word, not a common word of `story_quality.COMMON`) are
spared from the repetition penalties and, with a bonus b, the names already in the text get b added to their
logits (a negative presence penalty on names only). It wraps the one sampler's `penalize` in this process, then
draws and scores stories exactly as `helium eval --stories` does. The model card records the results.
`python -m benchmarks.name_probe --stories 100 --seed 1 "names:penalize_prompt=true" "bonus2:penalize_prompt=true"`
(each SPEC is none|names|caps|bonusB, a colon, then `--set`'s KEY=VALUE,...; caps spares every token that starts
a capitalised word, bonusB spares names and raises the seen ones by B).
"""

from __future__ import annotations

import argparse
import json
import re
import time

import torch

import engine.generation.sampler as sampler
from engine.generation.sampling import settle
from engine.generation.session import open_session
from engine.generation.story_quality import COMMON, draw, score
from helium_tui.commands.evaluate import parse_setting

NAME = re.compile(r"^\s?[A-Z][a-z]+$")  # one capitalised word, with or without its leading space


CAPITAL = re.compile(r"^\s?[A-Z]")  # any token that starts a capitalised word ("She", "The" and pieces too)


def name_tokens(decode, vocab_size: int, capitals: bool = False) -> torch.Tensor:
    """(V,) bool: the tokens that are a name (NAME, not in COMMON), or with capitals every CAPITAL token."""
    texts = [decode([i]) for i in range(vocab_size)]
    if capitals:
        return torch.tensor([bool(CAPITAL.match(t)) for t in texts])
    return torch.tensor([bool(NAME.match(t)) and t.strip().lower() not in COMMON for t in texts])


def name_aware(names: torch.Tensor | None, bonus: float):
    """sampler.penalize with names spared (names None: unchanged) and seen names raised by bonus."""
    plain = sampler.penalize

    def penalize(logits, counts, *penalties):
        if names is None:
            return plain(logits, counts, *penalties)
        mask = names.to(counts.device)
        seen = (counts > 0) & mask
        out = plain(logits, counts.masked_fill(mask, 0), *penalties)
        return out + bonus * seen if bonus else out

    return penalize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-tokens", type=int, default=300)
    ap.add_argument("--dtype", default="float32", help="float32 (as helium eval --stories) or bfloat16")
    ap.add_argument("specs", nargs="+", help="none|names|caps|bonusB, ':', then KEY=VALUE,... over the model's defaults")
    args = ap.parse_args()
    session = open_session(args.model, dtype=args.dtype)
    gen = session.generator
    masks = {"names": name_tokens(gen.tok.decode, gen.vocab_size),
             "caps": name_tokens(gen.tok.decode, gen.vocab_size, capitals=True)}  # fmt: skip
    plain = sampler.penalize
    for spec in args.specs:
        which, _, setting = spec.partition(":")
        bonus = float(which[5:]) if which.startswith("bonus") else 0.0
        sampler.penalize = name_aware(None if which == "none" else masks.get(which, masks["names"]), bonus)
        try:
            params = settle(session.sampling, max_new_tokens=args.max_tokens, **parse_setting(setting))
            started = time.perf_counter()
            result = score(draw(gen, params, args.stories, args.seed))
        finally:
            sampler.penalize = plain
        print(json.dumps({"spec": spec, "first_seed": args.seed, **result,
                          "seconds": round(time.perf_counter() - started)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
