"""The hand-derived products of metarl.agents.common.curvature against autograd, for several
network depths and both nonlinearities, in float64 with per-task parameters."""

from __future__ import annotations

import pytest
import torch

from metarl.agents.common.curvature import (
    FIRST_LAYER_MOMENTS_MAX_INPUTS,
    GaussianFisher,
    GaussianLogLikelihood,
    MeanNetwork,
    split_parameters,
)
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
