"""Cross-entropy of a model on a text file: nats per token and bits per UTF-8 byte.

Stories separated by `<|endoftext|>` lines are scored as separate documents; text without separators is
one stream scored with a sliding window (stride half the context, every token scored once, with as much
context as the window gives). Bits per byte do not depend on the tokenizer, so any two models compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from engine.model import TinySLM
from engine.tokenizer import TextTokenizer

SEPARATOR = "<|endoftext|>"


@dataclass
class EvalResult:
    """Totals of one evaluation."""

    nats_per_token: float
    bits_per_byte: float
    tokens: int  # tokens scored
    bytes: int  # UTF-8 bytes of the scored text
    documents: int
    nll_nats: float  # total negative log-likelihood

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def split_documents(text: str) -> list[str]:
    """Documents separated by `<|endoftext|>` lines; the whole text is one document without them."""
    if SEPARATOR not in text:
        doc = text.strip("\n")
        return [doc] if doc.strip() else []
    docs = (d.strip("\n") for d in text.split(SEPARATOR))
    return [d for d in docs if d.strip()]


@dataclass
class Window:
    """A slice of token ids to run, of which the last `score` targets are counted."""

    ids: list[int]
    score: int


def windows(ids: list[int], context: int) -> Iterator[Window]:
    """Cover ids[1:] as targets: the first window scores all it sees, later ones their last stride tokens."""
    stride = max(1, context // 2)
    if len(ids) <= context + 1:
        yield Window(ids, len(ids) - 1)
        return
    yield Window(ids[: context + 1], context)
    end = context + 1
    while end < len(ids):
        new_end = min(end + stride, len(ids))
        yield Window(ids[max(0, new_end - context - 1) : new_end], new_end - end)
        end = new_end


@torch.inference_mode()
def score_window(model: TinySLM, w: Window, device: torch.device) -> float:
    """Summed negative log-likelihood (nats) of the window's scored targets, computed in float32."""
    x = torch.tensor([w.ids[:-1]], device=device)
    y = torch.tensor(w.ids[1:], device=device)
    logits = model(x)[0, -w.score :].float()
    return float(F.cross_entropy(logits, y[-w.score :], reduction="sum"))


def evaluate_text(
    model: TinySLM,
    tokenizer: TextTokenizer,
    text: str,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Score text (see module docstring); progress(done_tokens, total_tokens) is called as it goes."""
    model.eval()
    device = model.tok_embeddings.weight.device
    docs = split_documents(text)
    if not docs:
        raise ValueError("no text to evaluate")
    encoded = [tokenizer.encode(d, add_bos=True) for d in docs]
    if tokenizer.bos_id is None:  # no start token: the first token of each document is not scored
        encoded = [ids for ids in encoded if len(ids) > 1]
    total = sum(len(ids) - 1 for ids in encoded)
    nll, done = 0.0, 0
    for ids in encoded:
        for w in windows(ids, model.config.context_length):
            nll += score_window(model, w, device)
            done += w.score
            if progress:
                progress(done, total)
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    return EvalResult(
        nats_per_token=nll / total,
        bits_per_byte=nll / math.log(2) / nbytes,
        tokens=total,
        bytes=nbytes,
        documents=len(docs),
        nll_nats=nll,
    )
