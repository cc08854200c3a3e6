"""Reptile's outer update against its definition, ``θ ← θ + ε mean_k(θ'_k − θ)``, with each
task's adapted parameters θ'_k computed here by autograd, one task at a time (float64, real
masked navigation episodes)."""

from __future__ import annotations

import pytest
import torch

from metarl.agents.common.policies import Params
from metarl.agents.maml_trpo import MetaBatch
from metarl.agents.reptile import Reptile
from tests.conftest import make_reptile

CASES = {
    "one-step": dict(num_inner_steps=1),  # the paper's "joint training"
    "two-steps": dict(num_inner_steps=2),
    "head-only": dict(num_inner_steps=2, inner_parameters="head"),  # body: not adapted
}


def adapted_by_hand(agent: Reptile, batch: MetaBatch, task: int) -> Params:
    """θ'_k of task ``task``: from θ, one step ``θ'_k − α ∇L_k(θ'_k)`` per inner step on that
    task's episodes, ``L_k = -mean over live steps of A log π(a|s)``."""
    alpha, last = agent.config.inner_lr, len(agent.policy.layers) - 1
    params = {name: p.detach().clone() for name, p in agent.policy.meta_parameters().items()}
    for episodes in batch.train:
        assert episodes.advantages is not None
        mask = episodes.mask[:, task]
        tensors = {name: p.requires_grad_() for name, p in params.items()}
        log_prob = agent.policy.log_prob(
            episodes.observations[:, task], episodes.actions[:, task], tensors
        )
        loss = -(log_prob * episodes.advantages[:, task] * mask).sum() / mask.sum()
        grads = dict(zip(tensors, torch.autograd.grad(loss, list(tensors.values()))))
        adapts = {
            name: agent.config.inner_parameters == "all"
            or name == "log_std"
            or name.startswith(f"layers.{last}.")
            for name in params
        }
        params = {
            name: (p - alpha * grads[name] if adapts[name] else p).detach()
            for name, p in tensors.items()
        }
    return params


@pytest.mark.parametrize("case", list(CASES))
def test_update_moves_theta_towards_the_mean_adapted_parameters(case: str) -> None:
    epsilon = 0.3
    agent, batch = make_reptile(outer_lr=epsilon, **CASES[case])
    theta = {name: p.detach().clone() for name, p in agent.policy.meta_parameters().items()}
    per_task = [adapted_by_hand(agent, batch, k) for k in range(batch.valid.num_tasks)]
    expected = {
        name: theta[name] + epsilon * torch.stack([a[name] - theta[name] for a in per_task]).mean(0)
        for name in theta
    }

    info = agent.meta_step(batch)

    assert info.accepted and info.line_search_steps == 0 and info.kl > 0
    moved = set()
    for name, value in agent.policy.meta_parameters().items():
        torch.testing.assert_close(value.detach(), expected[name], rtol=1e-9, atol=1e-12)
        if not torch.equal(value.detach(), theta[name]):
            moved.add(name)
    last = f"layers.{len(agent.policy.layers) - 1}."
    head = {name for name in theta if name == "log_std" or name.startswith(last)}
    assert moved == (head if case == "head-only" else set(theta))
