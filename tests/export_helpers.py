"""Helpers shared by the export tests: a llama2.c-style vocabulary built in-process and run.c's encoder.

Also `one_error`: a command failed with exit 2 and exactly one `helium: error:` line.
"""

from __future__ import annotations


def spm_pieces() -> tuple[list[bytes], list[float]]:
    """Pieces and scores shaped like a llama2.c tokenizer.bin: specials, 256 bytes, characters, merges and
    runs of spaces that all score -1e9 (as in Llama 2's vocabulary)."""
    chars = list(" abdeghinorstTwy.,\n")
    merged = ["he", " t", " the", " a", "an", " an", "nd", " and", "ig", " big", "ow", " w", "as", " was"]
    runs = ["  ", "   ", "    "]
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    scores = [0.0] * len(pieces)
    for rank, text in enumerate(merged):
        pieces.append(text.encode())
        scores.append(-float(rank))
    for text in runs:
        pieces.append(text.encode())
        scores.append(-1e9)
    for ch in chars:
        pieces.append(ch.encode())
        scores.append(-100.0 - len(pieces))
    return pieces, scores


def runc_encode(text: str, tokens: list[str], scores: list[float]) -> list[int]:
    """llama2.c's run.c encode() (and llama.cpp's sentencepiece loop): merge the best-scoring adjacent pair,
    the leftmost on a tie, after a dummy-prefix space; unknown characters fall back to byte tokens."""
    index = {t: i for i, t in enumerate(tokens)}
    symbols: list[int] = []
    for ch in "▁" + text.replace(" ", "▁"):
        symbols += [index[ch]] if ch in index else [3 + b for b in ch.encode()]
    while True:
        best, at = -1e10, -1
        for i in range(len(symbols) - 1):
            j = index.get(tokens[symbols[i]] + tokens[symbols[i + 1]])
            if j is not None and scores[j] > best:
                best, at, merged = scores[j], i, j
        if at < 0:
            return symbols
        symbols[at : at + 2] = [merged]


SPM_TEXTS = ["the big dog was here", "  the   and    an", "a\n\nb  ", "Two  words", "héllo ☃", "was     wow"]


def one_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("helium: error: "), result.stderr
    return lines[0]
