"""Train a byte-level BPE tokenizer with HF `tokenizers`; `<|endoftext|>` is id 0 and ends each story."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from engine.model.tokenizer import TextTokenizer

EOT = "<|endoftext|>"
MAX_VOCAB = 65535  # ids must fit uint16 shards


def train_bpe(stories: Iterable[str], vocab_size: int) -> TextTokenizer:
    """A byte-level BPE with vocab_size ids trained on stories; EOT is both BOS and EOS."""
    if not 257 <= vocab_size <= MAX_VOCAB:
        raise ValueError(
            f"vocab size must be between 257 and {MAX_VOCAB} (ids are stored as uint16), got {vocab_size}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(stories, trainer=trainer)
    eot = tok.token_to_id(EOT)
    return TextTokenizer(tok, bos_id=eot, eos_id=eot)
