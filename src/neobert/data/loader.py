"""Batches for pre-training: memory-mapped shards, seeded shuffling, rank split, exact resume.

Per epoch the sequence units (truncated documents or chunks, see `sequences.py`) are shuffled with a seed
derived from (seed, epoch); rank r of w takes every w-th unit, so each unit is seen exactly once per epoch
across ranks. A rank's units are taken in windows of `pack_window`; under `pack` each window is packed
(best fit decreasing) into budgets of `max_length` tokens and the packs shuffled. The loader is endless
by default: batches run on from one epoch into the next, so no data is dropped and every rank yields
batches forever.

The position is (epoch, window, sample within the window); `state_dict()` stores it, and resuming recomputes
only that window's packing from document lengths: no token is read again and no batch is replayed. Masks
come from a generator seeded by (seed, stream, rank, batch number), so they too are the same after a resume
and do not depend on how many data workers there are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from neobert.data.masking import MaskingConfig, batch_generator, mask_tokens
from neobert.data.sequences import (
    SCHEMES,
    SPECIALS_PER_SEQUENCE,
    TokenCorpus,
    collate_packed,
    collate_padded,
    pack_best_fit,
    sequence_units,
)
from neobert.data.shards import DataError

LAYOUTS = ("padded", "packed")
STATE_VERSION = 1
MIXTURE_STREAM = 1_000_003  # a stream id no component uses, for the per-batch mixture draw


@dataclass(frozen=True)
class LengthBucket:
    """One component of a length mixture: documents of at least `min_document_tokens` tokens."""

    probability: float
    min_document_tokens: int = 0


# Phase 2 of the paper (spec B.6): each batch from all documents (p 0.2), documents of >= 1,024 tokens (0.4)
# or of >= 2,048 tokens (0.4), at max_length 4,096.
PHASE2_LENGTH_MIXTURE = (LengthBucket(0.2, 0), LengthBucket(0.4, 1024), LengthBucket(0.4, 2048))


@dataclass(frozen=True)
class LoaderConfig:
    path: str
    split: str = "train"
    scheme: str = "truncate"  # "truncate" (the paper's) or "pack"
    layout: str = "padded"  # "padded" (B, L) + attention_mask, or "packed" (one row + cu_seqlens); pack needs packed
    max_length: int | None = None  # None: the corpus's --max-length
    batch_size: int = 32  # sequences (truncate) or packs of max_length tokens (pack) per batch
    pad_to_multiple_of: int = 8
    pack_window: int = 2048  # units a rank shuffles and packs together
    min_document_tokens: int = 0
    length_mixture: tuple[LengthBucket, ...] = ()  # non-empty: each batch draws one bucket (phase 2)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    seed: int = 0
    epochs: int | None = None  # None: endless
    drop_last: bool = False  # with finite epochs: drop the final partial batch
    verify: str = "first_use"  # shard checksums: on a shard's first use (see shards.open_shard), "full", "size"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, not {self.scheme!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {self.layout!r}")
        if self.scheme == "pack" and self.layout != "packed":
            raise ValueError("scheme 'pack' puts several documents in a row: use layout 'packed'")
        if self.batch_size < 1 or self.pack_window < 1:
            raise ValueError("batch_size and pack_window must be positive")

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> LoaderConfig:
        """From plain data (a YAML preset): nested masking and length-mixture entries become dataclasses."""
        payload = dict(payload)
        if isinstance(payload.get("masking"), dict):
            payload["masking"] = MaskingConfig(**payload["masking"])
        mixture = payload.get("length_mixture") or ()
        payload["length_mixture"] = tuple(
            LengthBucket(**item) if isinstance(item, dict) else LengthBucket(*item) for item in mixture
        )
        return cls(**payload)


class PretrainingLoader:
    """An iterator of masked batches from one prepared corpus split, for one rank."""

    def __init__(
        self,
        config: LoaderConfig,
        rank: int = 0,
        world_size: int = 1,
        tokenizer_fingerprint: str | None = None,
        corpus: TokenCorpus | None = None,
        stream: int = 0,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.config, self.rank, self.world_size, self.stream = config, rank, world_size, stream
        self.corpus = corpus or TokenCorpus(config.path, config.split, tokenizer_fingerprint, config.verify)
        self.max_length = config.max_length or self.corpus.default_max_length
        self.units = sequence_units(self.corpus.lengths, config.scheme, self.max_length, config.min_document_tokens)
        if len(self.units) < world_size:
            raise DataError(
                f"{self.corpus.root}: {len(self.units)} sequence(s) of documents with at least "
                f"{config.min_document_tokens} tokens: too few for {world_size} rank(s)"
            )
        ids = self.corpus.special_ids
        self.never_mask = sorted({ids["pad"], ids["unk"], ids["cls"], ids["sep"], ids["mask"]})
        self.stats = {"batches": 0, "sequences": 0, "tokens": 0, "slots": 0, "masked": 0}
        self._epoch = self._window = self._offset = self._batches = 0
        self._cached_epoch: tuple[int, np.ndarray] | None = None
        self._cached_window: tuple[tuple[int, int], list[np.ndarray]] | None = None

    # ---- position bookkeeping -------------------------------------------------------------------------
    def _rank_units(self, epoch: int) -> np.ndarray:
        if self._cached_epoch is None or self._cached_epoch[0] != epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, self.stream, epoch]))
            order = rng.permutation(len(self.units))
            self._cached_epoch = (epoch, order[self.rank :: self.world_size])
        return self._cached_epoch[1]

    def _windows(self, epoch: int) -> int:
        return -(-len(self._rank_units(epoch)) // self.config.pack_window)

    def _samples(self, epoch: int, window: int) -> list[np.ndarray]:
        """The samples (arrays of unit indices) of one window: single units, or packs."""
        key = (epoch, window)
        if self._cached_window is not None and self._cached_window[0] == key:
            return self._cached_window[1]
        size = self.config.pack_window
        units = self._rank_units(epoch)[window * size : (window + 1) * size]
        if self.config.scheme == "truncate":
            samples = [units[i : i + 1] for i in range(len(units))]
        else:
            sizes = self.units.length[units] + SPECIALS_PER_SEQUENCE
            packs = pack_best_fit(sizes, self.max_length)
            # Best fit fills packs longest-first; shuffling keeps long and short documents mixed in batches.
            rng = np.random.default_rng(
                np.random.SeedSequence([self.config.seed, self.stream, epoch, window, self.rank])
            )
            samples = [units[np.asarray(packs[i])] for i in rng.permutation(len(packs))]
        self._cached_window = (key, samples)
        return samples

    def _next_samples(self) -> list[np.ndarray]:
        taken: list[np.ndarray] = []
        epochs = self.config.epochs
        while len(taken) < self.config.batch_size:
            if epochs is not None and self._epoch >= epochs:
                break
            samples = self._samples(self._epoch, self._window)
            need = self.config.batch_size - len(taken)
            taken.extend(samples[self._offset : self._offset + need])
            self._offset += need
            if self._offset >= len(samples):
                self._offset, self._window = 0, self._window + 1
                if self._window >= self._windows(self._epoch):
                    self._epoch, self._window = self._epoch + 1, 0
        return taken

    # ---- batches -------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        samples = self._next_samples()
        if not samples or (self.config.drop_last and len(samples) < self.config.batch_size):
            raise StopIteration
        units = np.concatenate(samples)
        lengths = self.units.length[units]
        content = self.corpus.gather(self.units.doc[units], self.units.start[units], lengths)
        ids = self.corpus.special_ids
        if self.config.layout == "packed":
            batch = collate_packed(content, lengths, ids["cls"], ids["sep"])
            slots = len(samples) * self.max_length if self.config.scheme == "pack" else batch["input_ids"].numel()
        else:
            batch = collate_padded(content, lengths, ids["cls"], ids["sep"], ids["pad"], self.config.pad_to_multiple_of)
            slots = batch["input_ids"].numel()
        generator = batch_generator(self.config.seed, self.stream, self.rank, self._batches)
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"],
            self.config.masking,
            self.never_mask,
            ids["mask"],
            self.corpus.vocab_size,
            generator,
        )
        self._batches += 1
        tokens = int(lengths.sum()) + SPECIALS_PER_SEQUENCE * len(lengths)
        self.stats["batches"] += 1
        self.stats["sequences"] += len(lengths)
        self.stats["tokens"] += tokens
        self.stats["slots"] += slots
        self.stats["masked"] += int((batch["labels"] != -100).sum())
        return batch

    def skip(self, count: int) -> None:
        """Moves past `count` batches without building them (only document lengths are touched)."""
        for _ in range(count):
            samples = self._next_samples()
            if not samples or (self.config.drop_last and len(samples) < self.config.batch_size):
                return
            self._batches += 1

    @property
    def packing_efficiency(self) -> float:
        """Real tokens over token slots (pack budgets, or padded batch area) so far."""
        return self.stats["tokens"] / max(1, self.stats["slots"])

    @property
    def epoch(self) -> int:
        return self._epoch

    # ---- resume --------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        config = asdict(self.config)
        for volatile in ("path", "verify", "epochs", "drop_last"):
            config.pop(volatile)
        identity = {
            "config": config,
            "max_length": self.max_length,
            "units": len(self.units),
            "rank": self.rank,
            "world_size": self.world_size,
            "stream": self.stream,
        }
        return json.loads(json.dumps(identity))  # as a checkpoint file gives it back (tuples become lists)

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "position": [self._epoch, self._window, self._offset],
            "batches": self._batches,
            "identity": self._identity(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise DataError(f"loader state version {state.get('version')!r}; this neobert reads {STATE_VERSION}")
        mine, theirs = self._identity(), state["identity"]
        if mine != theirs:
            differing = sorted(key for key in mine if mine[key] != theirs.get(key))
            raise DataError(
                f"the loader state was saved by a different setup (differs in: {', '.join(differing)}); "
                "resume with the same corpus, configuration, rank and world size"
            )
        self._epoch, self._window, self._offset = (int(x) for x in state["position"])
        self._batches = int(state["batches"])


class MixtureLoader:
    """Each batch comes from one component loader, drawn with the configured probabilities. The draw
    depends on (seed, batch number) only, so all ranks use the same component at the same step."""

    def __init__(
        self,
        config: LoaderConfig,
        rank: int = 0,
        world_size: int = 1,
        tokenizer_fingerprint: str | None = None,
    ):
        if config.epochs is not None:
            raise ValueError("a length mixture runs endlessly: leave epochs unset")
        buckets = config.length_mixture
        weights = np.array([bucket.probability for bucket in buckets], dtype=np.float64)
        if len(buckets) == 0 or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("length_mixture needs buckets with non-negative probabilities summing to more than 0")
        self.config = config
        self.cumulative = np.cumsum(weights / weights.sum())
        corpus = TokenCorpus(config.path, config.split, tokenizer_fingerprint, config.verify)
        self.components = [
            PretrainingLoader(
                replace(config, length_mixture=(), min_document_tokens=bucket.min_document_tokens),
                rank,
                world_size,
                corpus=corpus,
                stream=number + 1,
            )
            for number, bucket in enumerate(buckets)
        ]
        self.corpus = corpus
        self._batches = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def _draw(self) -> int:
        draw = np.random.default_rng(np.random.SeedSequence([self.config.seed, MIXTURE_STREAM, self._batches]))
        component = int(np.searchsorted(self.cumulative, draw.random(), side="right"))
        self._batches += 1
        self.last_component = min(component, len(self.components) - 1)
        return self.last_component

    def __next__(self) -> dict[str, Any]:
        return next(self.components[self._draw()])

    def skip(self, count: int) -> None:
        for _ in range(count):
            self.components[self._draw()].skip(1)

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self._batches, "components": [c.state_dict() for c in self.components]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["components"]) != len(self.components):
            raise DataError("the loader state holds a different number of length-mixture components")
        for component, saved in zip(self.components, state["components"], strict=True):
            component.load_state_dict(saved)
        self._batches = int(state["batches"])


def build_loader(
    config: LoaderConfig, rank: int | None = None, world_size: int | None = None, tokenizer: Any = None
) -> PretrainingLoader | MixtureLoader:
    """The loader a config describes. Rank and world size default to torchrun's RANK and WORLD_SIZE; with a
    tokenizer, a corpus tokenised with another one is refused."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    fingerprint = None
    if tokenizer is not None:
        from neobert.data.tokenization import TokenizerSpec

        fingerprint = TokenizerSpec.from_tokenizer(tokenizer).fingerprint
    if config.length_mixture:
        return MixtureLoader(config, rank, world_size, fingerprint)
    return PretrainingLoader(config, rank, world_size, fingerprint)


def describe_batch(batch: dict[str, Any]) -> str:
    """One line about a batch, for logs and the demo."""
    ids: torch.Tensor = batch["input_ids"]
    masked = int((batch["labels"] != -100).sum())
    if "cu_seqlens" in batch:
        return f"packed row of {ids.shape[1]} tokens, {len(batch['cu_seqlens']) - 1} sequences, {masked} masked"
    real = int(batch["attention_mask"].sum())
    return f"padded {tuple(ids.shape)}, {real} real tokens, {masked} masked"
