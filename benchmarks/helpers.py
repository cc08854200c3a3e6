"""What the benchmarks share: configs, agents built as training builds them, raw physics.

Imported by the scripts beside it (``python benchmarks/bench_*.py`` puts this folder on the path).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from metarl.agents.common.episodes import Episodes
from metarl.agents.common.policies import GaussianMLPPolicy, Params
from metarl.agents.common.sampling import BatchSampler
from metarl.components import Agent, build_agent, build_policy, derived_seeds, make_family
from metarl.config import Config, load_config, resolve_config_path
from metarl.envs import Task, TaskFamily
from metarl.envs.mujoco_core import (
    BatchedLocomotionEnv,
    BatchedSimulation,
    LocomotionFamily,
    load_model,
)

LOCOMOTION_FAMILIES = ["HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntGoal"]
Recorded = tuple[np.random.Generator, Episodes, np.ndarray]  # reset stream, episodes, final qpos


def bench_config(name: str, overrides: list[str]) -> Config:
    """A bundled config (or YAML file) with ``--set`` overrides, as ``metarl train`` reads it."""
    return load_config(resolve_config_path(name), overrides)


def make_variant(config: Config, overrides: dict[str, object]) -> tuple[Agent, BatchSampler]:
    """The agent and sampler a training run of ``config`` starts with, the algorithm section
    (``name`` included) updated by ``overrides``."""
    seeds = derived_seeds(config.train.seed)
    family = make_family(config, seed=seeds["tasks"])
    torch.manual_seed(seeds["policy_init"])
    policy = build_policy(config, family).to(config.train.device)
    algorithm = config.algorithm.model_copy(update=overrides)
    agent = build_agent(config.model_copy(update={"algorithm": algorithm}), policy)
    return agent, BatchSampler(family, config.algorithm.num_trajectories, seeds["sampler"])


def timed(function: Callable[[], object], repeats: int) -> float:
    """Mean seconds per call over ``repeats`` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def adapted_parameters(policy: GaussianMLPPolicy, num_tasks: int) -> Params:
    """One parameter set per task near the policy's, like the inner loop's adapted ones."""
    generator = torch.Generator().manual_seed(1)
    return {
        name: (p.detach() + 0.01 * torch.randn((num_tasks, *p.shape), generator=generator))
        for name, p in policy.meta_parameters().items()
    }


def record_batches(sampler: BatchSampler, batches: list[Recorded]) -> None:
    """Make ``sampler`` keep what replaying each batch it samples needs
    (:meth:`RawPhysics.replay`): its reset stream as it was, the episodes and the final joint
    positions."""
    sample = sampler.sample

    def recording(tasks: Sequence[Task], policy: GaussianMLPPolicy, params: Params) -> Episodes:
        stream = copy.deepcopy(sampler.env_rng)
        episodes = sample(tasks, policy, params)
        lanes = sampler.lanes_for(len(tasks))
        final = np.concatenate([lane.env.sim.qpos for lane in lanes])  # type: ignore[attr-defined]
        batches.append((stream, episodes, final))
        return episodes

    sampler.sample = recording  # type: ignore[method-assign]


class RawPhysics:
    """The bare XML model of a locomotion family (the preset's timestep and frame skip, no
    sensors) stepped by ``mujoco.rollout`` for ``num_envs`` slots from the family's reset
    states: no policy, observations, rewards or probe, unless asked."""

    def __init__(self, family: TaskFamily, num_envs: int) -> None:
        assert isinstance(family, LocomotionFamily), "raw physics is for MuJoCo families"
        self.env = family.make_batched_env(num_envs)
        assert isinstance(self.env, BatchedLocomotionEnv)
        self.env.set_tasks(family.sample_tasks(num_envs))
        self.num_envs = num_envs
        model = load_model(family.xml_file)
        model.opt.timestep = self.env.sim.model.opt.timestep
        sim = self.env.sim
        self.sim = BatchedSimulation(model, num_envs, sim.frame_skip, sim.probe_model)
        self.rng = np.random.default_rng(0)

    @property
    def has_probe(self) -> bool:
        """Whether the preset's observations need a forward pass after each step."""
        return self.sim.probe_model is not None

    def step(self, actions: np.ndarray, live: np.ndarray, probe: bool = False) -> float:
        """Seconds for the bare model to take ``actions`` ``[T, B, nu]`` (in [-1, 1], mapped to
        the actuator range as the environments do) in the ``live`` ``[T, B]`` slots, from the
        state of the family's environment; with ``probe``, the probe pass after each step."""
        self.sim.state[:] = self.env.sim.state
        low, high = self.sim.model.actuator_ctrlrange.T
        controls = (high + low) / 2 + (high - low) / 2 * np.clip(actions, -1.0, 1.0)
        start = time.perf_counter()
        for ctrl, active in zip(controls, live):
            self.sim.step(ctrl, active)
            if probe:
                self.sim.probe(ctrl, active)
        return time.perf_counter() - start

    def random_rate(self, num_steps: int) -> float:
        """Slot-steps per second under random controls (standard normal, clipped to [-1, 1]:
        like the initial policy's actions) for ``num_steps`` steps from reset states."""
        self.env.reset(self.rng)
        shape = (num_steps, self.num_envs, self.sim.model.nu)
        actions = np.clip(self.rng.standard_normal(shape), -1.0, 1.0)
        live = np.ones((num_steps, self.num_envs), dtype=bool)
        return self.num_envs * num_steps / self.step(actions, live)

    def replay(self, batch: Recorded, probe: bool = False) -> float:
        """Seconds for the bare model to redo a sampled batch: the same initial states (drawn
        from a copy of the sampler's reset stream as it was), the same controls, live slots
        only.  That is the batch's own physics work: the final positions must be the batch's
        (a warning otherwise)."""
        reset_stream, episodes, final_qpos = batch
        self.env.reset(copy.deepcopy(reset_stream))
        actions = episodes.actions.numpy().reshape(len(episodes.actions), self.num_envs, -1)
        live = episodes.mask.numpy().reshape(len(episodes.mask), self.num_envs) > 0
        seconds = self.step(actions.astype(np.float64), live, probe)
        if not np.array_equal(self.sim.qpos, final_qpos):
            print("warning: the replay did not reproduce the sampled trajectories")
        return seconds
