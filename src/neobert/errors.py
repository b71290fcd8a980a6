"""Errors every command reports the same way: one line naming the file or option, and an exit code of its
kind. Kept free of heavy imports, so that the command line can catch them without loading torch."""

from __future__ import annotations

import errno
import os

EXIT_BAD_INPUT = 2
EXIT_CHECKPOINT = 3
EXIT_DISK_FULL = 4
EXIT_DIVERGED = 5  # `neobert pretrain`: the loss became NaN or infinite
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


# I/O faults a user can act on (free space, permissions); other OSErrors stay tracebacks (they are bugs).
# EFBIG (a file-size limit: `ulimit -f`, or the file system's largest file) is a full disk to the user.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
WRITE_FAULTS = (*DISK_FULL, errno.EACCES, errno.EPERM, errno.EROFS)


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


class UserError(Exception):
    """Something the user can act on (an option, an input, a folder, the disk): `neobert` reports it as one
    line, "neobert <command>: <message>", and exits with `exit_code`, without a traceback. The command line
    maps every subclass in one place (`neobert.cli.report`); code that is not run from it may raise them too."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(UserError, ValueError):
    """A bad option value or combination of options (exit 2); a ValueError to code that catches those."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or from an incompatible run (exit 3 in every command)."""

    exit_code = EXIT_CHECKPOINT


class Interrupted(UserError):
    """Stopped by Ctrl-C or a signal with what was finished kept; the same command resumes (exit 130)."""

    exit_code = EXIT_INTERRUPTED


def write_failure(error: OSError, what: str | None = None) -> UserError:
    """An I/O fault as the user error it is: exit 4 when the disk or quota is full, as `neobert pretrain`
    documents, else 2 (a path that cannot be read or written). `what` names the output being written, e.g.
    "--out runs/x"; the file the fault happened on is named when the error knows it."""
    reason = error.strerror or str(error)
    where = f"{error.filename}: " if error.filename else ""
    doing = f"cannot write {what}: " if what else ""
    return UserError(f"{doing}{where}{reason}", EXIT_DISK_FULL if error.errno in DISK_FULL else EXIT_BAD_INPUT)
