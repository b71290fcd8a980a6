"""Documents -> content token ids, fast: the Rust tokenizer in batches, with a lean path for plain ASCII.

Shards store each document's content ids only; [CLS] and [SEP] are added when sequences are formed
(`neobert.data.sequences`), so one prepared corpus serves any sequence length.

The lean path: for text that is pure ASCII without control characters, BERT's normaliser (control-character
cleaning, CJK spacing, NFD accent stripping, lower-casing) reduces to lower-casing, and the Rust normaliser's
offset bookkeeping costs about 40% of the tokenizer's time. Such documents go through a copy of the
tokenizer whose normaliser only lower-cases; `tests/test_data_prepare.py` checks that both paths give the
same ids.
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

    def __init__(self, spec: TokenizerSpec, heldout_fraction: float = 0.0):
        from tokenizers import Tokenizer, normalizers

        self.dtype = token_dtype(spec.vocab_size)
        self.heldout_fraction = heldout_fraction
        self.full = Tokenizer.from_str(spec.backend_json)
        self.full.no_truncation()
        self.full.no_padding()
        self.lean = None
        config = json.loads(spec.backend_json)
        normalizer, pre_tokenizer = config.get("normalizer") or {}, config.get("pre_tokenizer") or {}
        if normalizer.get("type") == "BertNormalizer" and pre_tokenizer.get("type") == "BertPreTokenizer":
            self.lean = Tokenizer.from_str(spec.backend_json)
            self.lean.no_truncation()
            self.lean.no_padding()
            self.lean.normalizer = normalizers.Lowercase() if normalizer.get("lowercase") else None

    def _ids(self, tokenizer: Any, texts: list[str]) -> list[list[int]]:
        encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
        return [encoding.ids for encoding in encode(texts, add_special_tokens=False)]

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Content ids of each text, identical to `tokenizer(text, add_special_tokens=False)`."""
        if self.lean is None:
            return self._ids(self.full, texts)
        plain = [text.isascii() and _ASCII_CONTROLS.search(text) is None for text in texts]
        if all(plain):
            return self._ids(self.lean, texts)
        ids: list[list[int]] = [[] for _ in texts]
        for use_lean, tokenizer in ((True, self.lean), (False, self.full)):
            chosen = [i for i, is_plain in enumerate(plain) if is_plain == use_lean]
            if chosen:
                for i, row in zip(chosen, self._ids(tokenizer, [texts[i] for i in chosen]), strict=True):
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
