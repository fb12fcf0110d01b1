"""Keep the memory a training step frees inside the process, for the next step to reuse.

glibc hands large freed blocks back to the kernel (munmap, or trimming the top of
the heap), so every training step asks for them again and the kernel zero-fills
them page by page on first touch (26,000 page faults per write-up-size step;
docs/results.md).  With mmap off for malloc and
trimming raised to 1 GiB, the second step onwards faults nothing.  The cost is
that the process keeps its peak heap until it exits, which a trainer does anyway.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve every block from the heap and not to shrink it; False where that is
    not possible (another C library or operating system), which changes speed only."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
