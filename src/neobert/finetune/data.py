"""Labelled data for fine-tuning: reading tables, mapping labels to ids, tokenising, dynamic padding.

Everything is checked before a model is loaded: a missing column, an empty side of a text pair or a
validation label that training never saw is a `FinetuneDataError` naming the file, the row and the fix.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from neobert.data.shards import DataError
from neobert.data.sources import ReaderOptions, Source, file_source, parse_spec

PROBLEMS = ("auto", "single", "multi", "regression")


class FinetuneDataError(ValueError):
    """Labelled data that cannot be used as given."""


@dataclass
class Columns:
    text: str = "text"
    label: str = "label"
    text_pair: str | None = None


@dataclass
class Examples:
    """Rows of one split; `labels[i]` is the raw cell (a string, number or list) or None when unlabelled."""

    texts: list[str]
    labels: list[Any]
    pairs: list[str] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value)


TABLE_KINDS = ("csv", "jsonl", "json", "parquet")  # the `neobert.data.sources` readers of a table file


def read_rows(source: str | os.PathLike, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a CSV/TSV/JSON Lines/JSON/Parquet file (possibly compressed), a saved `datasets` folder, or
    `hf:NAME[:CONFIG]` (its `split`): the records `neobert.data.sources` reads from the spec, read strictly
    (bytes that are not UTF-8, a line that is not JSON or a row with too many cells are errors naming the line)."""
    options = ReaderOptions(hf_split=split, strict=True)
    try:
        spec = parse_spec(str(source))
        if spec.kind in ("hub", "saved", "folder"):
            table: Source = spec.dataset(options, split_flag=None)
        elif spec.kind != "file":
            raise FinetuneDataError(f"{spec.path}: no such file")
        else:
            table = file_source(spec.path, options)
            if table.kind not in TABLE_KINDS:
                suffix = table.format_suffix or spec.path.suffix
                raise FinetuneDataError(
                    f"{spec.path}: unknown format {suffix!r}; use one of .csv, .tsv, .jsonl, .json, .parquet"
                )
        return [record for _, record in table.records()]
    except DataError as error:
        raise FinetuneDataError(str(error)) from None


def examples_from_rows(rows: list[dict[str, Any]], columns: Columns, source: str, labelled: bool = True) -> Examples:
    if not rows:
        raise FinetuneDataError(f"{source}: no rows")
    wanted = [columns.text] + ([columns.text_pair] if columns.text_pair else []) + ([columns.label] if labelled else [])
    absent = [name for name in wanted if name not in rows[0]]
    if absent:
        raise FinetuneDataError(
            f"{source}: no column {', '.join(map(repr, absent))}; the columns are {', '.join(map(str, rows[0]))} "
            "(choose with --text-column / --text-pair-column / --label-column)"
        )
    texts, pairs, labels = [], [], []
    for number, row in enumerate(rows, start=1):
        text = row.get(columns.text)
        if _missing(text):
            raise FinetuneDataError(f"{source}: row {number} has no text in column {columns.text!r}")
        texts.append(str(text))
        if columns.text_pair:
            pair = row.get(columns.text_pair)
            if _missing(pair):
                raise FinetuneDataError(
                    f"{source}: row {number} is a text pair with its second side ({columns.text_pair!r}) missing"
                )
            pairs.append(str(pair))
        label = row.get(columns.label) if labelled else None
        if labelled and _missing(label):
            raise FinetuneDataError(f"{source}: row {number} has no label in column {columns.label!r}")
        labels.append(label.tolist() if hasattr(label, "tolist") else label)
    return Examples(texts=texts, labels=labels, pairs=pairs if columns.text_pair else None, source=source)


def read_examples(source: str | os.PathLike, columns: Columns, split: str = "train", labelled: bool = True) -> Examples:
    return examples_from_rows(read_rows(source, split), columns, str(source), labelled)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _is_finite_number(value: Any) -> bool:
    return _is_number(value) and math.isfinite(float(value))


def _is_integral(value: Any) -> bool:
    return _is_finite_number(value) and float(value) == int(float(value)) and "." not in str(value)


def _sort_key(name: str) -> tuple:
    # Numeric names in numeric order ("2" before "10"), the others alphabetically after them.
    return (0, float(name), "") if _is_number(name) else (1, 0.0, name)


@dataclass
class LabelSpace:
    """How raw label cells become targets: `single` (class ids), `multi` (0/1 vectors) or `regression`."""

    problem: str
    names: list[str] = field(default_factory=list)
    separator: str = "|"

    @property
    def num_labels(self) -> int:
        return 1 if self.problem == "regression" else len(self.names)

    def split_cell(self, value: Any) -> list[str]:
        if isinstance(value, list | tuple):
            return [str(v).strip() for v in value]
        return [part.strip() for part in str(value).split(self.separator) if part.strip()]

    def name_of(self, value: Any) -> str:
        # 1, 1.0 and "1" are one class: integral numbers are written without a decimal part.
        if _is_finite_number(value) and float(value) == int(float(value)):
            return str(int(float(value)))
        return str(value).strip()

    def target(self, value: Any, source: str = "", row: int = 0) -> Any:
        if self.problem == "regression":
            if not _is_number(value):
                raise FinetuneDataError(f"{source}: row {row}: label {value!r} is not a number (regression)")
            if not math.isfinite(float(value)):
                raise FinetuneDataError(
                    f"{source}: row {row}: label {value!r} is not finite; a regression target must be a real number"
                )
            return float(value)
        index = {name: i for i, name in enumerate(self.names)}
        parts = self.split_cell(value) if self.problem == "multi" else [self.name_of(value)]
        unknown = [part for part in parts if part not in index]
        if unknown:
            raise FinetuneDataError(
                f"{source}: row {row}: label {', '.join(map(repr, unknown))} never occurs in the training data "
                f"(known: {', '.join(self.names[:20])}{' ...' if len(self.names) > 20 else ''})"
            )
        if self.problem == "single":
            return index[parts[0]]
        vector = [0.0] * len(self.names)
        for part in parts:
            vector[index[part]] = 1.0
        return vector

    def targets(self, examples: Examples) -> list[Any]:
        return [self.target(v, examples.source, i) for i, v in enumerate(examples.labels, start=1)]

    def as_dict(self) -> dict[str, Any]:
        return {"problem": self.problem, "names": self.names, "separator": self.separator}


def infer_label_space(train: Examples, problem: str = "auto", separator: str = "|") -> LabelSpace:
    """The label space from the training labels: lists or `a|b` cells make it multi-label, non-integral
    numbers regression, anything else single-label; `problem` overrides the guess."""
    if problem not in PROBLEMS:
        raise FinetuneDataError(f"problem must be one of {PROBLEMS}, got {problem!r}")
    values = train.labels
    if problem == "auto":
        if any(isinstance(v, list | tuple) or (isinstance(v, str) and separator in v) for v in values):
            problem = "multi"
        elif all(_is_number(v) for v in values) and not all(_is_integral(v) for v in values):
            problem = "regression"
        else:
            problem = "single"
    space = LabelSpace(problem=problem, separator=separator)
    if problem == "regression":
        return space
    names: set[str] = set()
    for value in values:
        names.update(space.split_cell(value) if problem == "multi" else [space.name_of(value)])
    if problem == "single" and len(names) < 2:
        raise FinetuneDataError(f"{train.source}: a single-label task needs at least two classes, found {names}")
    space.names = sorted(names, key=_sort_key)
    return space


@dataclass
class Encoded:
    """Token ids per example (no padding) and the targets, ready for batching."""

    input_ids: list[list[int]]
    targets: list[Any]

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(examples: Examples, tokenizer, max_length: int, targets: list[Any] | None = None) -> Encoded:
    """[CLS] A [SEP] (or [CLS] A [SEP] B [SEP] for pairs), truncated to `max_length` tokens."""
    encoded = tokenizer(
        examples.texts, examples.pairs, truncation=True, max_length=max_length, return_attention_mask=False
    )
    return Encoded(input_ids=encoded["input_ids"], targets=targets if targets is not None else [0] * len(examples))


def pad_batch(rows: Sequence[list[int]], pad_id: int, label_rows: Sequence[list[int]] | None = None) -> dict:
    """Dynamic padding: to the longest row of this batch, not a fixed length."""
    longest = max(len(row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if label_rows is not None:
        labels = torch.full((len(rows), longest), -100, dtype=torch.long)
        for i, row in enumerate(label_rows):
            labels[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        batch["labels"] = labels
    return batch


def collate(data: Encoded, indices: Sequence[int], pad_id: int, problem: str, packed: bool = False) -> dict:
    """A model batch for the examples at `indices`: padded (batch, longest), or with `packed` one row of
    the examples end to end with `cu_seqlens` (NeoBERT models only; no compute spent on padding)."""
    rows = [data.input_ids[i] for i in indices]
    if packed:
        return pack_batch(rows, [data.targets[i] for i in indices], problem)
    if problem == "token":
        return pad_batch(rows, pad_id, [data.targets[i] for i in indices])
    batch = pad_batch(rows, pad_id)
    batch["labels"] = _sequence_labels([data.targets[i] for i in indices], problem)
    return batch


def pack_batch(rows: Sequence[list[int]], targets: Sequence[Any], problem: str) -> dict:
    """One row holding every example: token labels laid end to end like the ids, one label per example
    otherwise (the heads pool each example's first token)."""
    lengths = torch.tensor([len(row) for row in rows])
    batch = {
        "input_ids": torch.tensor([t for row in rows for t in row], dtype=torch.long)[None],
        "cu_seqlens": torch.nn.functional.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32),
        "max_seqlen": int(lengths.max()),
    }
    if problem == "token":
        batch["labels"] = torch.tensor([t for row in targets for t in row], dtype=torch.long)[None]
    else:
        batch["labels"] = _sequence_labels(targets, problem)
    return batch


def _sequence_labels(targets: Sequence[Any], problem: str) -> torch.Tensor:
    return torch.tensor(list(targets), dtype=torch.long if problem == "single" else torch.float)


def real_tokens(batch: dict) -> int:
    """Tokens of real text in a padded or packed batch."""
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The training order of one epoch, a function of (seed, epoch) alone so a resumed run repeats it."""
    order = list(range(size))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def eval_batches(
    data: Encoded, batch_size: int, pad_id: int, problem: str, packed: bool = False
) -> Iterator[tuple[list[int], dict]]:
    """Batches of similar lengths (less padding); yields the example indices with each batch."""
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        yield indices, collate(data, indices, pad_id, problem, packed)
