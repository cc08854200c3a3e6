"""The hand-derived products of metarl.agents.common.curvature against autograd, for several
network depths and both nonlinearities, in float64 with per-task parameters; one task's products
in float32 (oneDNN's matmul on the CPU) against float64; the meta-KL product whatever the parts
its tasks go in."""

from __future__ import annotations

import pytest
import torch

from metarl.agents.common.curvature import (
    FIRST_LAYER_MOMENTS_MAX_INPUTS,
    AdaptationJacobian,
    GaussianFisher,
    GaussianLogLikelihood,
    MeanNetwork,
    live_rows,
    meta_kl_hessian_product,
    split_parameters,
    summed_vjp,
)
from metarl.agents.common.gemm import ONEDNN, uses_onednn
from metarl.agents.common.policies import GaussianMLPPolicy, gaussian_kl, gaussian_log_prob

K, N, OBS, ACT = 3, 7, 4, 2


def _setup(hidden: tuple[int, ...], nonlinearity: str, obs_dim: int = OBS):
    generator = torch.Generator().manual_seed(len(hidden))
    policy = GaussianMLPPolicy(obs_dim, ACT, hidden, nonlinearity, init_std=0.7).double()
    params = [
        (p.detach().expand(K, *p.shape) + 0.3 * torch.randn(K, *p.shape, generator=generator))
        .double()
        .requires_grad_()
        for p in policy.parameters()
    ]
    inputs = torch.randn(K, N, obs_dim, generator=generator, dtype=torch.float64)
    actions = torch.randn(K, N, ACT, generator=generator, dtype=torch.float64)
    rho = torch.randn(K, N, generator=generator, dtype=torch.float64)
    vectors = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
    return policy, params, inputs, actions, rho, vectors


def _autograd_mean(policy: GaussianMLPPolicy, params: list[torch.Tensor], inputs: torch.Tensor):
    names = [name for name, _ in policy.named_parameters()]
    observations = inputs.unsqueeze(0)  # [T=1, K, M=N, obs]
    mean, log_std = policy.mean_and_log_std(observations, dict(zip(names, params)))
    return mean.squeeze(0), log_std  # [K, N, A], [K, 1, A]


CASES = [((), "tanh"), ((5,), "tanh"), ((5, 4), "relu"), ((5, 4, 3), "tanh"), ((6, 5, 4), "relu")]
# Observations this wide skip the first-layer moments: the plain reverse pass is checked too.
WIDE = [((5, 4), "tanh", FIRST_LAYER_MOMENTS_MAX_INPUTS), ((6, 5), "relu", 40)]


@pytest.mark.parametrize("hidden,nonlinearity,obs_dim", [(*c, OBS) for c in CASES] + WIDE)
def test_log_likelihood_gradient_and_hessian_product_match_autograd(
    hidden: tuple[int, ...], nonlinearity: str, obs_dim: int
) -> None:
    policy, params, inputs, actions, rho, vectors = _setup(hidden, nonlinearity, obs_dim)
    mean, log_std = _autograd_mean(policy, params, inputs)
    objective = (rho * gaussian_log_prob(actions, mean, log_std)).sum()
    gradient = torch.autograd.grad(objective, params, create_graph=True)
    hessian_product = torch.autograd.grad(gradient, params, vectors)

    weights, biases, log_sigma = split_parameters([p.detach() for p in params])
    network = MeanNetwork(weights, biases, inputs, nonlinearity)
    likelihood = GaussianLogLikelihood(network, log_sigma, actions, rho)
    uses_moments = len(hidden) > 0 and obs_dim < FIRST_LAYER_MOMENTS_MAX_INPUTS
    assert (network.moments is not None) == uses_moments
    torch.testing.assert_close(network.output, mean.detach())
    for mine, reference in zip(likelihood.gradient, gradient):
        torch.testing.assert_close(mine, reference.detach(), rtol=1e-12, atol=1e-12)
    for mine, reference in zip(likelihood.hessian_product(vectors), hessian_product):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hidden,nonlinearity", CASES)
def test_fisher_product_is_the_kl_hessian_product(
    hidden: tuple[int, ...], nonlinearity: str
) -> None:
    policy, params, inputs, _, rho, vectors = _setup(hidden, nonlinearity)
    weights = rho.abs()
    mean, log_std = _autograd_mean(policy, params, inputs)
    kl = (weights * gaussian_kl(mean.detach(), log_std.detach(), mean, log_std)).sum()
    gradient = torch.autograd.grad(kl, params, create_graph=True)
    hessian_product = torch.autograd.grad(gradient, params, vectors)

    w, b, log_sigma = split_parameters([p.detach() for p in params])
    fisher = GaussianFisher(MeanNetwork(w, b, inputs, nonlinearity), log_sigma, weights)
    for mine, reference in zip(fisher.product(vectors), hessian_product):
        torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


def _products(params, inputs, actions, rho, nonlinearity):
    """The log-likelihood (with Hessian products) and the Fisher (weights |ρ|) at ``params``."""
    weights, biases, log_sigma = split_parameters([p.detach() for p in params])
    likelihood = GaussianLogLikelihood(
        MeanNetwork(weights, biases, inputs, nonlinearity), log_sigma, actions, rho
    )
    network = MeanNetwork(weights, biases, inputs, nonlinearity)
    return likelihood, GaussianFisher(network, log_sigma, rho.abs())


@pytest.mark.parametrize("hidden,nonlinearity", [((5, 4), "tanh"), ((6, 5, 4), "relu")])
def test_one_task_in_float32_matches_float64(hidden: tuple[int, ...], nonlinearity: str) -> None:
    _, params, inputs, actions, rho, vectors = _setup(hidden, nonlinearity)
    likelihood, fisher = _products(params, inputs, actions, rho, nonlinearity)
    single = [p.float() for p in params], inputs.float(), actions.float(), rho.float()
    likelihood32, fisher32 = _products(*single, nonlinearity)
    task = slice(1, 2)
    part, fisher_part = likelihood32.part(task), fisher32.part(task)
    layer_input = part.network.layer_inputs[0]
    assert uses_onednn(layer_input, layer_input) == ONEDNN
    one = [v[task].float() for v in vectors]
    for mine, reference in zip(part.hessian_product(one), likelihood.hessian_product(vectors)):
        torch.testing.assert_close(mine, reference[task].float(), rtol=1e-4, atol=1e-5)
    for mine, reference in zip(fisher_part.product(one), fisher.product(vectors)):
        torch.testing.assert_close(mine, reference[task].float(), rtol=1e-4, atol=1e-5)


def test_meta_gradient_and_kl_product_are_the_same_whatever_the_parts() -> None:
    _, params, inputs, actions, rho, vectors = _setup((5, 4), "tanh")
    rho[0, 4:] = 0  # task 0's rows after the fourth are padding
    likelihood, fisher = _products(params, inputs, actions, rho, "tanh")
    assert live_rows(rho) == [4, N, N]
    jacobian = AdaptationJacobian([likelihood, likelihood], 0.3, first_order=False)
    shared = [v[0] for v in vectors]
    products = [
        meta_kl_hessian_product(jacobian, fisher, K, 1e-3, tasks_per_part)(shared)
        for tasks_per_part in (1, 2, K)
    ]
    for product in products[1:]:
        for mine, reference in zip(product, products[0]):
            torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)
    at_once = [g.sum(0) for g in jacobian.vjp(vectors)]
    for tasks_per_part in (1, 2, K):
        for mine, reference in zip(summed_vjp(jacobian, vectors, tasks_per_part), at_once):
            torch.testing.assert_close(mine, reference, rtol=1e-12, atol=1e-12)


def test_a_task_without_live_rows_in_float32() -> None:
    """A task whose ρ is all zero (say, all its rewards zero) has no live row: its part of the
    products is empty matrices, which oneDNN refuses, and contributes nothing."""
    _, params, inputs, actions, rho, vectors = _setup((5, 4), "tanh")
    rho[1] = 0
    likelihood, fisher = _products(params, inputs, actions, rho, "tanh")
    single = [p.float() for p in params], inputs.float(), actions.float(), rho.float()
    likelihood32, fisher32 = _products(*single, "tanh")
    assert live_rows(rho) == [N, 0, N]
    shared = [v[0] for v in vectors]
    products = []
    for like, fish, cast in (
        (likelihood, fisher, torch.double),
        (likelihood32, fisher32, torch.float),
    ):
        jacobian = AdaptationJacobian([like], 0.3, first_order=False)
        product = meta_kl_hessian_product(jacobian, fish, K, 1e-3, 1)
        products.append(product([v.to(cast) for v in shared]))
        summed_vjp(jacobian, [v.to(cast) for v in vectors], 1)  # no error on the empty task
    for mine, reference in zip(products[1], products[0]):
        torch.testing.assert_close(mine, reference.float(), rtol=1e-4, atol=1e-5)
