"""Shard checksums checked once per corpus, not at every start of every rank.

A corpus folder keeps `verified.json`: for each shard file whose sha256 was found equal to the manifest's,
the file's size, mtime and ctime at that moment. A later check of a file whose stat still matches its
record trusts it without reading it; any write to the file (in place, or a replacement) moves its mtime or
ctime, so a file changed since is hashed again and refused if it no longer matches. The record is written
under a temporary name and renamed; when the folder is read-only, nothing is recorded and files are hashed
as before. Ranks that record at the same instant may still drop each other's entries: those files are hashed again
at a later start, never trusted wrongly.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from neobert.data.shards import check_checksum
from neobert.files import publish

RECORD = "verified.json"


def file_stamp(path: Path) -> list[int]:
    status = path.stat()
    return [status.st_size, status.st_mtime_ns, status.st_ctime_ns]


class VerifiedRecord:
    """The corpus's record of verified files, read once and added to as files are checked."""

    def __init__(self, root: Path):
        self.root = root
        self.path = root / RECORD
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}
        self.unsaved = False

    def check(self, relative: str, expected_sha256: str, save: bool = True) -> None:
        """DataError (from `check_checksum`) unless the file matches `expected_sha256`; hashes it only when
        the record does not vouch for it as it is now. With `save=False` the caller calls `save()` after a
        series of checks."""
        path = self.root / relative
        entry = self.entries.get(relative)
        if (
            path.is_file()
            and entry is not None
            and entry.get("sha256") == expected_sha256
            and entry.get("stamp") == file_stamp(path)
        ):
            return
        check_checksum(path, expected_sha256)
        self.entries[relative] = {"sha256": expected_sha256, "stamp": file_stamp(path)}
        self.unsaved = True
        if save:
            self.save()

    def save(self) -> None:
        if not self.unsaved:
            return
        self.unsaved = False
        try:  # keep what other ranks recorded since this one read the file
            entries = {**json.loads(self.path.read_text(encoding="utf-8"))["files"], **self.entries}
        except (OSError, ValueError, KeyError, TypeError):
            entries = self.entries
        try:
            with tempfile.NamedTemporaryFile(
                "w", dir=self.root, delete=False, prefix=f".{RECORD}.", suffix=".tmp", encoding="utf-8"
            ) as tmp:
                json.dump({"files": entries}, tmp, sort_keys=True)
            publish(tmp.name, self.path)  # the umask's permissions: the corpus may be shared
        except OSError:
            return  # a read-only corpus: the files are hashed again at the next start
