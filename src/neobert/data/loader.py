"""Batches for pre-training: memory-mapped shards, seeded shuffling, rank split, exact and elastic resume.

There is one global order of samples, the same for every rank and process count, built in memory that does
not grow with the corpus (`order.py`): per epoch, blocks of `block_documents` consecutive documents are
visited in a seeded permutation and taken `window_blocks` at a time; a window's sequence units (truncated
documents or chunks, see `sequences.py`) are computed from the shards' memory-mapped offsets and shuffled
with a seed derived from (seed, epoch, window). A sample is a unit, or under `pack` and `pack_naive` a pack of
a window's units (best fit decreasing into budgets of `max_length` tokens, the packs shuffled). The order is cut into
chunks of `batch_size` samples, dealt out in turn: rank r of w takes chunks r, r + w, r + 2w, ... So with a
global batch of G samples, step s trains on samples s*G .. (s+1)*G - 1 whatever the world size, micro-batch
and accumulation, and each sample is seen exactly once per epoch across ranks. The loader is endless by
default: batches run on from one epoch into the next, so no data is dropped and every rank yields batches
forever.

The position is (epoch, window, sample within the window) with the count of samples and of chunks gone by;
`state_dict()` stores it, and resuming recomputes only that window from document lengths: no token is read
again and no batch is replayed. The state also holds the position at the end of the current round of
`world_size` chunks, which is the same on every rank at a step boundary: a loader with another rank, world
size or micro-batch resumes from there (elastic resume), as long as that position is a whole number of its
rounds. Each sample is masked with draws seeded by (seed, stream, its index in the global order), so masks
are the same after a resume and do not depend on ranks, accumulation or data workers.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from neobert.data.masking import IGNORE_INDEX, MaskingConfig, mask_with_draws, sequence_draws
from neobert.data.mixture import MixtureLoader
from neobert.data.order import BlockOrder
from neobert.data.sequences import (
    SEQUENCES,
    SPECIALS_PER_SEQUENCE,
    TokenCorpus,
    layout_packed,
    pack_best_fit,
    pad_rows,
    sequence_units,
    with_specials,
)
from neobert.data.shards import DataError
from neobert.data.tokenization import TokenizerSpec

STATE_VERSION = 3


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
    """A loader's settings. Those that the pre-training config's `data` section also has carry its names and
    meanings (sequence, max_length, mlm_probability, mask_mode, mlm_identity_probability, seed,
    block_documents, window_blocks), so `train/data.py` hands them over as they are."""

    path: str
    split: str = "train"
    # "truncate" (the paper's): padded rows (B, L) + attention_mask. "pack": one row of packs + cu_seqlens.
    # "pack_naive": a pack per padded row, its documents attending to each other (sequences.py).
    sequence: str = "truncate"
    max_length: int | None = None  # None: the corpus's --max-length
    batch_size: int = 32  # this rank's sequences (truncate) or packs of max_length tokens (pack) per batch
    pad_to_multiple_of: int = 8
    # The order: blocks of consecutive documents of one shard, visited in a seeded permutation, and windows
    # of blocks whose units are shuffled and packed together (see order.py).
    block_documents: int = 128
    window_blocks: int = 16
    min_document_tokens: int = 0
    length_mixture: tuple[LengthBucket, ...] = ()  # non-empty: each batch draws one bucket (phase 2)
    mlm_probability: float = 0.2
    mask_mode: str = "all"  # "all": every selected token becomes [MASK]; "bert": 80/10/10 (masking.py)
    mlm_identity_probability: float = 0.0
    seed: int = 0
    epochs: int | None = None  # None: endless
    drop_last: bool = False  # with finite epochs: drop the final partial batch
    verify: str = "first_use"  # shard checksums: on a shard's first use (see shards.open_shard), "full", "size"

    def __post_init__(self) -> None:
        if self.sequence not in SEQUENCES:
            raise ValueError(f"sequence must be one of {SEQUENCES}, not {self.sequence!r}")
        if min(self.batch_size, self.block_documents, self.window_blocks) < 1:
            raise ValueError("batch_size, block_documents and window_blocks must be positive")
        _ = self.masking  # a bad rate or mode is named now, not at the first batch

    @functools.cached_property
    def masking(self) -> MaskingConfig:
        return MaskingConfig(self.mlm_probability, self.mask_mode, self.mlm_identity_probability)

    @property
    def packs(self) -> bool:
        """Whether samples are packs of documents (`pack`, `pack_naive`) rather than single documents."""
        return self.sequence != "truncate"

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> LoaderConfig:
        """From plain data (a YAML preset): length-mixture entries become dataclasses."""
        payload = dict(payload)
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
        if config.min_document_tokens == 0 and len(self.corpus) < world_size:
            raise DataError(f"{self.corpus.root}: {len(self.corpus)} document(s): too few for {world_size} rank(s)")
        self.order = BlockOrder(
            self.corpus.shard_documents, config.block_documents, config.window_blocks, (config.seed, stream)
        )
        ids = self.corpus.special_ids
        self.never_mask = sorted({ids["pad"], ids["unk"], ids["cls"], ids["sep"], ids["mask"]})
        self.stats = {"batches": 0, "sequences": 0, "tokens": 0, "slots": 0, "masked": 0}
        self.masking = config.masking  # its rate follows a mask-rate schedule (set_mlm_probability)
        # Position in the global order (epoch, window, sample in the window), samples taken from it, and
        # chunks of `batch_size` samples gone by (this rank's and the others').
        self._epoch = self._window = self._offset = self._taken = self._chunks = 0
        self._cached_windows: dict[tuple[int, int], list[np.ndarray]] = {}
        self._first_samples()

    # ---- the global sample order ----------------------------------------------------------------------
    def _first_samples(self) -> None:
        """Names a filter no document passes now, rather than at the first batch (it reads every window's
        offsets only when the first windows are empty)."""
        for window in range(self.order.windows):
            if self._samples(0, window):
                return
        raise DataError(
            f"{self.corpus.root}: no sequence of documents with at least {self.config.min_document_tokens} tokens "
            f"in the {self.config.split!r} split"
        )

    def _samples(self, epoch: int, window: int) -> list[np.ndarray]:
        """The samples of one window: arrays of (shard, token start, length) rows, one row per unit."""
        key = (epoch, window)
        cached = self._cached_windows.get(key)
        if cached is not None:
            return cached
        blocks = self.order.window(epoch, window)
        self.corpus.check_shards(sorted({block.shard for block in blocks}))
        parts = []
        for block in blocks:
            starts, lengths = self.corpus.spans(block.shard, block.first, block.count)
            units = sequence_units(lengths, self.config.sequence, self.max_length, self.config.min_document_tokens)
            parts.append(
                np.stack([np.full(len(units), block.shard), starts[units.doc] + units.start, units.length], axis=1)
            )
        rng = np.random.default_rng(np.random.SeedSequence([self.config.seed, self.stream, epoch, window]))
        units = np.concatenate(parts).astype(np.int64)[rng.permutation(sum(len(part) for part in parts))]
        if not self.config.packs:
            samples = [units[i : i + 1] for i in range(len(units))]
        else:
            packs = pack_best_fit(units[:, 2] + SPECIALS_PER_SEQUENCE, self.max_length)
            # Best fit fills packs longest-first; shuffling keeps long and short documents mixed in batches.
            samples = [units[np.asarray(packs[i])] for i in rng.permutation(len(packs))]
        if len(self._cached_windows) >= 2:  # the current window and the one a state_dict() looked ahead to
            self._cached_windows.pop(next(iter(self._cached_windows)))
        self._cached_windows[key] = samples
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
                if self._window >= self.order.windows:
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
        return self.finish(self.next_unmasked())

    def next_unmasked(self) -> dict[str, Any]:
        """The next batch before masking (`unmasked`): `finish` masks it at the rate then in force."""
        self._my_turn()
        samples, first = self.take_samples(self.config.batch_size)
        if not self._complete(samples):
            raise StopIteration
        self._chunks += 1
        return self.unmasked(samples, first)

    def skip(self, count: int) -> None:
        """Moves past `count` of this rank's batches without building them (only document lengths are read)."""
        for _ in range(count):
            self._my_turn()
            samples, _ = self.take_samples(self.config.batch_size)
            if not self._complete(samples):
                return
            self._chunks += 1

    def unmasked(self, samples: list[np.ndarray], first: int) -> dict[str, Any]:
        """The batch of `samples` (the first is sample `first` of the global order) before masking: what does
        not depend on the mask rate, their tokens with [CLS] and [SEP] and their masking draws, as numpy
        arrays that data workers send cheaply. `finish` masks and lays it out."""
        units = np.concatenate(samples)
        lengths = units[:, 2]
        content = self.corpus.gather(units[:, 0], units[:, 1], lengths)
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
        return {"ids": flat, "cu": cu, "bounds": bounds, "lengths": lengths, "samples": len(samples), "draws": draws}

    def finish(self, unmasked: dict[str, Any]) -> dict[str, Any]:
        """The batch of an `unmasked` one, masked at the current rate and laid out; counted in `stats`."""
        flat, cu, bounds, lengths, samples, draws = (
            unmasked[k] for k in ("ids", "cu", "bounds", "lengths", "samples", "draws")
        )
        ids = self.corpus.special_ids
        input_ids, labels = mask_with_draws(torch.from_numpy(flat), self.masking, self.never_mask, ids["mask"], draws)
        if self.config.sequence == "pack":
            batch = layout_packed(input_ids, cu)
            batch["labels"] = labels.unsqueeze(0)
            slots = samples * self.max_length
        elif self.config.sequence == "pack_naive":  # a pack's sequences in one row, attending to each other
            batch = {}
            batch["input_ids"], batch["attention_mask"] = pad_rows(
                input_ids, bounds, ids["pad"], self.config.pad_to_multiple_of
            )
            batch["labels"], _ = pad_rows(labels, bounds, IGNORE_INDEX, self.config.pad_to_multiple_of)
            slots = samples * self.max_length
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

    def set_mlm_probability(self, rate: float) -> None:
        """Mask the next batches at `rate`; a sample's draws do not depend on it, so the masks stay nested."""
        self.masking = replace(self.config.masking, mlm_probability=rate)

    @property
    def packing_efficiency(self) -> float:
        """Real tokens over token slots (pack budgets, or padded batch area) so far."""
        return self.stats["tokens"] / max(1, self.stats["slots"])

    @property
    def epoch(self) -> int:
        return self._epoch

    # ---- resume --------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        """What a saved position means: the corpus and the order's configuration. The rank, world size and
        batch size are kept apart (`placement`): they change where a rank stands, not the global order."""
        config = asdict(self.config)
        for volatile in ("path", "verify", "epochs", "drop_last", "batch_size"):
            config.pop(volatile)
        identity = {
            "config": config,
            "max_length": self.max_length,
            "documents": len(self.corpus),
            "shards": len(self.corpus.entries),
            "stream": self.stream,
        }
        return json.loads(json.dumps(identity))  # as a checkpoint file gives it back (tuples become lists)

    def _placement(self) -> dict[str, int]:
        return {"rank": self.rank, "world_size": self.world_size, "batch_size": self.config.batch_size}

    def position(self) -> dict[str, Any]:
        return {
            "position": [self._epoch, self._window, self._offset],
            "taken": self._taken,
            "chunks": self._chunks,
        }

    def set_position(self, state: dict[str, Any]) -> None:
        self._epoch, self._window, self._offset = (int(x) for x in state["position"])
        self._taken, self._chunks = int(state["taken"]), int(state["chunks"])

    def end_of_round(self) -> dict[str, Any]:
        """The position after the rest of the current round of `world_size` chunks (the other ranks' part of
        it): at a step boundary, the same on every rank."""
        now = self.position()
        while self._chunks % self.world_size:
            self.take_samples(self.config.batch_size)
            self._chunks += 1
        boundary = self.position()
        self.set_position(now)
        return boundary

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            **self.position(),
            "boundary": self.end_of_round(),
            "placement": self._placement(),
            "identity": self._identity(),
        }

    def check_identity(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise DataError(
                f"loader state version {state.get('version')!r}; this neobert reads {STATE_VERSION} (states of "
                "earlier versions follow another sample order and cannot be continued)"
            )
        mine, theirs = self._identity(), _in_current_words(state["identity"])
        if mine != theirs:
            differing = sorted(key for key in mine if mine[key] != theirs.get(key))
            raise DataError(
                f"the loader state was saved by a different setup (differs in: {', '.join(differing)}); "
                "resume with the same corpus and data configuration"
            )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where the state was taken; saved by another rank, world size or micro-batch, from
        the end of its round (a step boundary), when that is a whole number of this loader's rounds."""
        self.check_identity(state)
        if state["placement"] == self._placement():
            self.set_position(state)
            return
        self.continue_from_boundary(state["boundary"])

    def continue_from_boundary(self, boundary: dict[str, Any]) -> None:
        taken, round_size = int(boundary["taken"]), self.config.batch_size * self.world_size
        if taken % round_size:
            raise DataError(
                f"the saved position (sample {taken} of the global order) is not a whole number of rounds of "
                f"{self.world_size} rank(s) x {self.config.batch_size} samples: resume with a micro-batch, "
                "accumulation and world size whose global batch divides it"
            )
        self.set_position({**boundary, "chunks": taken // self.config.batch_size})


def _in_current_words(identity: dict[str, Any]) -> dict[str, Any]:
    """A saved identity with the loader settings named as now. States saved before the loader took the
    pre-training config's words name the same order and masks with `scheme`, `layout` and a nested `masking`;
    they still resume."""
    config = identity.get("config", {})
    if "scheme" not in config:
        return identity
    config = dict(config)
    scheme, layout, masking = config.pop("scheme"), config.pop("layout"), config.pop("masking")
    sequence = "truncate" if scheme == "truncate" else "pack_naive" if layout == "rows" else "pack"
    # Keep a combination the current words cannot say (truncated documents laid out in one row) different.
    if scheme == "truncate" and layout != "padded":
        sequence = f"truncate ({layout})"
    config.update(
        sequence=sequence,
        mlm_probability=masking["rate"],
        mask_mode={"all_mask": "all", "80_10_10": "bert"}.get(masking["strategy"], masking["strategy"]),
        mlm_identity_probability=masking.get("identity_rate", 0.0),
    )
    return {**identity, "config": config}


def build_loader(
    config: LoaderConfig, rank: int | None = None, world_size: int | None = None, tokenizer: Any = None
) -> PretrainingLoader | MixtureLoader:
    """The loader a config describes. Rank and world size default to torchrun's RANK and WORLD_SIZE; with a
    tokenizer, a corpus tokenised with another one is refused."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    fingerprint = None
    if tokenizer is not None:
        fingerprint = TokenizerSpec.from_tokenizer(tokenizer).fingerprint
    if config.length_mixture:
        return MixtureLoader(config, PretrainingLoader, rank, world_size, fingerprint)
    return PretrainingLoader(config, rank, world_size, fingerprint)
