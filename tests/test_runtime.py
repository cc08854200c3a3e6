"""The allocator setting that lets batch-sized buffers be reused without page faults, and the
sharing of independent work among threads with torch on one thread each."""

from __future__ import annotations

import resource
import threading
import time

import pytest
import torch

from metarl.agents.common.runtime import keep_freed_memory, run_shared, torch_threads


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_freed_buffers_are_reused_without_page_faults() -> None:
    if not keep_freed_memory():
        pytest.skip("not glibc: the allocator is left as it is")
    size = 16 * 2**20  # 64 MiB of float32: far above glibc's default mmap threshold
    for _ in range(3):  # the heap grows to its working size
        torch.ones(size).sum()
    pages = 5 * size * 4 // 4096
    faults = []
    for _ in range(3):  # the fewest of three: the kernel may fault a page for its own reasons
        before = _minor_faults()
        for _ in range(5):
            torch.ones(size).sum()
        faults.append(_minor_faults() - before)
    assert min(faults) < pages // 20  # fresh pages each time would fault ~all, every time


def test_run_shared_runs_each_share_on_its_own_thread_with_torch_on_one() -> None:
    before = torch.get_num_threads()
    results = run_shared(
        lambda share: (share, torch.get_num_threads(), threading.get_ident()), range(5), 2
    )
    assert [share for share, _, _ in results] == [[0, 2, 4], [1, 3]]
    assert [threads for _, threads, _ in results] == [1, 1]
    assert results[0][2] == threading.get_ident() != results[1][2]  # the caller runs the first
    assert torch.get_num_threads() == before


def test_run_shared_with_more_threads_than_items_runs_one_share_per_item() -> None:
    assert run_shared(sum, [3, 4], 8) == [3, 4]
    assert run_shared(sum, [3, 4], 1) == [7]


def test_run_shared_raises_once_every_share_has_ended() -> None:
    ended = []

    def work(share: list[int]) -> None:
        if share == [0]:
            raise ValueError("first share")
        time.sleep(0.05)
        ended.append(share)

    with pytest.raises(ValueError, match="first share"):
        run_shared(work, range(2), 2)
    assert ended == [[1]]


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    with torch_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
