"""Conjugate gradient, Hessian-vector products and the line search against closed forms."""

from __future__ import annotations

import pytest
import torch

from metarl.agents.common.optim import (
    backtracking_line_search,
    conjugate_gradient,
    flatten,
    hessian_vector_product,
    unflatten,
)


@pytest.mark.parametrize("dim", [3, 10, 40])
def test_conjugate_gradient_matches_direct_solve(dim: int) -> None:
    generator = torch.Generator().manual_seed(dim)
    m = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    matrix = m @ m.T + 0.1 * torch.eye(dim, dtype=torch.float64)
    b = torch.randn(dim, generator=generator, dtype=torch.float64)
    x = conjugate_gradient(lambda v: matrix @ v, b, num_iterations=10 * dim, residual_tol=1e-20)
    torch.testing.assert_close(x.solution, torch.linalg.solve(matrix, b), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("num_iterations", [1, 4, 10])
def test_conjugate_gradient_product_is_a_times_the_unconverged_solution(
    num_iterations: int,
) -> None:
    generator = torch.Generator().manual_seed(num_iterations)
    m = torch.randn(30, 30, generator=generator, dtype=torch.float64)
    matrix = m @ m.T + 1e-3 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=generator, dtype=torch.float64)
    result = conjugate_gradient(lambda v: matrix @ v, b, num_iterations, residual_tol=0.0)
    assert not torch.allclose(result.product, b)  # far from converged: r matters
    torch.testing.assert_close(result.product, matrix @ result.solution, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(
        result.quadratic_form(), result.solution @ matrix @ result.solution, rtol=1e-9, atol=0
    )


def test_conjugate_gradient_is_exact_in_dim_steps_for_few_eigenvalues() -> None:
    # A matrix with 3 distinct eigenvalues: CG converges in 3 iterations exactly.
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    eigenvalues = torch.tensor([1.0, 1.0, 1.0, 5.0, 5.0, 9.0, 9.0, 9.0], dtype=torch.float64)
    matrix = q @ torch.diag(eigenvalues) @ q.T
    b = torch.randn(8, dtype=torch.float64)
    x = conjugate_gradient(lambda v: matrix @ v, b, num_iterations=3, residual_tol=0.0).solution
    torch.testing.assert_close(matrix @ x, b, rtol=1e-9, atol=1e-9)


def _tiny_network_loss(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    w1, b1, w2 = params
    hidden = torch.tanh(x @ w1 + b1)
    return (hidden @ w2).pow(2).mean() + 0.1 * (w1.pow(2).sum() * w2.pow(2).sum())


def _tiny_params() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    shapes = [(3, 4), (4,), (4, 2)]
    return [
        torch.randn(*s, generator=generator, dtype=torch.float64, requires_grad=True)
        for s in shapes
    ]


def test_hessian_vector_product_matches_explicit_hessian() -> None:
    params = _tiny_params()
    x = torch.randn(7, 3, dtype=torch.float64)
    flat = flatten([p.detach() for p in params])

    def loss_of_flat(vector: torch.Tensor) -> torch.Tensor:
        return _tiny_network_loss(unflatten(vector, params), x)

    hessian = torch.autograd.functional.hessian(loss_of_flat, flat)
    product = hessian_vector_product(_tiny_network_loss(params, x), params, damping=0.01)
    v = torch.randn_like(flat)
    torch.testing.assert_close(product(v), hessian @ v + 0.01 * v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(product(2 * v), 2 * (hessian @ v + 0.01 * v))  # graph reused


def test_hessian_vector_product_matches_finite_differences_of_gradient() -> None:
    params = _tiny_params()
    x = torch.randn(7, 3, dtype=torch.float64)
    v = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
    product = hessian_vector_product(_tiny_network_loss(params, x), params)(v)

    def gradient_at(vector: torch.Tensor) -> torch.Tensor:
        shifted = [t.detach().requires_grad_() for t in unflatten(vector, params)]
        return flatten(torch.autograd.grad(_tiny_network_loss(shifted, x), shifted))

    base, eps = flatten([p.detach() for p in params]), 1e-6
    finite = (gradient_at(base + eps * v) - gradient_at(base - eps * v)) / (2 * eps)
    torch.testing.assert_close(product, finite, rtol=1e-6, atol=1e-7)


def _quadratic_evaluate(target: torch.Tensor, kl_scale: float):
    def evaluate(candidate: torch.Tensor) -> tuple[float, float]:
        loss = float((candidate - target).pow(2).sum())
        kl = kl_scale * float(candidate.pow(2).sum())
        return loss, kl

    return evaluate


def test_line_search_accepts_first_improving_step_within_trust_region() -> None:
    params = torch.zeros(2, dtype=torch.float64)
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    evaluate = _quadratic_evaluate(target, kl_scale=1.0)
    # full step overshoots the KL bound (kl = 4); kl = 4·0.64^k ≤ 0.5 first at k = 5
    new, result = backtracking_line_search(evaluate, params, 2 * target, 1.0, max_kl=0.5)
    assert result.accepted
    assert result.num_steps == 6
    assert result.kl <= 0.5 and result.loss < 1.0
    torch.testing.assert_close(new, 0.8**5 * 2 * target)


@pytest.mark.parametrize("kl_scale", [0.0, 1.0, 100.0])
def test_line_search_never_accepts_worse_loss_or_kl_above_bound(kl_scale: float) -> None:
    generator = torch.Generator().manual_seed(5)
    for _ in range(50):
        params = torch.randn(3, generator=generator, dtype=torch.float64)
        target = torch.randn(3, generator=generator, dtype=torch.float64)
        step = torch.randn(3, generator=generator, dtype=torch.float64)
        evaluate = _quadratic_evaluate(target, kl_scale)
        before, _ = evaluate(params)
        new, result = backtracking_line_search(evaluate, params, step, before, max_kl=0.3)
        loss, kl = evaluate(new)
        if result.accepted:
            assert loss < before and kl <= 0.3
        else:
            assert torch.equal(new, params)


def test_line_search_restores_parameters_and_rejects_nan() -> None:
    params = torch.tensor([0.5, -0.5], dtype=torch.float64)
    new, result = backtracking_line_search(
        lambda c: (float("nan"), 0.0), params, torch.ones(2, dtype=torch.float64), 1.0, 0.01
    )
    assert not result.accepted and result.num_steps == 15
    assert torch.equal(new, params)
