"""Documents -> content token ids, fast: the Rust tokenizer in batches, and a word path for plain ASCII.

Shards store each document's content ids only; [CLS] and [SEP] are added when sequences are formed
(`neobert.data.sequences`), so one prepared corpus serves any sequence length.

The word path: for text that is pure ASCII without control characters, BERT's normaliser reduces to
lower-casing and its pre-tokeniser to a regular-expression split, and WordPiece then maps each word on its
own. So each distinct word goes through the tokenizer once and is looked up from a cache afterwards, which
halves the tokenising time on English text. Every other text goes through the full Rust tokenizer;
`tests/test_data_prepare.py` checks that both give the tokenizer's ids.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ASCII control characters that BERT's clean-up removes (tab, newline and carriage return are kept as spaces).
_ASCII_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# BERT's pre-tokeniser on ASCII: runs of letters and digits, and every other non-space character alone.
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+|[^\sA-Za-z0-9]")
SPECIAL_TOKEN_NAMES = ("pad", "unk", "cls", "sep", "mask")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in it, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything a worker process needs to rebuild the tokenizer, and what identifies it in a manifest."""

    backend_json: str
    vocab_size: int
    special_ids: dict[str, int]
    name: str = ""
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", fingerprint_backend(self.backend_json))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenizerSpec:
        """From a transformers fast tokenizer (what `neobert.load_tokenizer()` returns)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError("prepare needs a fast (Rust) tokenizer; got a slow one without backend_tokenizer")
        special_ids = {}
        for name in SPECIAL_TOKEN_NAMES:
            token_id = getattr(tokenizer, f"{name}_token_id", None)
            if token_id is None:
                raise ValueError(f"the tokenizer has no {name} token; NeoBERT's data pipeline needs one")
            special_ids[name] = int(token_id)
        return cls(backend.to_str(), len(tokenizer), special_ids, str(getattr(tokenizer, "name_or_path", "")))

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the tokenizer."""
        return {
            "name": self.name or "bert-base-uncased (neobert.load_tokenizer)",
            "fingerprint": self.fingerprint,
            "vocab_size": self.vocab_size,
            "special_ids": dict(self.special_ids),
            "dtype": token_dtype(self.vocab_size).name,
        }


def fingerprint_backend(backend_json: str) -> str:
    """sha256 over what decides the ids (normaliser, pre-tokeniser, model with its vocabulary, added
    tokens), not over padding or truncation settings, which `prepare` switches off anyway."""
    spec = json.loads(backend_json)
    decisive = {key: spec.get(key) for key in ("normalizer", "pre_tokenizer", "model", "added_tokens")}
    canonical = json.dumps(decisive, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def heldout_flags(texts: list[str], fraction: float) -> np.ndarray:
    """Whether each document belongs to the held-out split: a stable hash of its text, so the split does
    not depend on order, workers or platform, and duplicates always land on the same side."""
    if fraction <= 0:
        return np.zeros(len(texts), dtype=bool)
    threshold = int(fraction * (1 << 64))
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
            < threshold
            for text in texts
        ),
        dtype=bool,
        count=len(texts),
    )


@dataclass
class EncodedBatch:
    """Documents of one batch laid end to end: `tokens[offsets[i]:offsets[i+1]]` is document i."""

    lengths: np.ndarray  # int64 (n,)
    tokens: np.ndarray  # uint16 or uint32 (sum of lengths,)
    heldout: np.ndarray  # bool (n,)


class DocumentEncoder:
    """Tokenises batches of documents in this process into content ids (no special tokens)."""

    def __init__(self, spec: TokenizerSpec, heldout_fraction: float = 0.0, word_cache_size: int = 1 << 20):
        from tokenizers import Tokenizer

        self.dtype = token_dtype(spec.vocab_size)
        self.heldout_fraction = heldout_fraction
        self.full = Tokenizer.from_str(spec.backend_json)
        self.full.no_truncation()
        self.full.no_padding()
        config = json.loads(spec.backend_json)
        normalizer, pre_tokenizer = config.get("normalizer") or {}, config.get("pre_tokenizer") or {}
        model = config.get("model") or {}
        # The word path needs BERT's normaliser and pre-tokeniser in front of WordPiece (which looks at one
        # word at a time); any other tokenizer always takes the full path.
        self.words: Any = None
        if (normalizer.get("type"), pre_tokenizer.get("type"), model.get("type")) == (
            "BertNormalizer",
            "BertPreTokenizer",
            "WordPiece",
        ):
            self.words = Tokenizer.from_str(spec.backend_json)
            self.words.no_truncation()
            self.words.no_padding()
            self.words.normalizer = None  # words arrive lower-cased already
            self.lowercase = bool(normalizer.get("lowercase"))
        added = [token["content"] for token in config.get("added_tokens") or []]
        # Added tokens ([CLS], [MASK], ...) are matched in the raw text by the tokenizer; such texts take the
        # full path so they keep exactly the tokenizer's ids.
        self.added = re.compile("|".join(map(re.escape, added))) if added else None
        self.cache: dict[str, list[int]] = {}
        self.word_cache_size = word_cache_size

    def _ids(self, tokenizer: Any, texts: list[str]) -> list[list[int]]:
        encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        return [encoding.ids for encoding in encode(texts, add_special_tokens=False)]

    def _takes_word_path(self, text: str) -> bool:
        return (
            text.isascii()
            and _ASCII_CONTROLS.search(text) is None
            and (self.added is None or self.added.search(text) is None)
        )

    def _word_path(self, texts: list[str]) -> list[list[int]]:
        """Plain ASCII: BERT's pre-tokenisation is a split into runs of letters and digits and single other
        characters, and WordPiece maps each word alone, so each distinct word is tokenised once and cached."""
        split = [_ASCII_WORD.findall(text.lower() if self.lowercase else text) for text in texts]
        if len(self.cache) > self.word_cache_size:
            self.cache.clear()  # bounded memory on corpora with endless distinct words
        cache = self.cache
        unseen = list({word for words in split for word in words if word not in cache})
        if unseen:
            cache.update(zip(unseen, self._ids(self.words, unseen), strict=True))
        lookup = cache.__getitem__
        return [list(itertools.chain.from_iterable(map(lookup, words))) for words in split]

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Content ids of each text, identical to `tokenizer(text, add_special_tokens=False)`."""
        if self.words is None:
            return self._ids(self.full, texts)
        plain = [self._takes_word_path(text) for text in texts]
        if all(plain):
            return self._word_path(texts)
        ids: list[list[int]] = [[] for _ in texts]
        for use_words in (True, False):
            chosen = [i for i, is_plain in enumerate(plain) if is_plain == use_words]
            if chosen:
                subset = [texts[i] for i in chosen]
                rows = self._word_path(subset) if use_words else self._ids(self.full, subset)
                for i, row in zip(chosen, rows, strict=True):
                    ids[i] = row
        return ids

    def encode(self, texts: list[str]) -> EncodedBatch:
        ids = self.token_ids(texts)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=self.dtype, count=int(lengths.sum()))
        return EncodedBatch(lengths, tokens, heldout_flags(texts, self.heldout_fraction))


# One encoder per worker process, built once by the pool's initializer.
_WORKER_ENCODER: DocumentEncoder | None = None


def init_worker(spec: TokenizerSpec, heldout_fraction: float) -> None:
    global _WORKER_ENCODER
    _WORKER_ENCODER = DocumentEncoder(spec, heldout_fraction)


def encode_in_worker(texts: list[str]) -> EncodedBatch:
    assert _WORKER_ENCODER is not None, "init_worker did not run in this process"
    return _WORKER_ENCODER.encode(texts)
