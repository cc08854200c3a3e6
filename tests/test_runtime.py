"""The allocator setting that lets batch-sized buffers be reused without page faults."""

from __future__ import annotations

import resource

import pytest
import torch

from metarl.agents.common.runtime import keep_freed_memory


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_freed_buffers_are_reused_without_page_faults() -> None:
    if not keep_freed_memory():
        pytest.skip("not glibc: the allocator is left as it is")
    size = 16 * 2**20  # 64 MiB of float32: far above glibc's default mmap threshold
    for _ in range(3):  # the heap grows to its working size
        torch.ones(size).sum()
    before = _minor_faults()
    for _ in range(5):
        torch.ones(size).sum()
    pages = 5 * size * 4 // 4096
    assert _minor_faults() - before < pages // 20  # fresh pages each time would fault ~all
