"""From stored documents to model sequences: the corpus view, sequence units, packing and collation.

Three ways to make sequences (`data.sequence`, spec B.3):
- `truncate`, the paper's: one document per sequence, cut to `max_length` (its tail is lost); a batch is
  rows padded to the longest;
- `pack`: a document longer than a sequence is split into chunks of `max_length` tokens and a shorter last
  one (nothing is lost); chunks are packed into budgets of `max_length` tokens, and a batch of packs
  is one row with `cu_seqlens`, so the model never lets one document attend to another;
- `pack_naive`: the same packs, each laid in a padded row where its documents attend to each other (the
  paper's first packing, M6).
Every sequence (a truncated document or a chunk) is `[CLS] content [SEP]`.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from neobert.data.verified import VerifiedRecord, file_stamp

SEQUENCES = ("truncate", "pack", "pack_naive")
SPECIALS_PER_SEQUENCE = 2  # [CLS] and [SEP]


class TokenCorpus:
    """One split of a prepared corpus, memory-mapped; documents are addressed by a global index (shards in
    manifest order). It holds a few numbers per shard: lengths are read from the offsets files as needed,
    never gathered over the whole corpus.

    Checks (`verify`): "size" checks every file's header and size at opening; "first_use" (the default) also
    checks the offsets files' sha256 at opening and a tokens file's when its shard is first read, trusting the
    corpus's `verified.json` record of an earlier check while the file's stat is unchanged (see `verified.py`);
    "full" hashes every file at opening.
    Every read of a shard (`check_shards`) also refuses a shard whose files changed since they were opened."""

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
        self.entries = [ShardEntry.from_dict(payload) for payload in self.manifest["splits"][split]["shards"]]
        self.verify = verify
        self.record = VerifiedRecord(self.root)
        if verify == "full":
            for entry in self.entries:
                for name, digest in _files(entry):
                    check_checksum(self.root / name, digest)
        self.tokens: list[np.ndarray] = []
        self._offsets_at: list[tuple[Path, int]] = []  # (file, byte where its int64 values start)
        self._stamps: list[list[list[int]]] = []
        for entry in self.entries:
            if verify == "first_use":  # offsets decide every span read: hashed at the first opening, then recorded
                self.record.check(entry.offsets_file, entry.offsets_sha256, save=False)
            # Headers and sizes only: touching a mapped page would map its neighbours too, and that resident
            # memory would grow with the number of shards; offsets are read with plain reads instead.
            tokens, offsets = open_shard(self.root, entry, dtype, verify="none")
            self.tokens.append(tokens)
            self._offsets_at.append((self.root / entry.offsets_file, int(offsets.offset)))
            shard = len(self.tokens) - 1
            if verify != "none":
                first, last = self._read_offsets(shard, 0, 1)[0], self._read_offsets(shard, entry.documents, 1)[0]
                if first != 0 or last != entry.tokens:
                    raise DataError(
                        f"{self.root / entry.offsets_file}: document offsets do not cover the shard's "
                        f"{entry.tokens} tokens"
                    )
            self._stamps.append([file_stamp(self.root / name) for name, _ in _files(entry)])
        self.record.save()
        self._unchecked = set(range(len(self.entries))) if verify == "first_use" else set()
        self.shard_documents = [entry.documents for entry in self.entries]
        self._first_document = np.concatenate([[0], np.cumsum(self.shard_documents, dtype=np.int64)])
        if self._first_document[-1] == 0:
            raise DataError(f"{self.root}: the {split!r} split holds no documents")

    def __len__(self) -> int:
        return int(self._first_document[-1])

    @property
    def default_max_length(self) -> int:
        return int(self.manifest["max_length"])

    def check_shards(self, shards: Iterable[int]) -> None:
        """Before reading shards: their checksums on first use (under "first_use"), and a DataError naming a
        file that changed since the corpus was opened."""
        try:
            for shard in shards:
                self._check_shard(shard)
        finally:
            self.record.save()  # what was checked before a failure stays recorded

    def _check_shard(self, shard: int) -> None:
        entry = self.entries[shard]
        if shard in self._unchecked:
            self.record.check(entry.tokens_file, entry.tokens_sha256, save=False)
            self._unchecked.discard(shard)
        if self.verify == "none":
            return
        for (name, _), stamp in zip(_files(entry), self._stamps[shard], strict=True):
            path = self.root / name
            if not path.is_file() or file_stamp(path) != stamp:
                raise DataError(
                    f"{path}: the shard changed (or went missing) while training read the corpus; "
                    "restore it or run the same `neobert prepare` command again, then resume"
                )

    def first_document(self, shard: int) -> int:
        return int(self._first_document[shard])

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, document within the shard) of a global document index."""
        if not 0 <= index < len(self):
            raise IndexError(f"document {index} outside the split's {len(self)}")
        shard = int(np.searchsorted(self._first_document, index, side="right")) - 1
        return shard, index - int(self._first_document[shard])

    def spans(self, shard: int, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Token starts (within the shard) and lengths of `count` documents of a shard from `first`."""
        offsets = self._read_offsets(shard, first, count + 1)
        return offsets[:-1], np.diff(offsets)

    def _read_offsets(self, shard: int, first: int, count: int) -> np.ndarray:
        path, start = self._offsets_at[shard]
        return np.fromfile(path, dtype=np.int64, count=count, offset=start + 8 * first)

    def document(self, index: int) -> np.ndarray:
        shard, local = self.locate(index)
        self.check_shards([shard])
        (start,), (length,) = self.spans(shard, local, 1)
        return np.asarray(self.tokens[shard][start : start + length])

    def document_lengths(self) -> np.ndarray:
        """Every document's length, reading every offsets file: for analysing small corpora (the loader
        never calls it)."""
        return np.concatenate([self.spans(shard, 0, count)[1] for shard, count in enumerate(self.shard_documents)])

    def gather(self, shards: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Content tokens of several (shard, token start in the shard, length) spans laid end to end, as int64."""
        total = int(lengths.sum())
        before = np.cumsum(lengths) - lengths
        positions = np.arange(total) - np.repeat(before, lengths) + np.repeat(starts, lengths)
        out = np.empty(total, dtype=np.int64)
        token_shard = np.repeat(shards, lengths)
        for shard in np.unique(shards).tolist():
            chosen = token_shard == shard
            out[chosen] = self.tokens[shard][positions[chosen]]
        return out


def _files(entry: ShardEntry) -> list[tuple[str, str]]:
    return [(entry.offsets_file, entry.offsets_sha256), (entry.tokens_file, entry.tokens_sha256)]


@dataclass
class Units:
    """Sequence units: `length` content tokens of document `doc` from `start` (one unit = one sequence)."""

    doc: np.ndarray
    start: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.doc)


def sequence_units(lengths: np.ndarray, sequence: str, max_length: int, min_document_tokens: int = 0) -> Units:
    """The units of a corpus for a way of making sequences (both packings cut the same chunks).
    `min_document_tokens` keeps only documents at least that long ([CLS] and [SEP] counted, as the released
    phase-2 filter counts them)."""
    if sequence not in SEQUENCES:
        raise ValueError(f"sequence must be one of {SEQUENCES}, not {sequence!r}")
    capacity = max_length - SPECIALS_PER_SEQUENCE
    if capacity < 1:
        raise ValueError(f"max_length must exceed {SPECIALS_PER_SEQUENCE}, got {max_length}")
    docs = np.flatnonzero((lengths > 0) & (lengths + SPECIALS_PER_SEQUENCE >= min_document_tokens))
    doc_lengths = lengths[docs]
    if sequence == "truncate":
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


def sequence_forecast(root: Path, records: list[dict[str, Any]], max_length: int) -> dict[str, float]:
    """How the two sequence schemes would use the training documents at `max_length`, on every k-th
    document (at most about 200,000), so the forecast stays quick and small on large corpora."""
    total = sum(record["train"]["documents"] for record in records)
    stride = max(1, total // 200_000)
    lengths = np.concatenate(
        [np.diff(np.load(root / r["train"]["offsets_file"], mmap_mode="r"))[::stride] for r in records]
    )
    if not lengths.any():
        return {}
    forecast = packing_efficiency(lengths, max_length)
    forecast.pop("packs")
    return {key: round(value, 4) for key, value in forecast.items()}
