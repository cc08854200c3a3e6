"""Process-wide settings that make the learning step run at the speed of its matmuls.

glibc serves large allocations (the batch-sized activations of every forward, tangent and reverse
pass) with fresh ``mmap`` pages and returns them to the kernel when freed, so every pass pays a
page fault per 4 KiB: about half the CPU time of a meta-step.  :func:`keep_freed_memory` makes
glibc keep freed memory for reuse instead, as the caching allocators of jemalloc or tcmalloc do.
The process's peak memory is unchanged; it is just not given back before exit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it (glibc only; elsewhere a no-op).
    Returns whether the allocator was configured."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
