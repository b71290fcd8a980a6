"""Process-level settings that make CPU runs faster; applied by the command line, opt-in for libraries."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def tune_cpu_allocator(threshold_bytes: int = 1 << 30) -> bool:
    """Keep large freed blocks in glibc's heap instead of returning them to the kernel.

    By default glibc serves every allocation above 32 MB with a fresh mmap, so each large activation
    is page-faulted and zeroed again on every forward pass; on two cores that costs 5-10% of a
    transformer's matrix-product time. Returns False (and changes nothing) where glibc is absent.
    """
    if not 0 < threshold_bytes < 2**31:
        raise ValueError("threshold_bytes must fit in a C int (mallopt's argument)")
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes) and libc.mallopt(_M_TRIM_THRESHOLD, threshold_bytes)
        )
    except (OSError, AttributeError):
        return False


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
