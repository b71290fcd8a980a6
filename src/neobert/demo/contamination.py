"""A guard that keeps evaluation text out of pre-training text, beyond the exact split itself.

Texts are compared after normalisation: lower case, accents dropped, every character other than a-z and
0-9 a word break. That is at least as coarse as what the uncased WordPiece tokenizer
keeps, so two texts the model would see as the same word sequence are the same here too (a URL counts as
the words it is made of, as it does for the tokenizer). A pre-training
document is rejected when its normalised text equals a reserved text, or when it shares any run of
`ngram` consecutive words with one (the contamination test of GPT-3's paper, there with 13 words). A
reserved text shorter than `ngram` words (down to `min_words`) is looked for whole inside the documents.

Word runs are compared by 64-bit polynomial hashes over word ids, computed for a whole list of texts at
once with numpy (a collision would only drop a document too many).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

_NON_WORD = re.compile(r"[^a-z0-9]+")
# Combining marks left by NFKD decomposition (accents): dropped, as the uncased tokenizer drops them.
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd, so the hash is a bijection on each word position


def normalise(text: str) -> str:
    """Lower case, accents stripped, every run of characters other than a-z and 0-9 one space."""
    return _NON_WORD.sub(" ", _COMBINING.sub("", unicodedata.normalize("NFKD", text.lower()))).strip()


def _window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Hash of every run of `n` consecutive ids (wrapping uint64 arithmetic)."""
    count = len(ids) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(n):
        hashes = hashes * _MULTIPLIER + ids[offset : offset + count]
    return hashes


def _member_of(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """values in `table` (sorted, unique): a binary search, much faster than np.isin on hashes."""
    slots = np.minimum(np.searchsorted(table, values), len(table) - 1)
    return table[slots] == values


class ContaminationGuard:
    """Built from the reserved (evaluation) texts; `flags(texts)` marks the texts that overlap them."""

    def __init__(self, reserved: Iterable[str], ngram: int = 13, min_words: int = 6):
        self.ngram, self.min_words = ngram, min_words
        self.vocabulary: dict[str, int] = {}
        self.exact: set[str] = set()
        long_texts, short_texts = [], []
        for text in reserved:
            normal = normalise(text)
            if not normal:
                continue
            self.exact.add(normal)
            words = normal.split()
            for word in words:
                self.vocabulary.setdefault(word, len(self.vocabulary) + 1)
            (long_texts if len(words) >= ngram else short_texts).append(words)
        ids, document = self._ids(long_texts)
        self.grams = np.unique(self._valid_windows(ids, document, ngram)[0])
        self.short: dict[int, np.ndarray] = {}
        for words in short_texts:
            if len(words) >= min_words:
                self.short.setdefault(len(words), []).append(  # type: ignore[arg-type]
                    _window_hashes(self._word_ids(words), len(words))[0]
                )
        self.short = {n: np.unique(np.asarray(h, dtype=np.uint64)) for n, h in sorted(self.short.items())}

    def _word_ids(self, words: Sequence[str]) -> np.ndarray:
        lookup = self.vocabulary.get
        # Id 0 for words absent from every reserved text: a run holding one cannot match.
        return np.fromiter((lookup(word, 0) for word in words), dtype=np.uint64, count=len(words))

    def _ids(self, texts: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' word ids end to end, and the text each word belongs to."""
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        ids = self._word_ids([word for words in texts for word in words])
        return ids, np.repeat(np.arange(len(texts)), lengths)

    @staticmethod
    def _valid_windows(ids: np.ndarray, document: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of the runs that lie inside one text, and that text's index."""
        hashes = _window_hashes(ids, n)
        inside = document[: len(hashes)] == document[n - 1 :]
        return hashes[inside], document[: len(hashes)][inside]

    def flags(self, texts: Sequence[str]) -> np.ndarray:
        """For each text: does it equal, or share a word run with, a reserved text?"""
        normals = [normalise(text) for text in texts]
        hit = np.fromiter((normal in self.exact for normal in normals), dtype=bool, count=len(texts))
        ids, document = self._ids([normal.split() for normal in normals])
        for n, table in ((self.ngram, self.grams), *self.short.items()):
            if len(table) == 0:
                continue
            hashes, owner = self._valid_windows(ids, document, n)
            hit[owner[_member_of(hashes, table)]] = True
        return hit

    def contains(self, text: str) -> bool:
        return bool(self.flags([text])[0])
