"""Gaussian MLP policy evaluated functionally, with one parameter set shared or one per task.

Parameters live in a plain ``dict[str, Tensor]`` (the module's ``named_parameters``), so the
inner update ``θ' = θ - α ∇L(θ)`` is an ordinary differentiable tensor expression.

Shapes: observations are ``[..., K, M, obs_dim]`` (K tasks, M trajectories).  A parameter set
either has the module's shapes (shared by all tasks: the meta-parameters θ) or a leading task
dimension ``K`` (adapted parameters θ'_k, one set per task).  Both go through the same batched
matrix products, so sampling K tasks with K adapted policies is one call, not a loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from metarl.agents.common.episodes import samples_by_task

Params = dict[str, Tensor]

NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu_,
    "tanh": torch.tanh_,
}
"""In place: each is applied to the fresh output of an affine layer, which no backward pass
needs (the affine layer's gradients need its inputs only), so no copy is made."""


class GaussianMLPPolicy(nn.Module):
    """π(a|s) = N(μ_θ(s), diag(σ²)) with an MLP mean and a learned state-independent log σ.

    The log-probability of an action is summed over action dimensions.  Weights are initialised
    Xavier-uniform with zero biases; ``log_std`` starts at ``log(init_std)``.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_sizes: tuple[int, ...] = (100, 100),
        nonlinearity: str = "relu",
        init_std: float = 1.0,
    ) -> None:
        super().__init__()
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"nonlinearity must be one of {sorted(NONLINEARITIES)}, got {nonlinearity!r}"
            )
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.nonlinearity = nonlinearity
        sizes = (observation_dim, *hidden_sizes, action_dim)
        linears = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        for layer in linears:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.layers = nn.ModuleList(linears)
        self.log_std = nn.Parameter(torch.full((action_dim,), math.log(init_std)))

    def meta_parameters(self) -> Params:
        """The module's parameters as a dict (the tensors themselves, not copies)."""
        return dict(self.named_parameters())

    def mean_and_log_std(self, observations: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        """Mean ``[..., K, M, A]`` and log σ (broadcastable to it) under ``params``."""
        log_std = params["log_std"]
        if log_std.dim() == 1:
            return self._mlp(observations, params), log_std
        # One parameter set per task: bring K to the front so each task is one large matmul.
        mean = self._mlp(samples_by_task(observations, 1), params)
        mean = mean.view(log_std.shape[0], *observations.shape[:-3], observations.shape[-2], -1)
        mean = mean.movedim(0, -3)
        return mean, log_std.unsqueeze(-2)

    def _mlp(self, inputs: Tensor, params: Params) -> Tensor:
        """The mean network; per-task weights ``[K, out, in]`` need inputs ``[K, N, in]``."""
        act = NONLINEARITIES[self.nonlinearity]
        hidden = inputs
        last = len(self.layers) - 1
        for i in range(len(self.layers)):
            weight, bias = params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
            if weight.dim() == 3:
                hidden = torch.baddbmm(bias.unsqueeze(-2), hidden, weight.transpose(-1, -2))
            else:
                hidden = torch.addmm(bias, hidden.reshape(-1, hidden.shape[-1]), weight.T).view(
                    *hidden.shape[:-1], -1
                )
            if i < last:
                hidden = act(hidden)
        return hidden

    def log_prob(self, observations: Tensor, actions: Tensor, params: Params) -> Tensor:
        """log π(a|s), summed over action dimensions: shape ``[..., K, M]``."""
        mean, log_std = self.mean_and_log_std(observations, params)
        return gaussian_log_prob(actions, mean, log_std)

    def act(self, observations: Tensor, params: Params, noise: Tensor) -> Tensor:
        """Actions ``a = μ + σ·ε`` for given standard normal noise ``ε`` (shaped like ``a``)."""
        with torch.no_grad():
            mean, log_std = self.mean_and_log_std(observations, params)
            return mean + log_std.exp() * noise


def gaussian_log_prob(actions: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Diagonal Gaussian log-density summed over the last dimension."""
    z = (actions - mean) * torch.exp(-log_std)
    per_dim = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    return per_dim.sum(-1)


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p ‖ q) of diagonal Gaussians, summed over the last dimension (closed form)."""
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    per_dim = log_std_q - log_std_p + (var_p + (mean_p - mean_q).pow(2)) / (2 * var_q) - 0.5
    return per_dim.sum(-1)
