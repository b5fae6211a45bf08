"""`python benchmarks/inspect_view.py` (or `helium bench inspect`): what opening the "look inside" view costs on a story.

Times, on a 400-token story, for the shipped default model and nano's shape with random weights: what the studio's
view computes before it draws (`helium_tui.look_data.compute` and `read`: one `run_with_cache`, the lens and the
attribution of the selected token), and what `helium inspect` computes (`run_with_cache`, the whole logit lens over
every layer and position, one token's attribution); prints a table and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

STORY = (
    "Once upon a time, there was a little girl named Lily. She lived in a small house with her mom, her dad and "
    "her dog Max. Lily loved to play outside. Every day, she ran in the garden and looked at the flowers. One "
    'day, Lily saw a big red ball under a tree. She did not know whose ball it was. "Mom, can I play with this '
    'ball?" she asked. Her mom smiled and said, "Yes, but you have to share it with your friends." Lily was '
    "happy. She took the ball to the park. At the park, she met a boy named Tom. Tom was sad because he had lost "
    'his ball. "Is this your ball?" Lily asked. Tom looked at the ball and his face lit up. "Yes! Thank you!" '
    'he said. Lily gave the ball to Tom. Tom said, "Let\'s play together!" They kicked the ball and ran and '
    "laughed all afternoon. Max ran after the ball too, and he barked when it went high in the sky. When the sun "
    'went down, Lily and Tom were tired but happy. Tom said, "You are a good friend, Lily." Lily smiled. She '
    "learned that sharing and being kind makes everyone happy. The next day, Lily and Tom met again at the park. "
    "This time, Tom brought a kite. The kite was blue and yellow, and it had a long tail. The wind was strong, "
    'so the kite flew very high. Lily clapped her hands. "It is like a bird!" she said. Then the string slipped '
    "from Tom's hand and the kite flew away over the trees. Tom was sad again. Lily held his hand and said, "
    '"Don\'t be sad. We can make a new kite together." They went home and made a kite from paper and sticks. '
    "It was not as big as the old one, but it was their kite. They flew it every day, and they were best "
    "friends forever. The end."
)


@dataclass
class Timing:
    """One model's timings: the best and the median of the repeats, in seconds."""

    model: str
    tokens: int
    parameters: int
    runs: dict[str, list[float]] = field(default_factory=dict)  # phase -> seconds of each repeat

    def best(self, phase: str) -> float:
        return min(self.runs[phase])

    def median(self, phase: str) -> float:
        return statistics.median(self.runs[phase])


PHASES = (
    "view",
    "view_cpu",
    "run_with_cache",
    "logit_lens",
    "attribution",
    "total",
    "total_cpu",
    "model_forward",
)
# view: opening the studio's view (its computation, not the drawing), with the next-token slot selected;
# run_with_cache, logit_lens (all layers and positions), attribution: `helium inspect`'s steps, total their sum;
# *_cpu: the process's CPU seconds for the same (on a shared machine, wall time is also other jobs');
# model_forward: the model's own forward over the same tokens, the baseline run_with_cache is measured against


def load(name: str):
    """(model, tokenizer, ids of STORY) for 'default' (the shipped bundle) or a preset name (random weights; the
    default model's tokenizer, whose ids are all in any preset's vocabulary)."""
    import torch

    from engine.bundles.bundle import load_bundle
    from engine.bundles.registry import resolve_model
    from engine.model.config import get_preset
    from engine.model.tinyslm import TinySLM

    default = load_bundle(resolve_model(None))
    ids = default.tokenizer.encode(STORY)
    if name == "default":
        return default.model.eval(), default.tokenizer, ids
    torch.manual_seed(0)
    return TinySLM(get_preset(name)).eval(), default.tokenizer, ids


def time_model(name: str, tokens: int, repeats: int) -> Timing:
    """Time opening the view, and `helium inspect`'s steps, on the last min(tokens, context) tokens of the story."""
    import torch

    from engine.inspect import direct_logit_attribution, logit_lens, run_with_cache, token_attribution
    from helium_tui.look_data import compute, read

    model, tok, ids = load(name)
    while len(ids) < tokens:
        ids = ids + ids
    ids = ids[:tokens][-model.config.context_length :]
    timing = Timing(name, len(ids), model.config.parameters, {phase: [] for phase in PHASES})
    for _ in range(repeats + 1):  # the first run warms up (threads, allocator) and is not counted
        with torch.no_grad():
            start = time.perf_counter()
            model(torch.tensor([ids]))
            forward = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        look = compute(model, tok, ids, 0)
        read(look, look.length)  # what the view shows first: the slot after the story
        view, view_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        cache = run_with_cache(model, ids)
        cached = time.perf_counter()
        lens = logit_lens(model, cache)
        lensed = time.perf_counter()
        position, token = len(ids) - 2, ids[-1]
        direct_logit_attribution(model, cache, position, token)
        token_attribution(model, cache, position, token)
        done, cpu = time.perf_counter(), time.process_time() - cpu
        assert lens.probs.shape[0] == model.config.n_layer + 1
        times = (view, view_cpu, cached - start, lensed - cached, done - lensed, done - start, cpu, forward)
        for phase, seconds in zip(PHASES, times, strict=True):
            timing.runs[phase].append(seconds)
    for phase in PHASES:
        timing.runs[phase] = timing.runs[phase][1:]
    return timing


def bench_inspect(models: list[str], tokens: int = 400, repeats: int = 3, threads: int | None = None) -> dict:
    """Timings of each model and the machine's load average while they ran, as one JSON-ready dict."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    load_before = os.getloadavg()
    timings = [time_model(name, tokens, repeats) for name in models]
    return {
        "threads": torch.get_num_threads(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "models": [asdict(t) | {"best": {p: round(t.best(p), 4) for p in PHASES}} for t in timings],
    }


def rows(report: dict) -> list[tuple[str, str]]:
    """The table's (metric, value) rows."""
    out = []
    for m in report["models"]:
        label = f"{m['model']} ({m['parameters'] / 1e6:.1f}M, {m['tokens']} tokens)"
        for phase in PHASES:
            runs = m["runs"][phase]
            out.append((f"{label}: {phase}", f"{min(runs):.3f} s (median {statistics.median(runs):.3f})"))
    out.append(("threads", str(report["threads"])))
    out.append(
        (
            "load average (1, 5, 15 min) before / after",
            f"{report['load_average_before']} / {report['load_average_after']}",
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["default", "nano"], help="'default' and/or preset names"
    )
    parser.add_argument("--tokens", type=int, default=400, help="story length (cut to each model's context)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs after one warm-up (best is reported)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object after the table")
    args = parser.parse_args()
    report = bench_inspect(args.models, args.tokens, args.repeats, args.threads)
    width = max(len(name) for name, _ in rows(report))
    for name, value in rows(report):
        print(f"{name:<{width}}  {value}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
