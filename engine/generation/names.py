"""Which tokens of a vocabulary are a character's name, for the sampler's `name_bonus` (names spared from the
repetition penalties, the ones already in the text raised): one capitalised word that is not a common word.

`name_tokens` decodes every token once; `Generator.names` keeps the mask per model, computed on first use.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from engine.generation.story_quality import COMMON

NAME = re.compile(r"^\s?[A-Z][a-z]+$")  # one capitalised word, with or without its leading space


def is_name(text: str) -> bool:
    """True for a token's text that is a name: `Mia`, ` Tom`; not ` She`, `The`, ` Mom`, `Ab.`."""
    return bool(NAME.match(text)) and text.strip().lower() not in COMMON


def name_tokens(decode: Callable[[list[int]], str], vocab_size: int) -> torch.Tensor:
    """(V,) bool: which token ids decode (alone) to a name (`is_name`)."""
    return torch.tensor([is_name(decode([i])) for i in range(vocab_size)], dtype=torch.bool)
