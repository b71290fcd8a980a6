"""From stored documents to model sequences: the corpus view, sequence units, packing and collation.

Two schemes (spec B.3):
- `truncate`, the paper's: one document per sequence, cut to `max_length` (its tail is lost);
- `pack`: a document longer than a sequence is split into chunks of `max_length` tokens and a shorter last
  one (nothing is lost); chunks are packed into budgets of `max_length` tokens, and a batch of packs
  is one row with `cu_seqlens`, so the model never lets one document attend to another.
Every sequence (a truncated document or a chunk) is `[CLS] content [SEP]`.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neobert.data.shards import (
    SPLITS,
    DataError,
    ShardEntry,
    check_checksum,
    check_tokenizer,
    load_manifest,
    open_shard,
)

SCHEMES = ("truncate", "pack")
SPECIALS_PER_SEQUENCE = 2  # [CLS] and [SEP]


class TokenCorpus:
    """One split of a prepared corpus, memory-mapped; documents are addressed by a global index."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        tokenizer_fingerprint: str | None = None,
        verify: str = "first_use",
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        self.root = Path(root)
        self.manifest = load_manifest(self.root)
        if tokenizer_fingerprint is not None:
            check_tokenizer(self.manifest, self.root, tokenizer_fingerprint)
        tokenizer = self.manifest["tokenizer"]
        self.special_ids: dict[str, int] = dict(tokenizer["special_ids"])
        self.vocab_size = int(tokenizer["vocab_size"])
        dtype = np.dtype(tokenizer["dtype"])
        self.tokens: list[np.ndarray] = []
        entries = [ShardEntry.from_dict(payload) for payload in self.manifest["splits"][split]["shards"]]
        # Tokens checksums still to check, shard by shard, when a batch first reads the shard.
        self._unchecked = {n: e for n, e in enumerate(entries)} if verify == "first_use" else {}
        lengths, shard_of, starts = [], [], []
        for number, entry in enumerate(entries):
            tokens, offsets = open_shard(self.root, entry, dtype, verify=verify)
            self.tokens.append(tokens)
            offsets = np.asarray(offsets)
            lengths.append(np.diff(offsets))
            starts.append(offsets[:-1])
            shard_of.append(np.full(len(offsets) - 1, number, dtype=np.int32))
        if not lengths or sum(len(part) for part in lengths) == 0:
            raise DataError(f"{self.root}: the {split!r} split holds no documents")
        self.lengths = np.concatenate(lengths)
        self.doc_start = np.concatenate(starts)
        self.doc_shard = np.concatenate(shard_of)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def default_max_length(self) -> int:
        return int(self.manifest["max_length"])

    def _check(self, shards: np.ndarray) -> None:
        if not self._unchecked:
            return
        for shard in np.unique(shards).tolist():
            entry = self._unchecked.pop(shard, None)
            if entry is not None:
                check_checksum(self.root / entry.tokens_file, entry.tokens_sha256)

    def document(self, index: int) -> np.ndarray:
        self._check(self.doc_shard[index : index + 1])
        start = self.doc_start[index]
        return np.asarray(self.tokens[self.doc_shard[index]][start : start + self.lengths[index]])

    def gather(self, docs: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Content tokens of several (document, start, length) spans laid end to end, as int64."""
        total = int(lengths.sum())
        before = np.cumsum(lengths) - lengths
        positions = np.arange(total) - np.repeat(before, lengths) + np.repeat(self.doc_start[docs] + starts, lengths)
        shards = self.doc_shard[docs]
        self._check(shards)
        out = np.empty(total, dtype=np.int64)
        if len(self.tokens) == 1:
            out[:] = self.tokens[0][positions]
            return out
        token_shard = np.repeat(shards, lengths)
        for shard in np.unique(shards):
            chosen = token_shard == shard
            out[chosen] = self.tokens[shard][positions[chosen]]
        return out


@dataclass
class Units:
    """Sequence units: `length` content tokens of document `doc` from `start` (one unit = one sequence)."""

    doc: np.ndarray
    start: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.doc)


def sequence_units(lengths: np.ndarray, scheme: str, max_length: int, min_document_tokens: int = 0) -> Units:
    """The units of a corpus for a scheme. `min_document_tokens` keeps only documents at least that long
    ([CLS] and [SEP] counted, as the released phase-2 filter counts them)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, not {scheme!r}")
    capacity = max_length - SPECIALS_PER_SEQUENCE
    if capacity < 1:
        raise ValueError(f"max_length must exceed {SPECIALS_PER_SEQUENCE}, got {max_length}")
    docs = np.flatnonzero((lengths > 0) & (lengths + SPECIALS_PER_SEQUENCE >= min_document_tokens))
    doc_lengths = lengths[docs]
    if scheme == "truncate":
        return Units(docs, np.zeros(len(docs), dtype=np.int64), np.minimum(doc_lengths, capacity))
    pieces = -(-doc_lengths // capacity)  # ceil
    unit_doc = np.repeat(docs, pieces)
    first_unit = np.cumsum(pieces) - pieces
    k = np.arange(int(pieces.sum())) - np.repeat(first_unit, pieces)  # chunk number within its document
    # Full chunks and one shorter last chunk: the short tails are what fills the gaps left in packs.
    start = k * capacity
    length = np.minimum(capacity, np.repeat(doc_lengths, pieces) - start)
    return Units(unit_doc, start, length)


def pack_best_fit(sizes: np.ndarray, capacity: int) -> list[list[int]]:
    """Best-fit decreasing: returns packs (lists of indices into `sizes`) each holding at most `capacity`.
    Ties are broken by index, so the result is deterministic."""
    order = np.argsort(-sizes, kind="stable")
    packs: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, pack number), kept sorted
    for index in order.tolist():
        size = int(sizes[index])
        slot = bisect.bisect_left(free, (size, -1))
        if slot < len(free):
            room, number = free.pop(slot)
        else:
            room, number = capacity, len(packs)
            packs.append([])
        packs[number].append(index)
        if room - size > 0:
            bisect.insort(free, (room - size, number))
    return packs


def packing_efficiency(lengths: np.ndarray, max_length: int, window: int = 2048, seed: int = 0) -> dict[str, float]:
    """Share of token slots that hold real tokens, over one epoch, for packing and for the official
    truncate-and-pad-to-max-length scheme (and the tokens truncation would drop)."""
    units = sequence_units(lengths, "pack", max_length)
    sizes = units.length + SPECIALS_PER_SEQUENCE
    order = np.random.default_rng(seed).permutation(len(units))
    packs = 0
    for begin in range(0, len(order), window):
        packs += len(pack_best_fit(sizes[order[begin : begin + window]], max_length))
    truncated = sequence_units(lengths, "truncate", max_length).length + SPECIALS_PER_SEQUENCE
    return {
        "packing_efficiency": float(sizes.sum() / (packs * max_length)),
        "packs": packs,
        "truncate_pad_to_max_efficiency": float(truncated.sum() / (len(truncated) * max_length)),
        "truncation_kept_fraction": float(truncated.sum() / sizes.sum()),
    }


def with_specials(content: np.ndarray, lengths: np.ndarray, cls_id: int, sep_id: int) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] span [SEP] for every span of `content`; returns the flat ids and cu_seqlens."""
    seqlens = lengths + SPECIALS_PER_SEQUENCE
    cu = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(seqlens, out=cu[1:])
    ids = np.empty(int(cu[-1]), dtype=np.int64)
    special = np.zeros(len(ids), dtype=bool)
    special[cu[:-1]] = True
    special[cu[1:] - 1] = True
    ids[~special] = content
    ids[cu[:-1]] = cls_id
    ids[cu[1:] - 1] = sep_id
    return ids, cu


def layout_packed(ids: torch.Tensor, cu: np.ndarray) -> dict[str, torch.Tensor]:
    """Flat sequences as one row: input_ids (1, T), cu_seqlens (n + 1,) int32, max_seqlen, and position_ids
    (1, T) restarting at 0 in every sequence (the model's packed input contract)."""
    seqlens = np.diff(cu)
    positions = np.arange(len(ids)) - np.repeat(cu[:-1], seqlens)
    return {
        "input_ids": ids.unsqueeze(0),
        "cu_seqlens": torch.from_numpy(cu.astype(np.int32)),
        "max_seqlen": int(seqlens.max()),
        "position_ids": torch.from_numpy(positions).unsqueeze(0),
    }


def pad_rows(
    values: torch.Tensor, cu: np.ndarray, fill: int, multiple_of: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat sequences as rows (B, L) padded on the right with `fill` to the longest (rounded up to
    `multiple_of`, as the released collator does), and the attention mask (1 for real tokens)."""
    seqlens = np.diff(cu)
    width = int(-(-seqlens.max() // multiple_of) * multiple_of)
    rows = torch.from_numpy(np.repeat(np.arange(len(seqlens)), seqlens))
    cols = torch.from_numpy(np.arange(len(values)) - np.repeat(cu[:-1], seqlens))
    batch = torch.full((len(seqlens), width), fill, dtype=values.dtype)
    batch[rows, cols] = values
    mask = torch.zeros((len(seqlens), width), dtype=torch.int64)
    mask[rows, cols] = 1
    return batch, mask


def collate_packed(content: np.ndarray, lengths: np.ndarray, cls_id: int, sep_id: int) -> dict[str, torch.Tensor]:
    """One row of `[CLS] span [SEP]` sequences end to end (see `layout_packed`)."""
    ids, cu = with_specials(content, lengths, cls_id, sep_id)
    return layout_packed(torch.from_numpy(ids), cu)


def collate_padded(
    content: np.ndarray, lengths: np.ndarray, cls_id: int, sep_id: int, pad_id: int, multiple_of: int = 8
) -> dict[str, torch.Tensor]:
    """input_ids (B, L) of `[CLS] span [SEP]` rows and attention_mask (B, L) (see `pad_rows`)."""
    ids, cu = with_specials(content, lengths, cls_id, sep_id)
    batch, mask = pad_rows(torch.from_numpy(ids), cu, pad_id, multiple_of)
    return {"input_ids": batch, "attention_mask": mask}
