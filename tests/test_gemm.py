"""The curvature products' matmul against torch.bmm, on each kernel it dispatches to."""

from __future__ import annotations

import pytest
import torch

from metarl.agents.common.gemm import ONEDNN, matmul, outer, uses_onednn


def _operands(dtype: torch.dtype, num_tasks: int, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` ``[K, 50, 7]`` and ``b`` ``[K, 7, 9]`` in the layouts the products pass."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(num_tasks, 50, 7, generator=generator, dtype=dtype)
    b = torch.randn(num_tasks, 9, 8, generator=generator, dtype=dtype)
    if layout == "transposed":  # a transposed activation, a weight as stored: W^T
        return a.transpose(1, 2).contiguous().transpose(1, 2), b[..., :7].contiguous().mT
    if layout == "strided":  # a weight's part of an augmented [W, b]: neither it nor its T is
        return a, b[..., :7].mT  # contiguous
    return a, b[..., :7].mT.contiguous()


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize(
    "dtype,num_tasks", [(torch.float32, 1), (torch.float32, 3), (torch.float64, 1)]
)
def test_matmul_is_bmm(dtype: torch.dtype, num_tasks: int, layout: str) -> None:
    a, b = _operands(dtype, num_tasks, layout)
    assert uses_onednn(a, b) == (ONEDNN and dtype == torch.float32 and num_tasks == 1)
    torch.testing.assert_close(matmul(a, b), torch.bmm(a, b))


@pytest.mark.parametrize("width", [3, 20], ids=["narrow inputs", "wide inputs"])
def test_outer_is_delta_transposed_times_inputs(width: int) -> None:
    generator = torch.Generator().manual_seed(1)
    delta = torch.randn(1, 40, 10, generator=generator)
    inputs = torch.randn(1, 40, width, generator=generator)
    torch.testing.assert_close(outer(delta, inputs), delta.transpose(1, 2) @ inputs)


@pytest.mark.parametrize("empty", ["rows", "inner", "columns"])
def test_matmul_of_empty_matrices_is_bmm(empty: str) -> None:
    """A task with no live row gives empty matrices, which oneDNN refuses: they go to bmm."""
    rows, inner, columns = (0 if empty == name else 4 for name in ("rows", "inner", "columns"))
    a, b = torch.randn(1, rows, inner), torch.randn(1, inner, columns)
    assert not uses_onednn(a, b)
    torch.testing.assert_close(matmul(a, b), torch.bmm(a, b))
