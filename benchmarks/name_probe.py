"""Does the sampler's name bonus keep the story's characters? One row of story measures per bonus, the rest fixed.

Draws and scores stories exactly as `helium eval --stories` does, through the sampler's own `name_bonus` option
(names: `engine.generation.names`); the model card records the results.
`python -m benchmarks.name_probe --stories 100 --seed 1 --set penalize_prompt=true 0 1 2`
(each BONUS over the model's defaults and --set's KEY=VALUE,...; 0: the bonus off).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from engine.generation.sampling import SamplingParams, settle
from helium_tui.commands.evaluate import parse_setting


def settings(model: dict[str, Any], setting: str, bonuses: list[float], max_tokens: int) -> list[SamplingParams]:
    """The settings of each row: the model's defaults, then `setting` (KEY=VALUE,...), then the row's bonus."""
    chosen = {**parse_setting(setting), "max_new_tokens": max_tokens}
    return [settle(model, **{**chosen, "name_bonus": bonus}) for bonus in bonuses]


def main() -> None:
    from engine.generation.session import open_session
    from engine.generation.story_quality import draw, score

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-tokens", type=int, default=300)
    ap.add_argument("--dtype", default="float32", help="float32 (as helium eval --stories) or bfloat16")
    ap.add_argument("--set", dest="setting", default="", help="KEY=VALUE,... over the model's defaults")
    ap.add_argument("bonuses", nargs="+", type=float, help="name bonuses to measure (0 = off)")
    args = ap.parse_args()
    session = open_session(args.model, dtype=args.dtype)
    for params in settings(session.sampling, args.setting, args.bonuses, args.max_tokens):
        started = time.perf_counter()
        result = score(draw(session.generator, params, args.stories, args.seed))
        print(json.dumps({"name_bonus": params.name_bonus, "setting": args.setting, "first_seed": args.seed,
                          **result, "seconds": round(time.perf_counter() - started)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
