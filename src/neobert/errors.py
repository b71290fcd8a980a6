"""Errors every command reports the same way: one line naming the file or option, and an exit code of its
kind. Kept free of heavy imports, so that the command line can catch them without loading torch."""

from __future__ import annotations

import errno
import os

EXIT_BAD_INPUT = 2
EXIT_CHECKPOINT = 3
EXIT_DISK_FULL = 4


# I/O faults a user can act on (free space, permissions); other OSErrors stay tracebacks (they are bugs).
# EFBIG (a file-size limit: `ulimit -f`, or the file system's largest file) is a full disk to the user.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
WRITE_FAULTS = (*DISK_FULL, errno.EACCES, errno.EPERM, errno.EROFS)


def io_failure(command: str, error: OSError, what: str | None = None) -> tuple[str, int]:
    """The one line and exit code for an I/O fault: 4 when the disk or quota is full, as `neobert pretrain`
    documents, else 2 (a path that cannot be read or written). `what` names the output being written, e.g.
    "--out runs/x"; the file the fault happened on is named when the error knows it."""
    full = error.errno in DISK_FULL
    reason = error.strerror or str(error)
    where = f"{error.filename}: " if error.filename else ""
    doing = f"cannot write {what}: " if what else ""
    return f"neobert {command}: {doing}{where}{reason}", EXIT_DISK_FULL if full else EXIT_BAD_INPUT


def os_error_within(error: BaseException, filename: str | None = None) -> OSError | None:
    """The OSError that a library written in Rust reports only in its message, e.g. safetensors'
    "I/O error: No space left on device (os error 28)", so that it gets the one line and exit code of an
    OSError; None when the message names none."""
    import re

    if isinstance(error, OSError):
        return error
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code), filename)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or from an incompatible run (exit 3 in every command)."""
