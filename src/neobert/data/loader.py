"""Batches for pre-training: memory-mapped shards, seeded shuffling, rank split, exact resume.

There is one global order of samples, the same for every rank and process count: per epoch the sequence
units (truncated documents or chunks, see `sequences.py`) are shuffled with a seed derived from (seed,
epoch) and taken in windows of `pack_window`; a sample is a unit, or under `pack` a pack of a window's units
(best fit decreasing into budgets of `max_length` tokens, the packs shuffled). The order is cut into chunks
of `batch_size` samples, dealt out in turn: rank r of w takes chunks r, r + w, r + 2w, ... So with a global
batch of G samples, step s trains on samples s*G .. (s+1)*G - 1 whatever the world size, micro-batch and
accumulation, and each sample is seen exactly once per epoch across ranks. The loader is endless by default:
batches run on from one epoch into the next, so no data is dropped and every rank yields batches forever.

The position is (epoch, window, sample within the window) with the count of chunks gone by; `state_dict()`
stores it, and resuming recomputes only that window's packing from document lengths: no token is read again
and no batch is replayed. Each sample is masked with draws seeded by (seed, stream, its index in the global
order), so masks are the same after a resume and do not depend on ranks, accumulation or data workers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from neobert.data.masking import IGNORE_INDEX, MaskingConfig, mask_with_draws, sequence_draws
from neobert.data.sequences import (
    SCHEMES,
    SPECIALS_PER_SEQUENCE,
    TokenCorpus,
    layout_packed,
    pack_best_fit,
    pad_rows,
    sequence_units,
    with_specials,
)
from neobert.data.shards import DataError

# "rows": each pack is one row with full attention (cross-document, the naive packing of M6).
LAYOUTS = ("padded", "packed", "rows")
STATE_VERSION = 2
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
        if self.scheme == "pack" and self.layout == "padded":
            raise ValueError("scheme 'pack' puts several documents in a row: use layout 'packed' (or 'rows')")
        if self.layout == "rows" and self.scheme != "pack":
            raise ValueError("layout 'rows' lays packs in rows: it needs scheme 'pack'")
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
        # Position in the global order (epoch, window, sample in the window), samples taken from it, and
        # chunks of `batch_size` samples gone by (this rank's and the others').
        self._epoch = self._window = self._offset = self._taken = self._chunks = 0
        self._cached_epoch: tuple[int, np.ndarray] | None = None
        self._cached_window: tuple[tuple[int, int], list[np.ndarray]] | None = None

    # ---- the global sample order ----------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._cached_epoch is None or self._cached_epoch[0] != epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, self.stream, epoch]))
            self._cached_epoch = (epoch, rng.permutation(len(self.units)))
        return self._cached_epoch[1]

    def _windows(self) -> int:
        return -(-len(self.units) // self.config.pack_window)

    def _samples(self, epoch: int, window: int) -> list[np.ndarray]:
        """The samples (arrays of unit indices) of one window: single units, or packs."""
        key = (epoch, window)
        if self._cached_window is not None and self._cached_window[0] == key:
            return self._cached_window[1]
        size = self.config.pack_window
        units = self._epoch_order(epoch)[window * size : (window + 1) * size]
        if self.config.scheme == "truncate":
            samples = [units[i : i + 1] for i in range(len(units))]
        else:
            sizes = self.units.length[units] + SPECIALS_PER_SEQUENCE
            packs = pack_best_fit(sizes, self.max_length)
            # Best fit fills packs longest-first; shuffling keeps long and short documents mixed in batches.
            rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, self.stream, epoch, window]))
            samples = [units[np.asarray(packs[i])] for i in rng.permutation(len(packs))]
        self._cached_window = (key, samples)
        return samples

    def take_samples(self, count: int) -> tuple[list[np.ndarray], int]:
        """The next `count` samples of the global order (fewer at the end of finite epochs) and the index of
        the first."""
        first = self._taken
        taken: list[np.ndarray] = []
        epochs = self.config.epochs
        while len(taken) < count:
            if epochs is not None and self._epoch >= epochs:
                break
            samples = self._samples(self._epoch, self._window)
            need = count - len(taken)
            taken.extend(samples[self._offset : self._offset + need])
            self._offset += need
            if self._offset >= len(samples):
                self._offset, self._window = 0, self._window + 1
                if self._window >= self._windows():
                    self._epoch, self._window = self._epoch + 1, 0
        self._taken += len(taken)
        return taken, first

    def _my_turn(self) -> None:
        """Move past the chunks of the other ranks up to this rank's next one."""
        while self._chunks % self.world_size != self.rank:
            self.take_samples(self.config.batch_size)
            self._chunks += 1

    def _complete(self, samples: list[np.ndarray]) -> bool:
        return bool(samples) and not (self.config.drop_last and len(samples) < self.config.batch_size)

    # ---- batches -------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        self._my_turn()
        samples, first = self.take_samples(self.config.batch_size)
        if not self._complete(samples):
            raise StopIteration
        self._chunks += 1
        return self.build(samples, first)

    def skip(self, count: int) -> None:
        """Moves past `count` of this rank's batches without building them (only document lengths are read)."""
        for _ in range(count):
            self._my_turn()
            samples, _ = self.take_samples(self.config.batch_size)
            if not self._complete(samples):
                return
            self._chunks += 1

    def build(self, samples: list[np.ndarray], first: int) -> dict[str, Any]:
        """The masked batch of `samples`, the first of which is sample `first` of the global order."""
        units = np.concatenate(samples)
        lengths = self.units.length[units]
        content = self.corpus.gather(self.units.doc[units], self.units.start[units], lengths)
        ids = self.corpus.special_ids
        flat, cu = with_specials(content, lengths, ids["cls"], ids["sep"])
        # Each sample is masked with its own draws, seeded by its place in the global order.
        bounds = cu[np.concatenate([[0], np.cumsum([len(sample) for sample in samples])])]
        parts = [
            sequence_draws(
                self.config.seed, self.stream, first + k, int(end - start), self.config.masking, self.corpus.vocab_size
            )
            for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]
        draws = tuple(None if part[0] is None else np.concatenate(part) for part in zip(*parts, strict=True))
        input_ids, labels = mask_with_draws(
            torch.from_numpy(flat), self.config.masking, self.never_mask, ids["mask"], draws
        )
        if self.config.layout == "packed":
            batch = layout_packed(input_ids, cu)
            batch["labels"] = labels.unsqueeze(0)
            slots = len(samples) * self.max_length if self.config.scheme == "pack" else input_ids.numel()
        elif self.config.layout == "rows":  # a pack's sequences in one row, attending to each other
            batch = {}
            batch["input_ids"], batch["attention_mask"] = pad_rows(
                input_ids, bounds, ids["pad"], self.config.pad_to_multiple_of
            )
            batch["labels"], _ = pad_rows(labels, bounds, IGNORE_INDEX, self.config.pad_to_multiple_of)
            slots = len(samples) * self.max_length
        else:
            batch = {}
            batch["input_ids"], batch["attention_mask"] = pad_rows(
                input_ids, cu, ids["pad"], self.config.pad_to_multiple_of
            )
            batch["labels"], _ = pad_rows(labels, cu, IGNORE_INDEX, self.config.pad_to_multiple_of)
            slots = batch["input_ids"].numel()
        tokens = int(lengths.sum()) + SPECIALS_PER_SEQUENCE * len(lengths)
        self.stats["batches"] += 1
        self.stats["sequences"] += len(lengths)
        self.stats["tokens"] += tokens
        self.stats["slots"] += slots
        self.stats["masked"] += int((labels != IGNORE_INDEX).sum())
        return batch

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
        if not config["masking"]["identity_rate"]:  # states saved before the option existed still match
            del config["masking"]["identity_rate"]
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
            "taken": self._taken,
            "chunks": self._chunks,
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
        self._taken, self._chunks = int(state["taken"]), int(state["chunks"])


class MixtureLoader:
    """Each batch comes from one component loader, drawn with the configured probabilities. The draw
    depends on (seed, chunk number in the global order) only, so which documents a global batch holds does
    not depend on the world size; each component keeps its own global order."""

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
        self.corpus, self.rank, self.world_size = corpus, rank, world_size
        self._chunks = 0  # chunks of the global order gone by; each is drawn from one component

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def _draw(self, chunk: int) -> int:
        draw = np.random.default_rng(np.random.SeedSequence([self.config.seed, MIXTURE_STREAM, chunk]))
        component = int(np.searchsorted(self.cumulative, draw.random(), side="right"))
        return min(component, len(self.components) - 1)

    def _my_turn(self) -> None:
        while self._chunks % self.world_size != self.rank:
            self.components[self._draw(self._chunks)].take_samples(self.config.batch_size)
            self._chunks += 1

    def __next__(self) -> dict[str, Any]:
        self._my_turn()
        self.last_component = self._draw(self._chunks)
        component = self.components[self.last_component]
        samples, first = component.take_samples(self.config.batch_size)
        self._chunks += 1
        return component.build(samples, first)

    def skip(self, count: int) -> None:
        for _ in range(count):
            self._my_turn()
            self.components[self._draw(self._chunks)].take_samples(self.config.batch_size)
            self._chunks += 1

    def state_dict(self) -> dict[str, Any]:
        return {"chunks": self._chunks, "components": [c.state_dict() for c in self.components]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["components"]) != len(self.components):
            raise DataError("the loader state holds a different number of length-mixture components")
        for component, saved in zip(self.components, state["components"], strict=True):
            component.load_state_dict(saved)
        self._chunks = int(state["chunks"])


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
