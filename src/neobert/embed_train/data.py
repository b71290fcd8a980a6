"""Training pairs (query, positive[, negatives]) from JSON Lines, `datasets` or the offline demo corpus, and
batches drawn from one dataset at a time with datasets chosen in proportion to n^alpha."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neobert.data.sources import JsonLinesSource, ReaderOptions, Source, file_source, parse_spec


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    negatives: tuple[str, ...] = ()


def pair_from_record(record: object, where: str) -> Pair:
    """Fields: "query", "positive" (non-empty strings); optional "negatives" (a list of strings) or "negative"."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with query and positive, got {type(record).__name__}")
    for name in ("query", "positive"):
        if name not in record:
            raise ValueError(f"{where}: missing field {name!r} (need query, positive and optional negatives)")
        if not isinstance(record[name], str):
            raise ValueError(f"{where}: field {name!r} must be a string, got {type(record[name]).__name__}")
        if not record[name].strip():
            raise ValueError(f"{where}: field {name!r} is empty; every pair needs a query and a positive text")
    negatives = record.get("negatives", record.get("negative", ()))
    if negatives is None:
        negatives = ()
    if isinstance(negatives, str):
        negatives = (negatives,)
    if not isinstance(negatives, list | tuple) or not all(isinstance(n, str) for n in negatives):
        shown = json.dumps(negatives, default=str)[:40]
        raise ValueError(f"{where}: negatives must be a string or a list of strings, got {shown}")
    return Pair(record["query"], record["positive"], tuple(negatives))


DATA_FORMS = (
    "files of records (.jsonl, .json, .csv, .tsv, .parquet), folders saved with datasets, hf:NAME[:CONFIG] or demo"
)


def read_pairs(source: str | Path) -> list[Pair]:
    """The pairs of a file, a folder saved with `datasets.Dataset.save_to_disk` or `hf:NAME[:CONFIG]` (train):
    the records `neobert.data.sources` reads from the spec, read strictly (bytes that are not UTF-8 or a line
    that is not JSON are errors naming the line). A file without a table suffix is read as JSON Lines. The
    word "demo" is resolved by the command (`neobert.commands.contrastive.data_words`)."""
    text = str(source)
    options = ReaderOptions(hf_split="train", strict=True)
    spec = parse_spec(text)
    if spec.kind in ("hub", "saved", "folder"):
        records: Source = spec.dataset(options, split_flag=None)
    elif spec.kind == "file":
        records = file_source(spec.path, options)
        if records.kind == "text":
            records = JsonLinesSource(spec.path, options)
    else:
        raise FileNotFoundError(f"{spec.path} does not exist (pairs come from {DATA_FORMS})")
    pairs = [pair_from_record(record, where) for where, record in records.records()]
    if not pairs:
        raise ValueError(f"{text} holds no pairs")
    return pairs


def check_batch_fits(datasets: dict[str, list[Pair]], global_batch: int) -> None:
    """Every dataset must fill a batch with distinct pairs: with fewer, a batch repeats a pair, whose positive
    then counts as its own negative, and the loss cannot fall (training would run and learn nothing)."""
    for name, pairs in datasets.items():
        distinct = len(set(pairs))
        if distinct < max(global_batch, 2):
            raise ValueError(
                f"dataset {name} has {distinct} distinct pair(s), fewer than a batch of {global_batch} "
                "(--batch-size times processes) needs; lower --batch-size or add pairs"
            )


def sampling_probabilities(sizes: list[int], alpha: float = 0.5) -> np.ndarray:
    """p_i = n_i^alpha / sum_j n_j^alpha: alpha 1 samples by size, 0 uniformly, 0.5 (the paper) between."""
    sizes_array = np.asarray(sizes, dtype=np.float64)
    if sizes_array.size == 0 or (sizes_array <= 0).any():
        raise ValueError(f"every dataset needs at least one pair, got sizes {sizes}")
    weights = sizes_array**alpha
    return weights / weights.sum()


class HomogeneousBatches:
    """Endless batches, each from a single dataset chosen with `sampling_probabilities`. Every process
    draws the same dataset and the same global batch (one seed), and keeps its own slice of it, so that
    negatives gathered across processes come from the same dataset."""

    def __init__(
        self,
        datasets: dict[str, list[Pair]],
        batch_size: int,
        alpha: float = 0.5,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.names = list(datasets)
        self.datasets = datasets
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.probabilities = sampling_probabilities([len(datasets[n]) for n in self.names], alpha)
        self.rng = np.random.default_rng(seed)
        self.order = {name: self.rng.permutation(len(datasets[name])) for name in self.names}
        self.cursor = dict.fromkeys(self.names, 0)

    def _take(self, name: str, count: int) -> list[int]:
        taken = []
        while len(taken) < count:
            if self.cursor[name] == len(self.order[name]):  # an epoch of this dataset is over: reshuffle
                self.order[name] = self.rng.permutation(len(self.order[name]))
                self.cursor[name] = 0
            end = min(len(self.order[name]), self.cursor[name] + count - len(taken))
            taken.extend(self.order[name][self.cursor[name] : end].tolist())
            self.cursor[name] = end
        return taken

    def __iter__(self) -> Iterator[tuple[str, list[Pair]]]:
        while True:
            name = self.names[self.rng.choice(len(self.names), p=self.probabilities)]
            indices = self._take(name, self.batch_size * self.world_size)
            mine = indices[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            yield name, [self.datasets[name][i] for i in mine]
