"""A faster route to BERT WordPiece ids: normalise and split in Python, look each distinct word up once.

BERT's normaliser works character by character (control characters dropped, CJK characters spaced,
accents stripped, lower case), its pre-tokeniser splits at spaces and isolates punctuation, and WordPiece
then maps each word on its own. So a document can be normalised with `str.lower` (ASCII) or `str.translate`
(a table of each character's normal form), split with one regular expression, and every distinct word
tokenised once and cached. The Rust tokenizer's offset bookkeeping, most of its time, is skipped.

Exactness is by construction: the normal form and the class (word character, punctuation, space) of every
non-ASCII character are learned by running the real normaliser and pre-tokeniser on it, and characters
whose treatment could depend on their neighbours are refused (capital sigma, whose lower case does in
Python; combining marks that NFD reordering could move and that are not stripped). A document holding a
refused character, an ASCII control character or an added token ([CLS], [MASK], ... are matched in raw
text) takes the full tokenizer instead. `tests/data/test_data_prepare.py` compares both on random Unicode text.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from typing import Any

import numpy as np

ASCII_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ASCII_PUNCTUATION = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())
_CAPITAL_SIGMA = "\u03a3"


class WordCache:
    """Distinct words -> their WordPiece ids, stored end to end in one array, so that a batch's tokens are
    gathered with numpy rather than Python lists. Cleared when it holds `limit` words (bounded memory)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.clear()

    def clear(self) -> None:
        self.index: dict[str, int] = {}
        self.starts, self.lengths = np.zeros(1024, np.int64), np.zeros(1024, np.int64)
        self.tokens = np.zeros(1 << 16, np.int64)
        self.size = 0

    def add(self, words: list[str], ids: list[list[int]]) -> None:
        first, count = len(self.index), len(words)
        lengths = np.fromiter(map(len, ids), np.int64, count)
        flat = np.fromiter(itertools.chain.from_iterable(ids), np.int64, int(lengths.sum()))
        while first + count > len(self.starts):
            self.starts = np.resize(self.starts, 2 * len(self.starts))
            self.lengths = np.resize(self.lengths, 2 * len(self.lengths))
        while self.size + len(flat) > len(self.tokens):
            self.tokens = np.resize(self.tokens, 2 * len(self.tokens))
        self.starts[first : first + count] = self.size + np.cumsum(lengths) - lengths
        self.lengths[first : first + count] = lengths
        self.tokens[self.size : self.size + len(flat)] = flat
        self.size += len(flat)
        self.index.update(zip(words, range(first, first + count), strict=True))

    def gather(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of the words end to end, and how many ids each word has."""
        word_ids = np.fromiter(map(self.index.__getitem__, words), np.int64, len(words))
        lengths = self.lengths[word_ids]
        ends = np.cumsum(lengths)
        total = int(ends[-1]) if len(ends) else 0
        positions = np.arange(total) + np.repeat(self.starts[word_ids] - (ends - lengths), lengths)
        return self.tokens[positions], lengths


class WordPath:
    """Encodes the documents it `accepts()` exactly as the tokenizer would, several times faster."""

    @classmethod
    def for_tokenizer(cls, backend_json: str, cache_size: int = 1 << 20) -> WordPath | None:
        """A word path for BERT-style tokenizers; None for any other kind."""
        config = json.loads(backend_json)
        kinds = tuple((config.get(part) or {}).get("type") for part in ("normalizer", "pre_tokenizer", "model"))
        if kinds != ("BertNormalizer", "BertPreTokenizer", "WordPiece"):
            return None
        return cls(backend_json, config, cache_size)

    def __init__(self, backend_json: str, config: dict[str, Any], cache_size: int):
        from tokenizers import Tokenizer

        self.reference = Tokenizer.from_str(backend_json)  # probed for each new character
        self.words = Tokenizer.from_str(backend_json)  # tokenises single, already normalised words
        self.words.no_truncation()
        self.words.no_padding()
        self.words.normalizer = None
        normalizer = config["normalizer"]
        self.lowercase = bool(normalizer.get("lowercase"))
        strip = normalizer.get("strip_accents")
        self.strips_accents = bool(strip) or (strip is None and self.lowercase)
        added = [token["content"] for token in config.get("added_tokens") or []]
        self.added = re.compile("|".join(map(re.escape, added))) if added else None
        # str.translate table for documents with non-ASCII characters: ASCII case, then learned characters.
        self.table: dict[int, str] = {c: chr(c).lower() for c in range(65, 91)} if self.lowercase else {}
        self.refused: set[str] = set()
        self._set_punctuation(ASCII_PUNCTUATION)
        self.cache = WordCache(cache_size)

    def _set_punctuation(self, punctuation: str) -> None:
        self.punctuation = punctuation
        escaped = re.escape(punctuation)
        self.split = re.compile(f"[^\\s{escaped}]+|[{escaped}]").findall

    def _context_free(self, char: str) -> bool:
        if char == _CAPITAL_SIGMA:
            return False
        if not self.strips_accents:
            return True  # no NFD, so nothing is reordered
        # NFD reorders runs of combining marks; harmless only when every mark in the run is then stripped.
        return all(
            not unicodedata.combining(c) or unicodedata.category(c) == "Mn" for c in unicodedata.normalize("NFD", char)
        )

    def _learn(self, char: str) -> bool:
        """Adds a non-ASCII character's normal form to the table, or refuses the character."""
        if not self._context_free(char):
            return False
        normal = self.reference.normalizer.normalize_str(char)
        new_punctuation = []
        for piece in set(normal):
            if piece.isascii():
                if ASCII_CONTROLS.match(piece):
                    return False
                continue
            split = [word for word, _ in self.reference.pre_tokenizer.pre_tokenize_str(f"a{piece}a")]
            if split == [f"a{piece}a"] and not piece.isspace():
                continue  # a word character
            if split == ["a", piece, "a"] and not piece.isspace():
                new_punctuation.append(piece)
            elif not (split == ["a", "a"] and piece.isspace()):
                return False
        self.table[ord(char)] = normal
        if new_punctuation:
            self._set_punctuation(self.punctuation + "".join(new_punctuation))
        return True

    def accepts(self, text: str) -> bool:
        if self.added is not None and self.added.search(text) is not None:
            return False
        if text.isascii():
            return ASCII_CONTROLS.search(text) is None
        for char in set(text):
            if char.isascii():
                if ASCII_CONTROLS.match(char):
                    return False
            elif ord(char) not in self.table:
                if char in self.refused:
                    return False
                if not self._learn(char):
                    self.refused.add(char)
                    return False
        return True

    def normalise(self, text: str) -> str:
        if text.isascii():
            return text.lower() if self.lowercase else text
        return text.translate(self.table)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(lengths, tokens) of accepted texts."""
        words = [self.split(self.normalise(text)) for text in texts]
        flat = list(itertools.chain.from_iterable(words))
        unseen = list(set(flat).difference(self.cache.index))
        if unseen:
            if len(self.cache.index) + len(unseen) > self.cache.limit:
                self.cache.clear()
                unseen = list(set(flat))
            encode = getattr(self.words, "encode_batch_fast", self.words.encode_batch)
            self.cache.add(unseen, [e.ids for e in encode(unseen, add_special_tokens=False)])
        tokens, word_lengths = self.cache.gather(flat)
        word_counts = np.fromiter(map(len, words), np.int64, len(words))
        token_ends = np.concatenate([[0], np.cumsum(word_lengths)])
        word_ends = np.cumsum(word_counts)
        return token_ends[word_ends] - token_ends[word_ends - word_counts], tokens
