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

`parse_spec` is the one reading of a spec: fine-tuning (`neobert.finetune.data.read_rows`) and contrastive
training (`neobert.embed_train.data.read_pairs`) take it, and a dataset's whole records (`DatasetSource.records`),
from here and pick their own columns.

Readers yield one document (a string) at a time, so memory stays bounded whatever the corpus size; for
`prepare`, `Source.pieces` yields documents already cut to a length, and plain text is read a bounded part of
a line at a time (`neobert.data.plain_text`), so a one-line file of any size takes no more memory than a
piece (a JSON, CSV or Parquet record is still read whole).
Lines that are not valid UTF-8 are skipped and counted; an empty file or a missing text field is an error
that names the file.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import json
import lzma
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from neobert.data.plain_text import cut_document, line_parts, text_pieces
from neobert.data.shards import DataError

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
KNOWN_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES | {".json", ".csv", ".tsv", ".parquet"}
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
TEXT_UNITS = ("blank_line", "line", "file")

csv.field_size_limit(1 << 30)  # news articles and books exceed csv's default 128 KiB field limit


@dataclass(frozen=True)
class ReaderOptions:
    """How to find the text in a source. These settings decide the output, so they enter the plan."""

    text_field: str = "text"  # the field / column holding the text (JSON, CSV, Parquet, datasets)
    text_unit: str = "blank_line"  # plain text: documents separated by blank lines, one per line, or per file
    hf_split: str = "train"  # the split of a Hugging Face dataset

    def __post_init__(self) -> None:
        if self.text_unit not in TEXT_UNITS:
            raise ValueError(f"text_unit must be one of {TEXT_UNITS}, not {self.text_unit!r}")


@dataclass
class ReadCounts:
    """What a source yielded and what it had to skip (reported in the summary and the manifest)."""

    documents: int = 0
    undecodable_lines: int = 0
    empty_documents: int = 0


class Source:
    """One stream of documents. Subclasses implement `documents()`."""

    kind = "source"

    def __init__(self, spec: str, options: ReaderOptions):
        self.spec = spec
        self.options = options
        self.counts = ReadCounts()

    def check(self) -> None:
        """Cheap checks run on every source before any work starts (empty file, missing field)."""

    def documents(self) -> Iterator[str]:
        raise NotImplementedError

    def pieces(self, limit: int) -> Iterator[tuple[str, int]]:
        """The documents cut into pieces of at most `limit` characters (see `DocumentCutter`), each with its
        number in its document."""
        for text in self.documents():
            yield from cut_document(text, limit)

    def describe(self) -> dict[str, Any]:
        """What the manifest records: deterministic, no timestamps."""
        return {"spec": self.spec, "kind": self.kind}

    def identity(self) -> dict[str, Any]:
        """What decides whether a resumed run reads the same data (adds sizes and modification times)."""
        return self.describe()

    def _no_text(self) -> DataError:
        return DataError(f"{self.spec}: no text found (every document is empty)")

    def _with_text(self, texts: Iterable[str | None]) -> Iterator[str]:
        """The texts that have content; empty ones are counted, and a source with none at all is an error."""
        found = False
        for text in texts:
            if text and text.strip():
                found = True
                yield text
            else:
                self.counts.empty_documents += 1
        if not found:
            raise self._no_text()

    def _text(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise DataError(f"{where}: field {self.options.text_field!r} holds {type(value).__name__}, not text")
        return value


class FileSource(Source):
    """A file on disk, possibly compressed."""

    def __init__(self, path: Path, options: ReaderOptions, spec: str | None = None):
        super().__init__(spec or str(path), options)
        self.path = path
        suffixes = [s.lower() for s in path.suffixes]
        self.compression = suffixes[-1] if suffixes and suffixes[-1] in COMPRESSIONS else None
        self.format_suffix = (
            suffixes[-2]
            if self.compression and len(suffixes) > 1
            else suffixes[-1]
            if suffixes and not self.compression
            else ""
        )

    def _no_text(self) -> DataError:
        return DataError(f"{self.path}: no text found (every document is empty)")

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "path": str(self.path),
            "bytes": self.path.stat().st_size,
        }

    def identity(self) -> dict[str, Any]:
        return {**self.describe(), "mtime_ns": self.path.stat().st_mtime_ns}

    def check(self) -> None:
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: the file is empty")
        try:
            open(self.path, "rb").close()
        except OSError as error:  # unreadable (permissions): said before any work, not in the middle of it
            raise DataError(f"{self.path}: cannot be read ({error.strerror or error})") from None

    def open_binary(self) -> BinaryIO:
        opener = COMPRESSIONS.get(self.compression, open) if self.compression else open
        return opener(self.path, "rb")

    def lines(self) -> Iterator[str]:
        """Decoded lines (with their line endings); undecodable ones are skipped and counted."""
        with self.open_binary() as handle:
            first = True
            for raw in handle:
                try:
                    line = raw.decode("utf-8-sig" if first else "utf-8")
                except UnicodeDecodeError:
                    self.counts.undecodable_lines += 1
                    continue
                finally:
                    first = False
                yield line


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


class JsonLinesSource(FileSource):
    kind = "jsonl"

    def _records(self) -> Iterator[tuple[int, Any]]:
        for number, line in enumerate(self.lines(), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{self.path}, line {number}: not valid JSON ({error.msg})") from error

    def check(self) -> None:
        super().check()
        for number, record in self._records():
            self._field(record, f"{self.path}, line {number}")
            return

    def _field(self, record: Any, where: str) -> str | None:
        field = self.options.text_field
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object with a {field!r} field, got {type(record).__name__}")
        if field not in record:
            raise DataError(
                f"{where}: no field {field!r} (fields: {', '.join(sorted(record)) or 'none'}); "
                "choose the text field with --text-field"
            )
        return self._text(record[field], where)

    def documents(self) -> Iterator[str]:
        return self._with_text(self._field(record, f"{self.path}, line {number}") for number, record in self._records())


class JsonSource(JsonLinesSource):
    """`.json`: JSON Lines (what most datasets ship under that suffix), or one array of records. An array is
    parsed whole, so prefer JSON Lines for large files."""

    kind = "json"

    def _is_array(self) -> bool:
        with self.open_binary() as handle:
            head = handle.read(4096).decode("utf-8-sig", errors="replace").lstrip()
        return head.startswith("[")

    def _records(self) -> Iterator[tuple[int, Any]]:
        if not self._is_array():
            yield from super()._records()
            return
        with self.open_binary() as handle:
            try:
                records = json.loads(handle.read().decode("utf-8-sig"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise DataError(f"{self.path}: not valid JSON ({error})") from error
        yield from enumerate(records, start=1)


class CsvSource(FileSource):
    kind = "csv"

    def _rows(self) -> tuple[list[str], Iterator[list[str]]]:
        delimiter = "\t" if self.format_suffix == ".tsv" else ","
        reader = csv.reader(self.lines(), delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{self.path}: the file is empty")
        return header, reader

    def _column(self, header: list[str]) -> int:
        field = self.options.text_field
        if field not in header:
            raise DataError(
                f"{self.path}: no column {field!r} (columns: {', '.join(header)}); choose it with --text-field"
            )
        return header.index(field)

    def check(self) -> None:
        super().check()
        header, _ = self._rows()
        self._column(header)

    def documents(self) -> Iterator[str]:
        header, rows = self._rows()
        column = self._column(header)
        yield from self._with_text(row[column] if column < len(row) else "" for row in rows)


class ParquetSource(FileSource):
    kind = "parquet"

    def _file(self):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as error:  # pyarrow raises several types for damaged files
            raise DataError(f"{self.path}: not a readable Parquet file ({error})") from error

    def check(self) -> None:
        super().check()
        names = self._file().schema_arrow.names
        if self.options.text_field not in names:
            raise DataError(
                f"{self.path}: no column {self.options.text_field!r} (columns: {', '.join(names)}); "
                "choose it with --text-field"
            )

    def documents(self) -> Iterator[str]:
        batches = self._file().iter_batches(batch_size=1024, columns=[self.options.text_field])
        texts = (self._text(text, str(self.path)) for batch in batches for text in batch.column(0).to_pylist())
        return self._with_text(texts)


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

    def records(self) -> Iterator[dict[str, Any]]:
        """Whole records, every column: for readers that pick their own columns (fine-tuning, contrastive)."""
        yield from self._split()

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


def _file_source(path: Path, options: ReaderOptions, spec: str | None = None) -> FileSource:
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
            sources.extend(_file_source(p, options) for p in files)
        elif parsed.kind == "file":
            sources.append(_file_source(parsed.path, options, spec))
        elif parsed.kind == "glob":
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
            files = [p for p in matches if p.is_file()]
            if not files:
                raise DataError(f"{spec}: the pattern matches no file")
            sources.extend(_file_source(p, options) for p in files)
        else:
            raise DataError(f"{spec}: no such file or folder")
    return sources
