"""Files a user keeps: written under a temporary name and renamed, so they are complete or absent; checksums."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(temporary: str, path: Path) -> None:
    """Gives a finished temporary file the usual permissions (temporary files are private) and renames it."""
    os.chmod(temporary, 0o666 & ~_umask())
    os.replace(temporary, path)


def follow_umask(folder: Path) -> None:
    """Gives `folder`, and everything under it, the permissions the user's umask gives new files: writers
    that go through private temporary files (transformers' weight shards, for one) leave them at 0600."""
    mask = _umask()
    for path in (Path(folder), *Path(folder).rglob("*")):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def write_beside(path: Path, write: Callable[[IO[bytes]], T]) -> tuple[str, T]:
    """Runs `write` on a new private temporary file next to `path`, synced to disk; returns its name and what
    `write` returned. If anything fails the temporary is removed (a full disk keeps no half-written file
    that fills it further), and an OSError without a file name (a write through a handle) names `path`."""
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=f".{path.name}.", suffix=".tmp")  # noqa: SIM115 (closed below)
    try:
        with tmp:
            result = write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
    except BaseException as error:
        Path(tmp.name).unlink(missing_ok=True)
        if isinstance(error, OSError) and not error.filename:
            error.filename = str(path)
        raise
    return tmp.name, result


def write_bytes_atomically(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name, _ = write_beside(path, lambda handle: handle.write(data))
    publish(name, path)


def write_json_atomically(path: Path, payload: Any, indent: int = 1) -> None:
    text = json.dumps(payload, indent=indent, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    write_bytes_atomically(path, text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 22), b""):
            digest.update(piece)
    return digest.hexdigest()
