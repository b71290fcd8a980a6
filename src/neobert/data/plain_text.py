"""Plain text read in bounded memory: lines read a bounded part at a time, documents cut into pieces as
their text arrives, so a one-line file of any size takes no more memory than a piece.

`neobert.data.sources.TextFileSource` reads `.txt`-like files through these functions.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

LINE_PART_BYTES = 1 << 20  # plain text is read at most this much of a line at a time, however long the line


class UndecodableCount(Protocol):
    """Where skipped lines are counted (`neobert.data.sources.ReadCounts`)."""

    undecodable_lines: int


class DocumentCutter:
    """Cuts one document into pieces of at most `limit` characters, at whitespace where it can, as its text
    arrives: the pieces cutting the whole text would give. A cut depends only on the `limit` characters before
    it, so a piece can go as soon as more than `limit` characters of the finished document follow its start;
    `strip_end` are the characters the finished document loses at its end (they may not count)."""

    def __init__(self, limit: int, strip_end: str = ""):
        self.limit, self.strip_end = limit, strip_end
        self.parts: list[str] = []
        self.size = 0
        self.pieces = 0

    def _piece(self, text: str) -> tuple[str, int]:
        self.pieces += 1
        return text, self.pieces - 1

    def add(self, text: str) -> Iterator[tuple[str, int]]:
        """The pieces that `text` completes, each with its number in the document (0 for the first)."""
        self.parts.append(text)
        self.size += len(text)
        if self.size <= self.limit:
            return
        text = "".join(self.parts)
        while len(text) > self.limit and len(text.rstrip(self.strip_end)) > self.limit:
            cut = text.rfind(" ", self.limit // 2, self.limit)
            cut = self.limit if cut <= 0 else cut
            yield self._piece(text[:cut])
            text = text[cut:]
        self.parts, self.size = [text], len(text)

    def finish(self) -> Iterator[tuple[str, int]]:
        yield self._piece("".join(self.parts).rstrip(self.strip_end))


def cut_document(text: str, limit: int) -> Iterator[tuple[str, int]]:
    cutter = DocumentCutter(limit)
    yield from cutter.add(text)
    yield from cutter.finish()


def line_parts(handle: BinaryIO, counts: UndecodableCount) -> Iterator[tuple[str, bool]]:
    """The decoded lines (with their line endings) in parts of at most `LINE_PART_BYTES` bytes, each with
    whether it ends its line (a 200 MB one-line file took 3.2 GB read whole). A line that is not UTF-8 is
    skipped and counted; of a line longer than one part, the parts from the undecodable one on are skipped
    (those before it were read already)."""
    encoding = "utf-8-sig"  # the first line may start with a byte-order mark
    decoder = None  # within a line longer than one part
    while raw := handle.readline(LINE_PART_BYTES):
        ends = raw.endswith(b"\n") or len(raw) < LINE_PART_BYTES  # shorter: the line or the file ended
        if decoder is None and ends:
            try:
                yield raw.decode(encoding), True
            except UnicodeDecodeError:
                counts.undecodable_lines += 1
            encoding = "utf-8"
            continue
        if decoder is None:
            decoder, encoding = codecs.getincrementaldecoder(encoding)(), "utf-8"
            skipping = False
        if not skipping:
            try:
                yield decoder.decode(raw, final=ends), ends
            except UnicodeDecodeError:
                counts.undecodable_lines += 1
                skipping = True
        if skipping and ends:
            yield "", True
        if ends:
            decoder = None
    if decoder is not None:  # a long last line of whole parts, without a line end
        try:
            yield ("" if skipping else decoder.decode(b"", final=True)), True
        except UnicodeDecodeError:
            counts.undecodable_lines += 1
            yield "", True


def text_pieces(parts: Iterable[tuple[str, bool]], unit: str, limit: int) -> Iterator[tuple[str, int]]:
    """The documents of plain text given as `line_parts`, cut into pieces of at most `limit` characters, each
    with its number in its document. `unit`: documents separated by blank lines ("blank_line"), one per line
    ("line") or the whole text ("file"). Nothing is yielded when the text holds only whitespace."""
    strip = "" if unit == "file" else "\r\n"
    cutter: DocumentCutter | None = None  # the document being read
    pending: list[str] = []  # parts not yet known to hold more than whitespace (file: the text so far)
    line_has_text = False
    for text, ends in parts:
        if cutter is not None and (unit == "file" or line_has_text):
            yield from cutter.add(text)
        else:
            pending.append(text)
            if text.strip():
                line_has_text = True
                cutter = cutter or DocumentCutter(limit, strip)
                yield from cutter.add("".join(pending))
                pending.clear()
        if ends:
            # A line ends its document (line), or a blank line ends the paragraph (blank_line).
            if unit != "file" and cutter is not None and (unit == "line" or not line_has_text):
                yield from cutter.finish()
                cutter = None
            if unit != "file":
                pending.clear()
            line_has_text = False
    if cutter is not None:
        yield from cutter.finish()
