"""Decode speed of `helium tell` in two checkouts, alternating: before/after a change to the sampler or the loop.

    python benchmarks/tell_ab.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 5] [--max-tokens 256] [--model M]

Each round runs every setting (greedy, then Helium's default sampling with a fixed seed) in both checkouts, one
fresh process each, alternating which goes first; `tell --json` reports decode tokens/s. Prints a table of
medians and ranges, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SETTINGS = {"greedy": ["--temperature", "0"], "sampled": ["--seed", "7"]}


def tell(checkout: str, args: list[str], max_tokens: int, model: str | None) -> float:
    """One fresh `helium tell --json` in checkout; its decode tokens/s."""
    cmd = [sys.executable, "-m", "helium_tui.cli", "tell", "Once upon a time", "--max-tokens", str(max_tokens),
           "--json", *args, *(["--model", model] if model else [])]
    env = {**os.environ, "PYTHONPATH": checkout}
    out = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--model", default=None)
    opts = parser.parse_args()
    runs: dict[tuple[str, str], list[float]] = {(s, w): [] for s in SETTINGS for w in ("old", "new")}
    for r in range(opts.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for setting, args in SETTINGS.items():
            for which in order:
                path = opts.old if which == "old" else opts.new
                runs[setting, which].append(tell(path, args, opts.max_tokens, opts.model))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {opts.rounds} rounds, tok/s (median, range)")
    print(f"{'setting':<10}{'old':>22}{'new':>22}{'new/old':>10}")
    result = {}
    for setting in SETTINGS:
        old, new = runs[setting, "old"], runs[setting, "new"]
        mo, mn = statistics.median(old), statistics.median(new)
        print(f"{setting:<10}{mo:>8.0f} ({min(old):.0f}-{max(old):.0f}){'':>5}{mn:>8.0f} ({min(new):.0f}-{max(new):.0f})"
              f"{'':>5}{mn / mo:>7.2f}")
        result[setting] = {"old": old, "new": new, "ratio": mn / mo}
    print(json.dumps({"load": load, "max_tokens": opts.max_tokens, "model": opts.model, "settings": result}))


if __name__ == "__main__":
    main()
