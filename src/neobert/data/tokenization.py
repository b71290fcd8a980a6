"""Documents -> content token ids, fast, and what identifies a tokenizer in a manifest.

Shards store each document's content ids only; [CLS] and [SEP] are added when sequences are formed
(`neobert.data.sequences`), so one prepared corpus serves any sequence length. Ids are exactly those of
`tokenizer(text, add_special_tokens=False)`; most documents get them through the word path
(`word_path.py`), the rest through the Rust tokenizer in batches.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neobert.data.word_path import WordPath

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
            int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") < threshold
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
    """Tokenises batches of documents in this process into content ids (no special tokens): through the
    word path (`word_path.py`) where it applies, through the full Rust tokenizer otherwise."""

    def __init__(self, spec: TokenizerSpec, heldout_fraction: float = 0.0, word_cache_size: int = 1 << 20):
        from tokenizers import Tokenizer

        self.dtype = token_dtype(spec.vocab_size)
        self.heldout_fraction = heldout_fraction
        self.full = Tokenizer.from_str(spec.backend_json)
        self.full.no_truncation()
        self.full.no_padding()
        self.words = WordPath.for_tokenizer(spec.backend_json, word_cache_size)

    def _full_path(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encode = getattr(self.full, "encode_batch_fast", self.full.encode_batch)
        ids = [encoding.ids for encoding in encode(texts, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        return lengths, np.fromiter(itertools.chain.from_iterable(ids), np.int64, int(lengths.sum()))

    def encode(self, texts: list[str]) -> EncodedBatch:
        by_words = np.zeros(len(texts), dtype=bool)
        if self.words is not None:
            by_words = np.fromiter(map(self.words.accepts, texts), bool, len(texts))
        lengths = np.zeros(len(texts), dtype=np.int64)
        starts = np.zeros(len(texts), dtype=np.int64)  # where each document's ids begin in `buffer`
        parts, buffered = [], 0
        for use_words in (True, False):
            chosen = np.flatnonzero(by_words == use_words)
            if len(chosen) == 0:
                continue
            subset = [texts[i] for i in chosen]
            chosen_lengths, tokens = self.words.encode(subset) if use_words else self._full_path(subset)
            lengths[chosen] = chosen_lengths
            starts[chosen] = buffered + np.cumsum(chosen_lengths) - chosen_lengths
            parts.append(tokens)
            buffered += len(tokens)
        buffer = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        ends = np.cumsum(lengths)
        order = np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - lengths), lengths)
        return EncodedBatch(lengths, buffer[order].astype(self.dtype), heldout_flags(texts, self.heldout_fraction))

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Content ids of each text, identical to `tokenizer(text, add_special_tokens=False)`."""
        batch = self.encode(texts)
        bounds = np.concatenate([[0], np.cumsum(batch.lengths)])
        return [batch.tokens[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# One encoder per worker process, built once by the pool's initializer.
_WORKER_ENCODER: DocumentEncoder | None = None


def init_worker(spec: TokenizerSpec, heldout_fraction: float) -> None:
    global _WORKER_ENCODER
    _WORKER_ENCODER = DocumentEncoder(spec, heldout_fraction)


def encode_in_worker(texts: list[str]) -> EncodedBatch:
    assert _WORKER_ENCODER is not None, "init_worker did not run in this process"
    return _WORKER_ENCODER.encode(texts)
