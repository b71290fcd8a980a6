"""The corpus-wide order of documents, in memory that does not grow with the corpus.

The corpus is cut into blocks: runs of `block_documents` consecutive documents of one shard (a shard's last
block may be shorter). Each epoch visits every block once, in an order given by a seeded permutation of the
block numbers; the permutation is a keyed Feistel network (with cycle walking), so block k of the epoch is
computed on demand and no array over the blocks, the documents or the sequence units is ever built. The
epoch's blocks are taken `window_blocks` at a time: a window gathers blocks from as many places in the
corpus, usually as many shards, and its documents are shuffled (and packed) together by the loader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_ROUNDS = 6


def _mix(values: np.ndarray) -> np.ndarray:
    """A 64-bit avalanche (splitmix64's finaliser) applied elementwise."""
    with np.errstate(over="ignore"):
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


class KeyedPermutation:
    """A seeded bijection of range(size) evaluated elementwise: a balanced Feistel network over the smallest
    even power of two that holds `size`, repeated on values that land outside (cycle walking; the domain
    is under four times `size`, so a few rounds on average)."""

    def __init__(self, size: int, key: tuple[int, ...]):
        if size < 1:
            raise ValueError("a permutation needs at least one element")
        self.size = size
        self.half_bits = max(1, (int(size - 1).bit_length() + 1) // 2)
        self.half_mask = np.uint64((1 << self.half_bits) - 1)
        seed = np.random.SeedSequence(list(key)).generate_state(_ROUNDS, dtype=np.uint64)
        self.round_keys = [np.uint64(value) for value in seed]

    def _network(self, values: np.ndarray) -> np.ndarray:
        shift = np.uint64(self.half_bits)
        left, right = values >> shift, values & self.half_mask
        for round_key in self.round_keys:
            with np.errstate(over="ignore"):
                left, right = right, left ^ (_mix(right ^ round_key) & self.half_mask)
        return (left << shift) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        values = np.asarray(positions, dtype=np.uint64)
        if values.size and int(values.max()) >= self.size:
            raise IndexError(f"position outside the permutation of {self.size}")
        values = self._network(values)
        outside = values >= np.uint64(self.size)
        while outside.any():
            values[outside] = self._network(values[outside])
            outside = values >= np.uint64(self.size)
        return values.astype(np.int64)


@dataclass(frozen=True)
class Block:
    shard: int
    first: int  # the block's first document, within its shard
    count: int


class BlockOrder:
    """Blocks of the corpus and the windows of each epoch. Memory: a few integers per shard."""

    def __init__(self, shard_documents: list[int], block_documents: int, window_blocks: int, key: tuple[int, ...]):
        if block_documents < 1 or window_blocks < 1:
            raise ValueError("block_documents and window_blocks must be positive")
        self.block_documents, self.window_blocks, self.key = block_documents, window_blocks, key
        self.shard_documents = np.asarray(shard_documents, dtype=np.int64)
        blocks_per_shard = -(-self.shard_documents // block_documents)
        self.first_block = np.concatenate([[0], np.cumsum(blocks_per_shard)])  # per shard, and the total
        self.blocks = int(self.first_block[-1])
        self._permutation: tuple[int, KeyedPermutation] | None = None

    @property
    def windows(self) -> int:
        """Windows per epoch."""
        return -(-self.blocks // self.window_blocks)

    def _epoch_permutation(self, epoch: int) -> KeyedPermutation:
        if self._permutation is None or self._permutation[0] != epoch:
            self._permutation = (epoch, KeyedPermutation(self.blocks, (*self.key, epoch)))
        return self._permutation[1]

    def block(self, number: int) -> Block:
        shard = int(np.searchsorted(self.first_block, number, side="right")) - 1
        first = (number - int(self.first_block[shard])) * self.block_documents
        return Block(shard, first, min(self.block_documents, int(self.shard_documents[shard]) - first))

    def window(self, epoch: int, window: int) -> list[Block]:
        """The blocks of one window of one epoch, in the epoch's order."""
        start = window * self.window_blocks
        positions = np.arange(start, min(start + self.window_blocks, self.blocks))
        return [self.block(int(number)) for number in self._epoch_permutation(epoch)(positions)]
