"""One writer per output folder: an OS lock on `<folder>/.neobert.lock`, held for the whole command.

The lock is `flock`, which the kernel drops when its holder exits however it ends (kill -9 included), so
there is never a stale lock to clear by hand, and anything temporary found in a folder whose lock this
process holds was left by a writer that is gone. Under torchrun rank 0 holds it for the group. The file
names the holder (pid, host, command) so that a refusal can say who has the folder; it stays behind,
empty of meaning, once the holder has ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

LOCK_FILE = ".neobert.lock"


class FolderInUse(ValueError):
    """Another live process writes to this folder. A user error: exit 2 in every command, as bad input."""


def _holder_description(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another process"
    return text or "another process"


def _name_holder(descriptor: int) -> None:
    command = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()} ({command})\n".encode())


def check_output_folder(folder: str | os.PathLike, option: str = "the output folder") -> None:
    """ValueError (exit 2) when `folder`, or the nearest part of its path that exists, is not a folder: for
    commands to call before their heavy work, since the lock is taken only when writing starts."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {folder} is a file, not a folder")
    blocking = next((parent for parent in folder.absolute().parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise ValueError(f"{option} {folder}: {blocking} is a file, not a folder")


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike, option: str = "the output folder") -> Iterator[Path]:
    """Create `folder` if needed and hold its lock until the block ends; FolderInUse if another process
    holds it. `option` is how the user named the folder (e.g. "system.output_dir", "--out")."""
    folder = Path(folder)
    check_output_folder(folder, option)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    descriptor = _lock_file(path, f"{option} {folder}")
    try:
        _name_holder(descriptor)
        yield folder
    except BaseException:
        if created and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
            # Refused before writing anything: leave no empty folder behind (still holding the lock).
            path.unlink()
            folder.rmdir()
        raise
    finally:
        os.close(descriptor)  # releases the lock; the file stays otherwise (removing it would race a new holder)


# Lock files beside an output that this process holds: `train_contrastive` holds its --out for the whole run,
# and the export it ends with takes the same lock again.
_HELD_BESIDE: set[Path] = set()


def _lock_file(path: Path, what: str) -> int:
    """A descriptor of `path` holding its lock; FolderInUse if another process holds it. A file its holder
    removed while we opened it is opened again (the holder removes it while still holding the lock)."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise FolderInUse(
                f"{what} is in use by {_holder_description(path)}; wait for it to end, stop it, or choose another "
                "folder"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)


@contextlib.contextmanager
def hold_beside(target: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """`hold_folder` for an output written elsewhere and renamed into place (an exported model folder), or
    written into a folder that is not the command's own (`export-onnx` into a model folder): the lock file is
    `.NAME.neobert.lock` beside `target`, removed when the holder ends (a kill -9 leaves it, unheld and
    harmless). Taken again by the process that holds it, it is held already."""
    target = Path(target)
    check_output_folder(target, option)
    path = (target.parent / f".{target.name}{LOCK_FILE}").absolute()
    if path in _HELD_BESIDE or int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 holds it
        yield target
        return
    made = [parent for parent in path.parents if not parent.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = _lock_file(path, f"{option} {target}")
        _HELD_BESIDE.add(path)
        try:
            _name_holder(descriptor)
            yield target
        finally:
            _HELD_BESIDE.discard(path)
            path.unlink(missing_ok=True)  # still holding it: a newcomer that opened it finds another file, or none
            os.close(descriptor)
    finally:
        for parent in made:  # folders made for the lock alone (the command failed before writing): removed
            with contextlib.suppress(OSError):
                parent.rmdir()


def holding(lock: Callable, target_of: Callable[[dict[str, Any]], Any], option: str = "--out") -> Callable:
    """A decorator: the function runs holding `lock(target_of(arguments), option)`, `lock` being `hold_folder`
    or `hold_beside` and `arguments` the function's arguments by name, defaults included."""

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def holding_its_output(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with lock(target_of(bound.arguments), option):
                return function(*args, **kwargs)

        return holding_its_output

    return decorate
