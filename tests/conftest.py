"""Shared fixtures: tiny float64 MAML-TRPO and Reptile agents on real navigation episodes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from metarl import envs
from metarl.agents.common.policies import GaussianMLPPolicy
from metarl.agents.common.sampling import BatchSampler
from metarl.agents.maml_trpo import MAMLTRPO, AdaptationConfig, MetaBatch
from metarl.agents.reptile import Reptile, ReptileConfig
from metarl.config import AlgorithmConfig

# The tests use tiny tensors: one thread avoids OpenMP spin-waits on a busy machine.
torch.set_num_threads(1)


def make_agent(
    num_inner_steps: int = 1,
    first_order: bool = False,
    nonlinearity: str = "tanh",
    horizon: int = 12,
    num_tasks: int = 3,
    num_trajectories: int = 4,
    seed: int = 0,
    inner_lr: float = 0.3,
    inner_parameters: str = "all",
    cg_subsample: float = 1.0,
) -> tuple[MAMLTRPO, MetaBatch]:
    """A float64 agent with a small policy and a meta-batch sampled from navigation (with
    episodes of different lengths thanks to a large goal tolerance)."""
    torch.manual_seed(seed)
    family = envs.make_family(
        "Navigation2D", seed=seed, horizon=horizon, goal_tolerance=0.08, goal_range=0.3
    )
    policy = GaussianMLPPolicy(2, 2, (5, 4), nonlinearity, init_std=0.5).double()
    config = AlgorithmConfig(
        num_tasks=num_tasks,
        num_trajectories=num_trajectories,
        inner_lr=inner_lr,
        inner_parameters=inner_parameters,
        num_inner_steps=num_inner_steps,
        first_order=first_order,
        gae_lambda=0.95,
        cg_subsample=cg_subsample,
    )
    agent = MAMLTRPO(policy, config)
    sampler = BatchSampler(family, num_trajectories, seed)
    batch = agent.collect(family.sample_tasks(num_tasks), sampler)
    return agent, batch


def make_reptile(outer_lr: float = 0.3, **kwargs: Any) -> tuple[Reptile, MetaBatch]:
    """A Reptile agent on :func:`make_agent`'s policy and meta-batch (``kwargs``): the inner
    loop, hence the batch, is the same."""
    maml, batch = make_agent(**kwargs)
    shared = maml.config.model_dump(include=set(AdaptationConfig.model_fields))
    return Reptile(maml.policy, ReptileConfig(**shared, outer_lr=outer_lr)), batch


@pytest.fixture
def tiny_agent() -> tuple[MAMLTRPO, MetaBatch]:
    return make_agent()
