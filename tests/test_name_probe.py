"""benchmarks.name_probe (a measured experiment): which tokens count as names, and its penalty spares and raises them."""

from __future__ import annotations

import torch

from benchmarks.name_probe import name_aware, name_tokens
from engine.generation.sampler import penalize

VOCAB = [" Mia", "Mia", " She", " the", " Once", "Sp", " mia", "!"]


def test_names_are_one_capitalised_word_that_is_not_a_common_one():
    mask = name_tokens(lambda ids: VOCAB[ids[0]], len(VOCAB))
    assert [VOCAB[i] for i in range(len(VOCAB)) if mask[i]] == [" Mia", "Mia", "Sp"]
    capitals = name_tokens(lambda ids: VOCAB[ids[0]], len(VOCAB), capitals=True)
    assert [VOCAB[i] for i in range(len(VOCAB)) if capitals[i]] == [" Mia", "Mia", " She", " Once", "Sp"]


def test_seen_names_are_spared_and_raised_other_tokens_penalized_as_before():
    names = torch.tensor([True, False, False])
    logits, counts = torch.tensor([[2.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    penalties = (torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]]))
    assert penalize(logits, counts, *penalties).tolist() == [[1.0, 1.0, 2.0]]
    assert name_aware(names, 0.0)(logits, counts, *penalties).tolist() == [[2.0, 1.0, 2.0]]  # the name spared
    assert name_aware(names, 1.5)(logits, counts, *penalties).tolist() == [[3.5, 1.0, 2.0]]  # and raised
    assert name_aware(None, 1.5)(logits, counts, *penalties).tolist() == [[1.0, 1.0, 2.0]]  # off: unchanged
