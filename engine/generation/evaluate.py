"""Cross-entropy of a model on a text file: nats per token and bits per UTF-8 byte, in bounded memory.

Stories separated by `<|endoftext|>` are scored as separate documents; text without separators is one stream
scored with a sliding window (stride half the context, every token scored once, with as much context as the
window gives). Files are read and tokenized in blocks (a document longer than a block is cut at a line end),
so a 200 MB file costs no more memory than a 1 MB one. Bits per byte do not depend on the tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.model.tinyslm import TinySLM
from engine.model.tokenizer import TextTokenizer

SEPARATOR = "<|endoftext|>"
BLOCK_CHARS = 1 << 20  # text tokenized at a time; a longer document is cut at a line end


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
    """Documents separated by `<|endoftext|>`; the whole text is one document without them."""
    return ["".join(doc) for doc in documents(iter([text]))]


def read_pieces(path: Path, block_chars: int = BLOCK_CHARS, on_bytes: Callable[[int], None] | None = None
                ) -> Iterator[str]:  # fmt: skip
    """The file's text in pieces of about block_chars characters (on_bytes(n) after each read)."""
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    with open(path, "rb") as raw:
        import io

        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        while piece := text.read(block_chars):
            if on_bytes:
                on_bytes(raw.tell())
            yield piece


def documents(pieces: Iterator[str]) -> Iterator[Iterator[str]]:
    """Split a stream of text pieces at `<|endoftext|>` into documents, each an iterator of its own pieces.

    Each document is stripped of leading and trailing newlines; documents that are only whitespace are
    skipped. Consume each document fully before asking for the next.
    """
    stream = _Separated(pieces)
    while not stream.exhausted:
        doc = _Document(stream)
        if doc.has_text():
            yield doc
        doc.drain()
        stream.next_document()


class _Separated:
    """Pieces of text with the separator cut out: `take()` gives text up to the next separator."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self.pieces, self.buffer, self.at_separator, self.exhausted = pieces, "", False, False

    def take(self) -> str | None:
        """More text of the current document, or None at its end."""
        while not self.at_separator:
            cut = self.buffer.find(SEPARATOR)
            if cut >= 0:
                out, self.buffer = self.buffer[:cut], self.buffer[cut + len(SEPARATOR) :]
                self.at_separator = True
                return out or None
            keep = len(SEPARATOR) - 1  # a separator may straddle two pieces
            if len(self.buffer) > keep:
                out, self.buffer = self.buffer[:-keep], self.buffer[-keep:]
                return out
            piece = next(self.pieces, None)
            if piece is None:
                out, self.buffer = self.buffer, ""
                self.at_separator = self.exhausted = True
                return out or None
            self.buffer += piece
        return None

    def next_document(self) -> None:
        """Move past the separator that ended the current document."""
        self.at_separator = self.exhausted


class _Document:
    """One document's text, leading and trailing newlines stripped, as an iterator of pieces."""

    def __init__(self, stream: _Separated) -> None:
        self.stream = stream
        self.pending = ""  # text held back: leading whitespace not yet known to be followed by text, or
        self.started = False  # trailing newlines that may end the document
        self.ended = False

    def has_text(self) -> bool:
        """Read ahead until something other than whitespace appears (False: the document is blank)."""
        while not self.ended and not self.pending.strip():
            piece = self.stream.take()
            if piece is None:
                self.ended = True
            else:
                self.pending += piece.lstrip("\n") if not self.pending else piece
        return bool(self.pending.strip())

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            if self.ended:
                if not self.started and self.pending:
                    self.started, out, self.pending = True, self.pending.rstrip("\n"), ""
                    return out
                raise StopIteration
            piece = self.stream.take()
            if piece is None:
                self.ended = True
                out, self.pending = self.pending.rstrip("\n"), ""
                if out:
                    self.started = True
                    return out
                raise StopIteration
            text = self.pending + piece
            body = text.rstrip("\n")
            self.pending = text[len(body) :]  # trailing newlines wait: they may end the document
            if body:
                self.started = True
                return body

    def drain(self) -> None:
        """Skip whatever is left of the document."""
        for _ in self:
            pass


@dataclass
class Window:
    """A slice of token ids to run, of which the last `score` targets are counted."""

    ids: list[int]
    score: int


def windows(ids: list[int], context: int) -> Iterator[Window]:
    """Cover ids[1:] as targets: the first window scores all it sees, later ones their last stride tokens."""
    scorer = _WindowCutter(context)
    yield from scorer.feed(ids)
    yield from scorer.finish()


class _WindowCutter:
    """`windows` over ids that arrive in chunks: the same windows, holding at most a context of old ids."""

    def __init__(self, context: int) -> None:
        self.context, self.stride = context, max(1, context // 2)
        self.ids: list[int] = []  # ids from absolute position `offset` on
        self.offset = 0
        self.end = 0  # targets before this absolute position are scored (0: no window yet)

    def _slice(self, lo: int, hi: int) -> list[int]:
        return self.ids[lo - self.offset : hi - self.offset]

    def _trim(self) -> None:
        keep_from = max(self.offset, self.end - self.context - 1)
        del self.ids[: keep_from - self.offset]
        self.offset = keep_from

    def feed(self, ids: list[int]) -> Iterator[Window]:
        """Windows that the ids so far complete."""
        self.ids.extend(ids)
        n = self.offset + len(self.ids)
        if self.end == 0 and n > self.context + 1:
            self.end = self.context + 1
            yield Window(self._slice(0, self.end), self.context)
        while self.end and n >= self.end + self.stride:
            new_end = self.end + self.stride
            yield Window(self._slice(new_end - self.context - 1, new_end), new_end - self.end)
            self.end = new_end
        self._trim()

    def finish(self) -> Iterator[Window]:
        """The last windows, once every id has arrived."""
        n = self.offset + len(self.ids)
        if self.end == 0:
            if n >= 2:
                yield Window(self._slice(0, n), n - 1)
            return
        while self.end < n:
            new_end = min(self.end + self.stride, n)
            yield Window(self._slice(max(0, new_end - self.context - 1), new_end), new_end - self.end)
            self.end = new_end


@torch.inference_mode()
def score_window(model: TinySLM, w: Window, device: torch.device) -> float:
    """Summed negative log-likelihood (nats) of the window's scored targets, computed in float32."""
    x = torch.tensor([w.ids[:-1]], device=device)
    y = torch.tensor(w.ids[1:], device=device)
    logits = model(x)[0, -w.score :].float()
    return float(F.cross_entropy(logits, y[-w.score :], reduction="sum"))


def _chunks(doc: Iterable[str], block_chars: int) -> Iterator[str]:
    """A document's text regrouped into blocks of at least block_chars, cut after a line end where possible."""
    buffer = ""
    for piece in doc:
        buffer += piece
        while len(buffer) >= block_chars:
            cut = buffer.rfind("\n", 0, len(buffer) - 1) + 1 or len(buffer)
            out, buffer = buffer[:cut], buffer[cut:]
            yield out
    if buffer:
        yield buffer


def evaluate_documents(
    model: TinySLM,
    tokenizer: TextTokenizer,
    docs: Iterable[Iterable[str]],
    block_chars: int = BLOCK_CHARS,
    on_window: Callable[[int], None] | None = None,
) -> EvalResult:
    """Score documents (each an iterable of text pieces); on_window(tokens_scored_so_far) after each window."""
    model.eval()
    device = model.tok_embeddings.weight.device
    nll, tokens, nbytes, count = 0.0, 0, 0, 0
    for doc in docs:
        count += 1
        cutter = _WindowCutter(model.config.context_length)
        first = True
        pending: list[Window] = []
        for block in _chunks(doc, block_chars):
            nbytes += len(block.encode("utf-8"))
            ids = tokenizer.encode(block, add_bos=first)
            first = False
            pending.extend(cutter.feed(ids))
            while pending:
                w = pending.pop(0)
                nll += score_window(model, w, device)
                tokens += w.score
                if on_window:
                    on_window(tokens)
        for w in cutter.finish():
            nll += score_window(model, w, device)
            tokens += w.score
            if on_window:
                on_window(tokens)
    if not count or not tokens:
        raise ValueError("no text to evaluate")
    return EvalResult(
        nats_per_token=nll / tokens,
        bits_per_byte=nll / math.log(2) / nbytes,
        tokens=tokens,
        bytes=nbytes,
        documents=count,
        nll_nats=nll,
    )


def evaluate_text(model: TinySLM, tokenizer: TextTokenizer, text: str) -> EvalResult:
    """Score text held in memory (see the module docstring)."""
    return evaluate_documents(model, tokenizer, documents(iter([text])))


def evaluate_file(
    model: TinySLM,
    tokenizer: TextTokenizer,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
    block_chars: int = BLOCK_CHARS,
) -> EvalResult:
    """Score a UTF-8 text file in bounded memory; progress(bytes_read, file_bytes) as it goes."""
    total = path.stat().st_size if path.is_file() else 0
    on_bytes = (lambda done: progress(done, total)) if progress else None
    pieces = read_pieces(path, block_chars, on_bytes)
    return evaluate_documents(model, tokenizer, documents(pieces), block_chars)
