"""What every source shares: the reader options, the counts of what was skipped, the `Source` interface, and
`FileSource`, which opens a file (decompressing it) and decodes its lines, leniently or strictly.

Lenient (pre-training): a line that is not UTF-8 is skipped and counted, so one damaged line in a large corpus
costs one document. Strict (`ReaderOptions.strict`, labelled data: fine-tuning tables, contrastive pairs): it
is an error naming the file, the line and the column, since a skipped example would silently change the task.
Positions are written `path:LINE:` or `path:LINE:COLUMN:`, as compilers write them; records that have no line
(a Parquet row, an element of a JSON array, a dataset row) are written `path[INDEX]`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from neobert.data.plain_text import cut_document
from neobert.data.shards import DataError
from neobert.text_files import TextEncodingError, check_utf8

COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
TEXT_UNITS = ("blank_line", "line", "file")


@dataclass(frozen=True)
class ReaderOptions:
    """How to find the text in a source. The first three settings decide the output, so they enter the plan
    (`plan_settings`); `strict` decides only whether a damaged line stops the reading."""

    text_field: str = "text"  # the field / column holding the text (JSON, CSV, Parquet, datasets)
    text_unit: str = "blank_line"  # plain text: documents separated by blank lines, one per line, or per file
    hf_split: str = "train"  # the split of a Hugging Face dataset
    strict: bool = False  # a line that is not UTF-8 is an error naming it, not skipped and counted

    def __post_init__(self) -> None:
        if self.text_unit not in TEXT_UNITS:
            raise ValueError(f"text_unit must be one of {TEXT_UNITS}, not {self.text_unit!r}")

    def plan_settings(self) -> dict[str, Any]:
        return {"text_field": self.text_field, "text_unit": self.text_unit, "hf_split": self.hf_split}


@dataclass
class ReadCounts:
    """What a source yielded and what it had to skip (reported in the summary and the manifest)."""

    documents: int = 0
    undecodable_lines: int = 0
    empty_documents: int = 0


class Source:
    """One stream of documents. Subclasses implement `documents()`; those that hold records (JSON, CSV,
    Parquet, datasets) also `records()`, every field of each with where it is, for readers that pick their
    own fields (fine-tuning, contrastive training)."""

    kind = "source"

    def __init__(self, spec: str, options: ReaderOptions):
        self.spec = spec
        self.options = options
        self.counts = ReadCounts()

    def check(self) -> None:
        """Cheap checks run on every source before any work starts (empty file, missing field)."""

    def documents(self) -> Iterator[str]:
        raise NotImplementedError

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        raise DataError(f"{self.spec}: a {self.kind} source holds no records (fields, columns)")

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
        self.check_file()

    def check_file(self) -> None:
        """The file is there, not empty and readable: said before any work, not in the middle of it."""
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such file")
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: the file is empty")
        try:
            open(self.path, "rb").close()
        except OSError as error:  # unreadable (permissions)
            raise DataError(f"{self.path}: cannot be read ({error.strerror or error})") from None

    def open_binary(self) -> BinaryIO:
        opener = COMPRESSIONS.get(self.compression, open) if self.compression else open
        return opener(self.path, "rb")

    def numbered_lines(self) -> Iterator[tuple[int, str]]:
        """Decoded lines (with their line endings), each with its number. A line that is not UTF-8 is skipped
        and counted, or with `options.strict` an error naming it."""
        with self.open_binary() as handle:
            for number, raw in enumerate(handle, start=1):
                if self.options.strict:
                    yield number, self.strict_text(raw, number)
                    continue
                try:
                    yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    self.counts.undecodable_lines += 1

    def lines(self) -> Iterator[str]:
        for _, line in self.numbered_lines():
            yield line

    def strict_text(self, data: bytes, first_line: int = 1) -> str:
        """`data` (starting at line `first_line`) as text, or a DataError naming the line and column of the
        first byte that is not UTF-8 (or the encoding the file seems to be in)."""
        try:
            return check_utf8(self.path, data, first_line)
        except TextEncodingError as error:
            raise DataError(str(error)) from None
