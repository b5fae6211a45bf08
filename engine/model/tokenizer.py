"""A thin wrapper over an HF `tokenizers` model: special ids and streaming detokenization.

`StreamDecoder` turns token ids into text deltas that never split a UTF-8 character and keep spaces
right for both byte-level BPE and sentencepiece-style (▁) vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from engine.errors import first_line
from engine.safe_read import read_regular, unreadable

MAX_TOKENIZER_BYTES = 256 << 20  # the largest tokenizer.json files (256k-token vocabularies) are ~40 MB


class TokenizerFileError(ValueError):
    """A tokenizer.json that cannot be loaded; the message is one line naming the file."""


def read_tokenizer(path: str | Path) -> Tokenizer:
    """An HF tokenizers file, read as a regular file (never a FIFO) of at most MAX_TOKENIZER_BYTES;
    TokenizerFileError when it is missing, unreadable or not a tokenizer."""
    try:
        data = read_regular(path, MAX_TOKENIZER_BYTES)
    except OSError as exc:
        raise TokenizerFileError(unreadable(path, exc)) from None
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
        raise TokenizerFileError(f"{path}: not a valid HF tokenizers file ({first_line(exc)})") from None


@dataclass
class TextTokenizer:
    """An HF tokenizer plus the ids a story model needs."""

    hf: Tokenizer
    bos_id: int | None  # prepended to every prompt (None: nothing prepended)
    eos_id: int | None  # the end-of-story token; generation stops on it

    @classmethod
    def from_file(cls, path: str | Path, bos_id: int | None, eos_id: int | None) -> TextTokenizer:
        """Load tokenizer.json (TokenizerFileError, one line, when it cannot be)."""
        return cls(read_tokenizer(path), bos_id, eos_id)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids for text, BOS first when the model uses one."""
        ids = self.hf.encode(text, add_special_tokens=False).ids if text else []
        return ([self.bos_id] if add_bos and self.bos_id is not None else []) + ids

    def decode(self, ids: list[int]) -> str:
        """Text for ids, special tokens dropped."""
        return self.hf.decode(ids, skip_special_tokens=True)

    def token_text(self, token_id: int) -> str:
        """A readable form of one token on its own (for the token inspector)."""
        text = self.hf.decode([token_id], skip_special_tokens=False)
        if text == "" or "\ufffd" in text:
            return self.hf.id_to_token(token_id) or f"<{token_id}>"
        return text


class StreamDecoder:
    """Incremental detokenizer: `push(id)` returns the new text (possibly empty) that id completes.

    Decodes a short window of ids that starts a few tokens back, so merges of spaces, sentencepiece's
    leading-space stripping and multi-byte characters split over byte tokens all come out right.
    """

    def __init__(self, tokenizer: TextTokenizer, context_ids: list[int] = ()) -> None:
        self.tok = tokenizer
        self.ids = list(context_ids)[-6:]  # earlier tokens only give spacing context
        self.prefix_offset = 0
        self.read_offset = len(self.ids)

    def push(self, token_id: int) -> str:
        """Add one token; return text that is now final."""
        self.ids.append(token_id)
        prefix_text = self.tok.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tok.decode(self.ids[self.prefix_offset :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            delta = new_text[len(prefix_text) :]
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Text held back at the end (an incomplete character decodes as U+FFFD)."""
        prefix_text = self.tok.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tok.decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]
