"""Where pre-training text comes from: files, folders, globs and Hugging Face datasets, read as streams.

A source spec is one of
- a file: `.txt/.text/.md/.rst` (plain text), `.jsonl/.ndjson` (JSON Lines), `.json` (JSON Lines, or one
  array of records), `.csv/.tsv`, `.parquet`; any of the text formats may end in `.gz`, `.bz2` or `.xz`;
  a file with another suffix is read as plain text;
- a folder: every file with one of those suffixes below it, in sorted order (the others are counted and left
  out, or read as plain text when asked); a folder written by
  `datasets.Dataset.save_to_disk` is read as that dataset instead;
- a glob (`data/**/*.jsonl`);
- `hf:NAME[:CONFIG]`: a Hugging Face hub dataset (or a local loading script or data folder), streamed
  with `datasets.load_dataset(..., streaming=True)`.

`parse_spec` is the one reading of a spec, and `file_source` the one choice of a reader by suffix: pre-training
takes a source's `documents` (one text field), fine-tuning (`neobert.finetune.data.read_rows`) and contrastive
training (`neobert.embed_train.data.read_pairs`) its `records` and pick their own columns.

Readers yield one document (a string) at a time, so memory stays bounded whatever the corpus size; for
`prepare`, `Source.pieces` yields documents already cut to a length, and plain text is read a bounded part of
a line at a time (`neobert.data.plain_text`), so a one-line file of any size takes no more memory than a
piece (a JSON, CSV or Parquet record is still read whole).
Lines that are not valid UTF-8 are skipped and counted, or with `ReaderOptions.strict` (labelled data) an
error naming the line (`neobert.data.source_base`); an empty file or a missing text field is an error that
names the file. The readers of records live in `neobert.data.table_files`.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neobert.data.plain_text import line_parts, text_pieces
from neobert.data.shards import DataError
from neobert.data.source_base import FileSource, ReadCounts, ReaderOptions, Source
from neobert.data.table_files import CsvSource, JsonLinesSource, JsonSource, ParquetSource

__all__ = [
    "CsvSource",
    "DataError",
    "DataSpec",
    "DatasetSource",
    "FileSource",
    "JsonLinesSource",
    "JsonSource",
    "ParquetSource",
    "ReadCounts",
    "ReaderOptions",
    "Source",
    "TextFileSource",
    "file_source",
    "parse_spec",
    "resolve_sources",
]

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
KNOWN_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | {".json", ".csv", ".tsv", ".parquet"}


class TextFileSource(FileSource):
    """Plain text, read a bounded part of a line at a time (see `neobert.data.plain_text`)."""

    kind = "text"

    def pieces(self, limit: int) -> Iterator[tuple[str, int]]:
        found = False
        with self.open_binary() as handle:
            for piece in text_pieces(line_parts(handle, self.counts), self.options.text_unit, limit):
                found = True
                yield piece
        if not found:
            raise self._no_text()

    def documents(self) -> Iterator[str]:
        """Whole documents (a long one whole in memory: `prepare` reads `pieces` instead)."""
        for document, _ in self.pieces(sys.maxsize):
            yield document


class DatasetSource(Source):
    """A Hugging Face dataset: a folder saved with `save_to_disk`, or `hf:NAME[:CONFIG]` streamed."""

    def __init__(
        self,
        spec: str,
        options: ReaderOptions,
        path: Path | None = None,
        name: str | None = None,
        config: str | None = None,
        split_flag: str | None = "--split",
    ):
        super().__init__(spec, options)
        self.path, self.name, self.config = path, name, config
        self.split_flag = split_flag  # the option that chooses the split, named when it is missing
        self.kind = "datasets-disk" if path is not None else "datasets-hub"

    def describe(self) -> dict[str, Any]:
        where = {"path": str(self.path)} if self.path is not None else {"name": self.name, "config": self.config}
        return {"spec": self.spec, "kind": self.kind, "split": self.options.hf_split, **where}

    def identity(self) -> dict[str, Any]:
        identity = self.describe()
        if self.path is not None:
            files = sorted(p for p in self.path.rglob("*") if p.is_file())
            identity["files"] = [[str(p.relative_to(self.path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        return identity

    def _split(self):
        """The dataset's split `options.hf_split`, every column."""
        import datasets

        split = self.options.hf_split
        if self.path is None:
            try:
                return datasets.load_dataset(self.name, self.config, split=split, streaming=True)
            except Exception as error:  # offline, unknown name, bad config: all surface as different types
                raise DataError(f"{self.spec}: could not load the dataset ({type(error).__name__}: {error})") from error
        try:
            dataset = datasets.load_from_disk(str(self.path))
        except (FileNotFoundError, ValueError) as error:  # a damaged or partly written folder
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataError(f"{self.path}: a folder that is not a saved `datasets` dataset ({first})") from None
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                hint = f"; use {self.split_flag}" if self.split_flag else ""
                raise DataError(f"{self.path}: no split {split!r}; it has {', '.join(dataset)}{hint}")
            dataset = dataset[split]
        return dataset

    def _dataset(self):
        dataset = self._split()
        names = list(dataset.column_names or [])
        if names and self.options.text_field not in names:
            raise DataError(
                f"{self.spec}: no column {self.options.text_field!r} (columns: {', '.join(names)}); "
                "choose it with --text-field"
            )
        return dataset

    def check(self) -> None:
        if self.path is not None:
            self._dataset()

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Whole records, every column, each with where it is (`spec[INDEX]`)."""
        for index, record in enumerate(self._split()):
            yield f"{self.spec}[{index}]", dict(record)

    def documents(self) -> Iterator[str]:
        dataset, field = self._dataset(), self.options.text_field
        if self.path is not None:
            rows: Iterable[Any] = (
                text for batch in dataset.select_columns([field]).iter(batch_size=1024) for text in batch[field]
            )
        else:
            rows = (record.get(field) for record in dataset)
        yield from self._with_text(self._text(text, self.spec) for text in rows)


@dataclass(frozen=True)
class DataSpec:
    """What a data spec names, as `parse_spec` reads it: a hub dataset (`hf:NAME[:CONFIG]`), a folder saved
    with `datasets`, another folder, a file, a glob, or nothing there."""

    spec: str
    kind: str  # "hub", "saved", "folder", "file", "glob" or "missing"
    path: Path | None = None
    name: str | None = None
    config: str | None = None

    def dataset(self, options: ReaderOptions, split_flag: str | None = "--split") -> DatasetSource:
        """The dataset a "hub" or "saved" spec names; DataError for another folder."""
        if self.kind not in ("hub", "saved"):
            raise DataError(
                f"{self.path or self.spec}: a folder that is not a saved `datasets` dataset "
                "(it holds neither dataset_dict.json nor state.json with dataset_info.json)"
            )
        return DatasetSource(self.spec, options, self.path, self.name, self.config, split_flag)


def parse_spec(spec: str) -> DataSpec:
    """The one reading of a data spec (pre-training, fine-tuning and contrastive data all come through it)."""
    if spec.startswith("hf:"):
        name, _, config = spec[3:].partition(":")
        if not name:
            raise DataError(f"{spec}: expected hf:NAME or hf:NAME:CONFIG")
        return DataSpec(spec, "hub", name=name, config=config or None)
    path = Path(spec).expanduser()
    if path.is_dir():
        return DataSpec(spec, "saved" if _is_saved_dataset(path) else "folder", path)
    if path.is_file():
        return DataSpec(spec, "file", path)
    return DataSpec(spec, "glob" if glob.has_magic(spec) else "missing", path)


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def file_source(path: Path, options: ReaderOptions, spec: str | None = None) -> FileSource:
    probe = FileSource(path, options)
    suffix = probe.format_suffix
    if suffix in JSONL_SUFFIXES:
        return JsonLinesSource(path, options, spec)
    cls = {".json": JsonSource, ".csv": CsvSource, ".tsv": CsvSource, ".parquet": ParquetSource}.get(suffix)
    return (cls or TextFileSource)(path, options, spec)


def _has_known_suffix(path: Path) -> bool:
    probe = FileSource(path, ReaderOptions())
    return probe.format_suffix in KNOWN_SUFFIXES


def resolve_sources(
    specs: list[str], options: ReaderOptions, unknown_as_text: bool = False, skipped: list[Path] | None = None
) -> list[Source]:
    """Expands specs into one source per file or dataset, in a deterministic order. In a folder, files
    without a known suffix are left out (and appended to `skipped`) unless `unknown_as_text` reads them as
    plain text; hidden files and folders are always left out."""
    sources: list[Source] = []
    for spec in specs:
        parsed = parse_spec(spec)
        if parsed.kind in ("hub", "saved"):
            sources.append(parsed.dataset(options))
        elif parsed.kind == "folder":
            path = parsed.path
            visible = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            files = [p for p in visible if unknown_as_text or _has_known_suffix(p)]
            if skipped is not None:
                skipped.extend(p for p in visible if p not in set(files))
            if not files:
                raise DataError(
                    f"{path}: the folder holds no file with a known suffix ({', '.join(sorted(KNOWN_SUFFIXES))}); "
                    "pass --unknown-as-text to read its files as plain text"
                )
            sources.extend(file_source(p, options) for p in files)
        elif parsed.kind == "file":
            sources.append(file_source(parsed.path, options, spec))
        elif parsed.kind == "glob":
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
            files = [p for p in matches if p.is_file()]
            if not files:
                raise DataError(f"{spec}: the pattern matches no file")
            sources.extend(file_source(p, options) for p in files)
        else:
            raise DataError(f"{spec}: no such file or folder")
    return sources
