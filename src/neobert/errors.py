"""Errors every command reports the same way: one line naming the file or option, and an exit code of its
kind. Kept free of heavy imports, so that the command line can catch them without loading torch."""

from __future__ import annotations

EXIT_CHECKPOINT = 3


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or from an incompatible run (exit 3 in every command)."""
