"""Trust-region maths: conjugate gradient, Hessian-vector products, backtracking line search.

Pure functions on flat parameter vectors, each tested against a closed form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector into tensors shaped like ``like``."""
    out, start = [], 0
    for t in like:
        out.append(vector[start : start + t.numel()].view_as(t))
        start += t.numel()
    return out


@dataclass
class ConjugateGradientResult:
    """Outcome of :func:`conjugate_gradient`."""

    solution: Tensor  # x
    product: Tensor  # A x, as b - r with the residual r kept by the iteration (no extra product)

    def quadratic_form(self) -> Tensor:
        """``xᵀ A x``."""
        return self.solution @ self.product


def conjugate_gradient(
    matrix_vector_product: Callable[[Tensor], Tensor],
    b: Tensor,
    num_iterations: int = 10,
    residual_tol: float = 1e-10,
) -> ConjugateGradientResult:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given ``v ↦ A v``.

    Standard CG (Hestenes & Stiefel 1952; Nocedal & Wright, Algorithm 5.2) from ``x₀ = 0``,
    stopping after ``num_iterations`` products or when ``‖r‖² < residual_tol``.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot_r = r @ r
    for _ in range(num_iterations):
        if r_dot_r < residual_tol:
            break
        ap = matrix_vector_product(p)
        alpha = r_dot_r / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        new_r_dot_r = r @ r
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return ConjugateGradientResult(x, b - r)


def hessian_vector_product(
    scalar: Tensor, params: Sequence[Tensor], damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """``v ↦ (∇²f + damping·I) v`` by double backpropagation (Pearlmutter 1994).

    The gradient graph of ``scalar`` is built once and reused by every product.
    """
    grads = torch.autograd.grad(scalar, params, create_graph=True)
    flat_grad = flatten(grads)

    def product(vector: Tensor) -> Tensor:
        hv = torch.autograd.grad(flat_grad @ vector, params, retain_graph=True)
        return flatten(hv) + damping * vector

    return product


@dataclass
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`."""

    accepted: bool
    step_fraction: float
    num_steps: int  # trial points evaluated
    loss: float
    kl: float


def backtracking_line_search(
    evaluate: Callable[[Tensor], tuple[float, float]],
    params: Tensor,
    full_step: Tensor,
    loss_before: float,
    max_kl: float,
    max_backtracks: int = 15,
    backtrack_ratio: float = 0.8,
) -> tuple[Tensor, LineSearchResult]:
    """Try ``params + ratio^i · full_step`` for i = 0, 1, ...; accept the first point whose loss
    is lower than ``loss_before`` and whose KL is at most ``max_kl`` (TRPO, Schulman et al. 2015).

    ``evaluate(candidate)`` returns ``(loss, kl)``.  Non-finite values are rejected.  If no trial
    is accepted the original ``params`` are returned unchanged.
    """
    loss, kl = loss_before, 0.0
    for i in range(max_backtracks):
        fraction = backtrack_ratio**i
        candidate = params + fraction * full_step
        loss, kl = evaluate(candidate)
        finite = torch.isfinite(torch.tensor([loss, kl])).all()
        if finite and loss < loss_before and kl <= max_kl:
            return candidate, LineSearchResult(True, fraction, i + 1, loss, kl)
    return params, LineSearchResult(False, 0.0, max_backtracks, loss, kl)
