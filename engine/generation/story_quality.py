"""How good a model's stories are under some sampling settings, measured the same way every time.

Text measures (torch-free, tested on fixed texts): the prompt's character name kept, invented names, repeated
4-grams, loops, stories that end, length; `draw` tells seeded stories from fixed prompts and `score` sums them up.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Fixed prompts, each naming one character (the name is the last word): stories cycle through them in order
PROMPTS: tuple[tuple[str, str], ...] = (
    ("Once upon a time, there was a little girl named Mia.", "Mia"),
    ("Sam had a red ball. One day, Sam", "Sam"),
    ("Tom and his dog went to the park.", "Tom"),
    ("Bella was a small cat who liked to play.", "Bella"),
    ("Lucy wanted to bake a cake for her mom.", "Lucy"),
    ("Once upon a time, a boy named Ben found a box.", "Ben"),
)
# Capitalised words that are not invented names: what starts sentences, family words, days, interjections
COMMON = frozenset("""
a an the and but so then when while after before if because as once one two three some every all this that
these those there here it its he she they we you i me him her them us my your his their our who what where why
how which yes no not oh wow hello hi hey bye please thank thanks okay ok sorry look let lets come go see can
could would should will shall may might must do does did is are was were be been have has had get got make
made up down out in on at by for from with without into over under again soon now later today tomorrow
yesterday suddenly finally together also even just still maybe sometimes always never too very only
mom mommy mum mummy dad daddy mother father mama papa grandma grandpa granny nana sister brother baby
mr mrs miss sir lady king queen prince princess god santa monday tuesday wednesday thursday friday
saturday sunday christmas easter halloween the end moral story little big good bad happy sad
""".split())
WORD = re.compile(r"[A-Za-z][A-Za-z']*")
SENTENCE_END = re.compile(r"[.!?\"”]\s*$")
LOOP_NGRAM, LOOP_REPEATS = 6, 3  # a story loops when some 6 words come 3 times or more


def words(text: str) -> list[str]:
    """The text's words (letters and apostrophes)."""
    return WORD.findall(text)


def name_kept(name: str, text: str) -> bool:
    """True when the character's name comes back in text as a whole word (any case of its first letter)."""
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def invented_names(prompt: str, text: str) -> list[str]:
    """The distinct names text brings in that the prompt did not: capitalised words, not in the prompt, not a
    common word (COMMON), two letters or more, that appear mid-sentence at least once or never in lower case in the text."""
    known = {w.lower() for w in words(prompt)}
    lower = {w for w in words(text) if w[0].islower()}
    found: dict[str, bool] = {}  # name -> seen mid-sentence
    for match in WORD.finditer(text):
        word = re.sub(r"'.*$", "", match.group())  # Mia's -> Mia, I'm -> I
        if len(word) < 2 or not word[0].isupper() or word.lower() in known or word.lower() in COMMON:
            continue
        before = text[: match.start()].rstrip()
        mid = bool(before) and SENTENCE_END.search(before) is None
        found[word] = found.get(word, False) or mid
    return [w for w, mid in found.items() if mid or w.lower() not in lower]


def repeated_ngrams(text: str, n: int = 4) -> float:
    """(n-grams − distinct n-grams) / n-grams of the text's words (0 for a text shorter than n words)."""
    ws = [w.lower() for w in words(text)]
    grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def loops(text: str) -> bool:
    """True when some LOOP_NGRAM words in a row come back LOOP_REPEATS times or more."""
    ws = [w.lower() for w in words(text)]
    counts = Counter(tuple(ws[i : i + LOOP_NGRAM]) for i in range(len(ws) - LOOP_NGRAM + 1))
    return bool(counts) and max(counts.values()) >= LOOP_REPEATS


def ends(text: str, finish_reason: str) -> bool:
    """True for a story that ends: the model's end token, or "The end" as its last words."""
    return finish_reason == "eos" or re.search(r"\bthe end\W*$", text.strip(), re.IGNORECASE) is not None


@dataclass(frozen=True)
class Story:
    """One drawn story and what it was drawn from."""

    prompt: str
    name: str
    seed: int
    text: str  # the generated text only
    finish_reason: str


def score(stories: Sequence[Story]) -> dict[str, Any]:
    """The measures over stories: name kept (%), invented names per story, repeated 4-grams (%), loops (count),
    ended (%), mean length (words)."""
    n = max(len(stories), 1)
    return {
        "stories": len(stories),
        "name_kept_pct": round(100 * sum(name_kept(s.name, s.text) for s in stories) / n, 1),
        "invented_names": round(sum(len(invented_names(s.prompt, s.text)) for s in stories) / n, 2),
        "repeated_4grams_pct": round(100 * sum(repeated_ngrams(s.text) for s in stories) / n, 1),
        "loops": sum(loops(s.text) for s in stories),
        "ended_pct": round(100 * sum(ends(s.text, s.finish_reason) for s in stories) / n, 1),
        "mean_words": round(sum(len(words(s.text)) for s in stories) / n, 1),
    }


def draw(generator: Any, params: Any, count: int, first_seed: int = 1) -> list[Story]:
    """count seeded stories from PROMPTS in turn (story i: prompt i mod len(PROMPTS), seed first_seed + i),
    told one batch per prompt; params: the SamplingParams (its seed is replaced)."""
    from dataclasses import replace

    from engine.generation.telling import Request

    stories: list[Story] = []
    for p, (prompt, name) in enumerate(PROMPTS):
        seeds = [first_seed + i for i in range(p, count, len(PROMPTS))]
        if not seeds:
            continue
        requests = [Request(prompt, replace(params, seed=seed)) for seed in seeds]
        telling = generator.tell(requests)
        for _ in telling:
            pass
        for seed, row in zip(seeds, telling.rows, strict=True):
            result = row.result
            stories.append(Story(prompt, name, seed, result.text, result.finish_reason))
    return sorted(stories, key=lambda s: s.seed)
