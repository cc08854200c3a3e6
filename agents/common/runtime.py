"""Process-wide settings that make the learning step run at the speed of its matmuls.

glibc serves large allocations (the batch-sized activations of every forward, tangent and reverse
pass) with fresh ``mmap`` pages and returns them to the kernel when freed, so every pass pays a
page fault per 4 KiB: about half the CPU time of a meta-step.  :func:`keep_freed_memory` makes
glibc keep freed memory for reuse instead, as the caching allocators of jemalloc or tcmalloc do.
The process's peak memory is unchanged; it is just not given back before exit.

Small operations on several torch threads meet at a barrier after each one, and a thread that
the OS has paused (another process on its core) stalls them all.  :func:`run_shared` runs
independent shares of a computation on threads of their own instead, torch on one thread in
each (:func:`torch_threads`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")

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


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with torch on ``num_threads`` intra-op threads (``None``: unchanged)."""
    previous = torch.get_num_threads()
    if num_threads is not None and num_threads != previous:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@functools.cache
def _helpers(count: int) -> ThreadPoolExecutor:
    """Threads that run shares beside the calling thread (:func:`run_shared`)."""
    return ThreadPoolExecutor(count, "metarl-share")


def run_shared(
    function: Callable[[list[Item]], Result], items: Sequence[Item], num_threads: int
) -> list[Result]:
    """``function`` of each of ``num_threads`` shares of ``items`` (``items[i::num_threads]``),
    each share on its own thread (the calling thread runs the first), all with torch on one
    thread until every share has ended; the results in the order of the shares."""
    count = max(1, min(num_threads, len(items)))
    shares = [list(items[i::count]) for i in range(count)]
    with torch_threads(1):  # restored once no share is running
        others = [_helpers(count - 1).submit(_on_one_thread, function, s) for s in shares[1:]]
        try:
            first = function(shares[0])
        finally:  # no share may still be running when this returns or raises
            wait(others)
    return [first, *(job.result() for job in others)]


def _on_one_thread(function: Callable[[list[Item]], Result], share: list[Item]) -> Result:
    """``function(share)`` with torch on one thread (MKL's setting is process-wide: set it each
    time, as the calling thread may have restored its own since)."""
    torch.set_num_threads(1)
    return function(share)
