"""Batched matrix products for the curvature products, on the fastest kernel at hand.

On the CPU in float32, one pair of matrices goes to oneDNN's matmul
(``mkldnn._linear_pointwise``, the kernel ``torch.compile`` uses for linear layers).  On this
project's 2-core AMD EPYC machine it ran the products' shapes 1.2 to 2.3 times as fast as
``torch.bmm`` (MKL, whose fast paths are Intel's), one thread; ``benchmarks/bench_curvature.py``
times both.  Everything else (batches of several matrices, float64, CUDA) goes to ``torch.bmm``.
Both are exact float arithmetic: they differ in the order of summation only.
"""

from __future__ import annotations

import torch
from torch import Tensor

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def uses_onednn(a: Tensor, b: Tensor) -> bool:
    """Whether :func:`matmul` sends the product ``a b`` to oneDNN (which refuses empty
    matrices: a task with no live row)."""
    cpu_float = a.dtype == torch.float32 and a.device.type == "cpu"
    return ONEDNN and a.shape[0] == 1 and cpu_float and a.numel() > 0 and b.numel() > 0


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a b`` for batches of matrices ``[K, n, m]`` and ``[K, m, p]``.

    For oneDNN, ``b`` is made contiguous (a small copy) unless it or its transpose is: oneDNN
    ran a hundred times slower on other strides.  (Its fused sums and elementwise products were
    no faster than a separate in-place pass, and slower with ``m`` a few action dimensions.)
    """
    if not uses_onednn(a, b):
        return torch.bmm(a, b)
    weight = b[0].T if b[0].is_contiguous() or b[0].T.is_contiguous() else b[0].T.contiguous()
    return torch.ops.mkldnn._linear_pointwise(a[0], weight, None, "none", [], "").unsqueeze(0)


def outer(delta: Tensor, inputs: Tensor) -> Tensor:
    """``δᵀ a`` ``[K, out, in]`` for rows ``δ`` ``[K, n, out]`` and ``a`` ``[K, n, in]``, as
    ``(aᵀ δ)ᵀ`` where the inputs are the narrower side (the first layer's few observations:
    1.5 times as fast)."""
    if inputs.shape[2] < delta.shape[2]:
        return matmul(inputs.transpose(1, 2), delta).transpose(1, 2)
    return matmul(delta.transpose(1, 2), inputs)
