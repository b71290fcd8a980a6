"""Files of records: JSON Lines, JSON, CSV/TSV and Parquet. Each yields the text of one field as documents
(pre-training) and its records whole (`records`: fine-tuning tables, contrastive pairs), each with where it
is: `path:LINE` for a line of text, `path[INDEX]` for a Parquet row or an element of a JSON array.

A record that cannot be read (not valid JSON, a CSV row with more cells than its header) is an error naming
the file and the line. A CSV row with fewer cells than its header reads its missing cells as None, so the
reader that needs the cell names the row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from neobert.data.shards import DataError
from neobert.data.source_base import FileSource

csv.field_size_limit(1 << 30)  # news articles and books exceed csv's default 128 KiB field limit


class JsonLinesSource(FileSource):
    kind = "jsonl"

    def _records(self) -> Iterator[tuple[str, Any]]:
        found = False
        for number, line in self.numbered_lines():
            if not line.strip():
                continue
            found = True
            try:
                yield f"{self.path}:{number}", json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                raise DataError(f"{self.path}:{number}:{error.colno}: not valid JSON ({error.msg})") from error
        if not found and self.options.strict:
            raise DataError(f"{self.path}: the file is empty (expected one JSON object a line)")

    def check(self) -> None:
        super().check()
        for where, record in self._records():
            self._field(record, where)
            return

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        self.check_file()
        for where, record in self._records():
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected an object (one record), got {type(record).__name__}")
            yield where, record

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
        return self._with_text(self._field(record, where) for where, record in self._records())


class JsonSource(JsonLinesSource):
    """`.json`: JSON Lines (what most datasets ship under that suffix), or one array of records. An array is
    parsed whole, so prefer JSON Lines for large files."""

    kind = "json"

    def _is_array(self) -> bool:
        with self.open_binary() as handle:
            head = handle.read(4096).decode("utf-8-sig", errors="replace").lstrip()
        return head.startswith("[")

    def _records(self) -> Iterator[tuple[str, Any]]:
        if not self._is_array():
            yield from super()._records()
            return
        with self.open_binary() as handle:
            data = handle.read()
        try:
            text = self.strict_text(data) if self.options.strict else data.decode("utf-8-sig")
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{self.path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from error
        except UnicodeDecodeError as error:
            raise DataError(f"{self.path}: not valid JSON ({error})") from error
        for index, record in enumerate(records):
            yield f"{self.path}[{index}]", record


class CsvSource(FileSource):
    kind = "csv"

    def _rows(self) -> tuple[list[str], Any]:
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

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The rows after the header as {column: cell}; blank lines are left out, as blank lines before the
        header are."""
        self.check_file()
        header, rows = self._rows()
        while not header:
            header = next(rows, None)
            if header is None:
                raise DataError(f"{self.path}: the file is empty (expected a header row, then one record a line)")
        for row in rows:
            if not row:
                continue
            where = f"{self.path}:{rows.line_num}"
            if len(row) > len(header):
                raise DataError(f"{where}: {len(row)} cells, but the header names {len(header)} columns")
            yield where, dict(zip(header, row + [None] * (len(header) - len(row)), strict=True))

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

    def records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        self.check_file()
        batches = self._file().iter_batches(batch_size=1024)
        index = 0
        while True:
            try:
                batch = next(batches, None)
            except Exception as error:  # a damaged row group, found when it is read
                raise DataError(f"{self.path}: not a readable Parquet file ({error})") from error
            if batch is None:
                return
            for record in batch.to_pylist():
                yield f"{self.path}[{index}]", record
                index += 1

    def documents(self) -> Iterator[str]:
        batches = self._file().iter_batches(batch_size=1024, columns=[self.options.text_field])
        texts = (self._text(text, str(self.path)) for batch in batches for text in batch.column(0).to_pylist())
        return self._with_text(texts)
