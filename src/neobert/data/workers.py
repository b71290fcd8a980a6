"""Building batches in torch DataLoader worker processes, with the same batches and the same resume.

Worker w of n builds batches w, w + n, w + 2n, ... of the loader's sequence; the DataLoader hands them out
in that round-robin order, so training sees exactly what a single-process loader gives, masks included
(they are seeded by batch number, not by worker). Only document lengths are read to skip the batches of
the other workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from neobert.data.loader import MixtureLoader, PretrainingLoader


class _WorkerShare(torch.utils.data.IterableDataset):
    def __init__(self, loader: PretrainingLoader | MixtureLoader, state: dict[str, Any]):
        self.loader, self.state = loader, state

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        loader = self.loader  # each worker process holds its own copy
        loader.load_state_dict(self.state)
        loader.skip(worker)
        while True:
            try:
                yield next(loader)
            except StopIteration:
                return
            loader.skip(workers - 1)


class MultiWorkerLoader:
    """Iterates a loader through `num_workers` DataLoader processes; `state_dict()` is the loader's state
    after the batches consumed so far, so resuming works as with the loader itself."""

    def __init__(self, loader: PretrainingLoader | MixtureLoader, num_workers: int = 2, prefetch_factor: int = 2):
        self.loader, self.num_workers, self.prefetch_factor = loader, num_workers, prefetch_factor
        self.consumed = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.loader.skip(self.consumed)  # a new pass starts after what earlier passes handed out
        self.consumed = 0
        share = _WorkerShare(self.loader, self.loader.state_dict())
        data = torch.utils.data.DataLoader(
            share,
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
            persistent_workers=False,
        )
        for batch in data:
            self.consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        start = self.loader.state_dict()
        self.loader.skip(self.consumed)
        state = self.loader.state_dict()
        self.loader.load_state_dict(start)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
        self.consumed = 0
