"""What a run is built from, per its config: its seeded random streams, task family, policy,
sampler and agent.

Training (:mod:`metarl.training`), evaluation and videos build theirs here, so that a policy
restored from a checkpoint has exactly the shape it was trained with.
"""

from __future__ import annotations

import numpy as np

from metarl import envs
from metarl.agents.common.policies import GaussianMLPPolicy
from metarl.agents.common.sampling import BatchSampler
from metarl.agents.maml_trpo import MAMLTRPO
from metarl.agents.reptile import Reptile
from metarl.config import Config

Agent = MAMLTRPO | Reptile
"""A meta-learning agent: ``collect`` samples and adapts, ``meta_step`` updates its policy."""

HELD_OUT_SALT = 0x4E1D0
"""Mixed into the seed of held-out tasks: a stream that no training run draws from."""


def stream_seeds(entropy: int | list[int], names: tuple[str, ...]) -> dict[str, int]:
    """Independent seeds, one per named random stream, spawned from ``entropy``."""
    children = np.random.SeedSequence(entropy).spawn(len(names))
    return {n: int(c.generate_state(1, dtype=np.uint32)[0]) for n, c in zip(names, children)}


def derived_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for every random stream of a training run, from the run seed."""
    return stream_seeds(seed, ("tasks", "sampler", "policy_init"))


def held_out_seeds(seed: int) -> dict[str, int]:
    """Seeds of an evaluation's random streams, disjoint from every training run's."""
    return stream_seeds([seed, HELD_OUT_SALT], ("tasks", "sampler", "rollout"))


def make_family(config: Config, seed: int | None = None) -> envs.TaskFamily:
    """The config's task family, its task generator seeded by ``seed``."""
    return envs.make_family(config.env.family, seed=seed, **config.env.kwargs)


def build_policy(config: Config, family: envs.TaskFamily) -> GaussianMLPPolicy:
    """The Gaussian MLP policy of the config, sized for ``family``."""
    probe = family.make_batched_env(1)
    return GaussianMLPPolicy(
        probe.observation_dim,
        probe.action_dim,
        tuple(config.policy.hidden_sizes),
        config.policy.nonlinearity,
        config.policy.init_std,
    )


def build_sampler(
    config: Config, family: envs.TaskFamily, num_trajectories: int, seed: int
) -> BatchSampler:
    """The sampler of ``config.sampler``, its streams seeded by ``seed``: in this process, or on
    the workers of the Ray cluster this process has joined (else joins as
    :func:`~metarl.agents.common.ray_sampling.connect` does)."""
    settings = config.sampler
    if settings.backend == "ray":
        from metarl.agents.common.ray_sampling import RaySampler

        return RaySampler(family, num_trajectories, seed, settings)
    return BatchSampler(family, num_trajectories, seed, settings.num_lanes, settings.fill_steps)


def build_agent(config: Config, policy: GaussianMLPPolicy) -> Agent:
    """The agent of ``algorithm.name``, meta-training ``policy``."""
    if config.algorithm.name == "reptile":
        return Reptile(policy, config.algorithm)
    return MAMLTRPO(policy, config.algorithm)
