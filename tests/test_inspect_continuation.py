"""engine.inspect.continuation: the knock-out view's greedy continuation, one token at a time with the keys and
values kept, tells what rerunning the whole text through `run_with_cache` for every token tells."""

from __future__ import annotations

import pytest
import torch

from engine.inspect import run_with_cache
from engine.inspect.continuation import greedy
from tests.test_inspect import GQA, WINDOW, random_slm


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread (see conftest.one_thread)."""


def rerun(model, ids: list[int], ablate, n: int, stop=None) -> list[int]:
    """The plain way: the whole text (its last context_length tokens) through run_with_cache for each token."""
    out: list[int] = []
    for _ in range(n):
        window = (ids + out)[-model.config.context_length :]
        nxt = int(run_with_cache(model, window, ablate).logits[-1].argmax())
        if nxt == stop:
            break
        out.append(nxt)
    return out


@pytest.mark.parametrize("cfg", [GQA, WINDOW], ids=["gqa-tied", "window-6-untied"])
@pytest.mark.parametrize("knock", [(), ((1, 2), (0, 0))], ids=["all-heads", "two-knocked-out"])
def test_a_token_at_a_time_tells_what_rerunning_the_text_tells(cfg, knock):
    model = random_slm(cfg, seed=3)
    ids = [
        int(i) for i in torch.randint(3, cfg.vocab_size, (20,), generator=torch.Generator().manual_seed(1))
    ]
    want = rerun(model, ids, knock, 12)
    assert greedy(model, ids, knock, 12) == want
    assert len(set(want)) > 1  # not one token repeated: the steps really depend on what came before


def test_the_knock_outs_change_the_continuation_and_it_stops_at_the_end_token():
    model = random_slm(GQA, seed=3)
    ids = list(range(10, 30))
    plain = greedy(model, ids, (), 12)
    knocked = [(0, h) for h in range(GQA.n_head)] + [(1, h) for h in range(GQA.n_head)]
    assert greedy(model, ids, knocked, 12) == rerun(model, ids, knocked, 12) != plain
    assert greedy(model, ids, (), 12, stop=plain[3]) == plain[: plain.index(plain[3])]


def test_a_text_at_the_end_of_the_context_slides_as_the_model_would():
    model = random_slm(WINDOW, seed=3)
    ids = [
        5 + (i * 7) % 250 for i in range(WINDOW.context_length - 4)
    ]  # 4 tokens fit, then the window slides
    assert greedy(model, ids, [(2, 1)], 10) == rerun(model, ids, [(2, 1)], 10)
