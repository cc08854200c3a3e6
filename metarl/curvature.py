"""Exact Hessian-vector products of the meta-KL through the inner update, without double
backpropagation through the whole meta-objective.

The trust-region constraint is ``KL(θ) = mean_k KL(π_{θ'_k,old} ‖ π_{θ'_k(θ)})``.  At the current
meta-parameters its gradient is zero, so its Hessian there is exactly

    ∇²KL = mean_k  J_kᵀ F_k J_k,        J_k = ∂θ'_k/∂θ = Π_i (I - α H_k^{(i)})

with ``F_k`` the Fisher matrix of the adapted Gaussian policy on task k's post-update states and
``H_k^{(i)}`` the Hessian of task k's inner loss at inner step i (first-order MAML: ``J_k = I``).

Each product is built from pieces whose graphs are made once per meta-step and reused by every
conjugate-gradient iteration:

* ``H u`` — a vector-Jacobian product of the inner gradient (itself built with ``create_graph``),
  for all tasks at once since the per-task losses are independent (block-diagonal Hessian);
* ``F u = J_μᵀ diag(w/σ²) J_μ u + 2 w log σ-part`` — the Gaussian Fisher in closed form, with
  ``J_μ u`` by the double-vjp trick and ``J_μᵀ z`` by one reverse pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Vectors = list[Tensor]


@dataclass
class InnerStep:
    """One inner step ``θ^{(i+1)} = θ^{(i)} - α g(θ^{(i)})`` with per-task leaf parameters and
    the inner gradient's graph (``create_graph=True``), kept for Hessian products."""

    params: Vectors  # per-task leaves θ^{(i)}, each [K, ...], requires_grad
    gradient: Vectors  # g(θ^{(i)}), differentiable w.r.t. params

    def hessian_product(self, vectors: Vectors) -> Vectors:
        """``H^{(i)} u`` for every task: the vjp of the gradient (the Hessian is symmetric)."""
        return list(torch.autograd.grad(self.gradient, self.params, vectors, retain_graph=True))


class AdaptationJacobian:
    """Products with ``J_k = Π_i (I - α H_k^{(i)})`` for all tasks at once."""

    def __init__(self, steps: list[InnerStep], inner_lr: float, first_order: bool) -> None:
        self.steps = steps
        self.inner_lr = inner_lr
        self.first_order = first_order

    def _through(self, step: InnerStep, vectors: Vectors) -> Vectors:
        products = step.hessian_product(vectors)
        return [v - self.inner_lr * hv for v, hv in zip(vectors, products)]

    def jvp(self, vectors: Vectors) -> Vectors:
        """``J u``: tangents of θ (per task) pushed through the inner steps in order."""
        if self.first_order:
            return vectors
        for step in self.steps:
            vectors = self._through(step, vectors)
        return vectors

    def vjp(self, vectors: Vectors) -> Vectors:
        """``Jᵀ z``: cotangents of θ' pulled back through the inner steps in reverse."""
        if self.first_order:
            return vectors
        for step in reversed(self.steps):
            vectors = self._through(step, vectors)
        return vectors


class GaussianFisher:
    """Products with the Fisher matrices of a Gaussian policy with state-independent log σ.

    ``mean`` must be computed from the leaves ``params`` (with graph); ``log_std_index`` says which
    leaf is log σ (shape ``[K, A]``).  ``weights`` ``[..., K, M]`` are the per-state weights of the
    KL average (mask / count / K), so the products are those of the mean KL's Hessian.
    """

    def __init__(self, params: Vectors, mean: Tensor, log_std_index: int, weights: Tensor) -> None:
        self.params = params
        self.mean = mean
        self.log_std_index = log_std_index
        log_std = params[log_std_index].detach()
        self.mean_precision = weights.unsqueeze(-1) * torch.exp(-2 * log_std).unsqueeze(-2)
        self.log_std_weight = 2.0 * weights.sum(dim=tuple(range(weights.dim() - 2)) + (-1,))
        self._cotangent = torch.zeros_like(mean, requires_grad=True)
        self._transposed = torch.autograd.grad(
            mean, params, self._cotangent, create_graph=True, allow_unused=True
        )

    def product(self, vectors: Vectors) -> Vectors:
        """``F u`` per task."""
        pairs = [(t, v) for t, v in zip(self._transposed, vectors) if t is not None]
        mean_tangent = torch.autograd.grad(
            [t for t, _ in pairs], self._cotangent, [v for _, v in pairs], retain_graph=True
        )[0]
        pulled = torch.autograd.grad(
            self.mean,
            self.params,
            self.mean_precision * mean_tangent,
            retain_graph=True,
            allow_unused=True,
        )
        out = [torch.zeros_like(v) if p is None else p for p, v in zip(pulled, vectors)]
        index = self.log_std_index
        out[index] = out[index] + self.log_std_weight.unsqueeze(-1) * vectors[index]
        return out


def meta_kl_hessian_product(
    jacobian: AdaptationJacobian, fisher: GaussianFisher, num_tasks: int, damping: float
) -> Callable[[Vectors], Vectors]:
    """``v ↦ (mean_k J_kᵀ F_k J_k + damping·I) v`` for meta-parameter vectors ``v``.

    ``v`` has the meta-parameters' shapes; it is broadcast to every task and the per-task results
    are summed (the transpose of the broadcast).  The 1/K of the mean is in the Fisher weights.
    """

    def product(vectors: Vectors) -> Vectors:
        per_task = [v.expand(num_tasks, *v.shape) for v in vectors]
        pulled = jacobian.vjp(fisher.product(jacobian.jvp(per_task)))
        return [p.sum(0) + damping * v for p, v in zip(pulled, vectors)]

    return product
