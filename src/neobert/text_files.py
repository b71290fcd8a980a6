"""Reading a user's text file as UTF-8, or saying why not in one line naming the file and the place.

Without this, a UTF-16 file (as some Windows editors save one) decodes to nothing useful: readers found
"no text", or a codec traceback without a file name. A UTF-8 byte-order mark is accepted and dropped.
"""

from __future__ import annotations

import codecs
import io
import os
from pathlib import Path

# Longest first: UTF-32 LE's mark begins with UTF-16 LE's.
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


class TextEncodingError(ValueError):
    """A text file that is not UTF-8: a user error (exit 2)."""


def check_utf8(path: str | os.PathLike, data: bytes, first_line: int = 1) -> str:
    """`data` (the bytes of `path` from the start of line `first_line`: the whole file, or one line of it) as
    text, or TextEncodingError naming the file, the encoding it seems to be in, or the line and column of the
    first byte that is not UTF-8 (`path:LINE:COLUMN:`)."""
    at_start = first_line == 1
    for mark, name in BYTE_ORDER_MARKS if at_start else ():
        if data.startswith(mark):
            raise TextEncodingError(f"{path}: the file is {name} (it starts with a byte-order mark); save it as UTF-8")
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + first_line
        raise TextEncodingError(
            f"{path}:{line}: the line holds NUL bytes, as UTF-16 text without a byte-order mark does; save it as UTF-8"
        )
    try:
        return data.decode("utf-8-sig" if at_start else "utf-8")
    except UnicodeDecodeError as error:
        start = error.start + (3 if at_start and data.startswith(codecs.BOM_UTF8) else 0)
        line = data.count(b"\n", 0, start) + first_line
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise TextEncodingError(
            f"{path}:{line}:{column}: byte 0x{data[start]:02x} is not UTF-8; save the file as UTF-8"
        ) from None


def read_utf8(path: str | os.PathLike) -> str:
    """The whole text of `path`; TextEncodingError (see `check_utf8`), FileNotFoundError when it is absent."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    return check_utf8(path, path.read_bytes())


def utf8_lines(path: str | os.PathLike) -> list[str]:
    """The lines of `path` without their ends, split as `open` splits them (at line feeds, carriage
    returns or both)."""
    return [line.rstrip("\n") for line in io.StringIO(read_utf8(path), newline=None)]
