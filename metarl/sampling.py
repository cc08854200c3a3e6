"""Lock-stepped sampling of all tasks × all trajectories of a meta-batch as one batch.

One policy call per time step serves the whole batch, whether the K tasks share the
meta-parameters (pre-update) or each has its own adapted parameters (post-update).  No worker
processes, threads or event loops: the simulator's own batched step does the parallel work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from envs import BatchedEnv, Task, TaskFamily
from metarl.episodes import Episodes
from metarl.policies import GaussianMLPPolicy, Params
from metarl.runtime import keep_freed_memory


class BatchSampler:
    """Collects ``num_trajectories`` episodes for each of K tasks in one lock-stepped batch.

    Randomness comes from two seeded streams owned by the sampler: a numpy generator for
    environment resets and a torch generator for action noise (see :meth:`state_dict`).

    While sampling, torch runs on ``policy_threads`` threads (restored afterwards; ``None``
    leaves torch's setting): the simulator's threads use the cores, and idle torch threads that
    spin-wait after each policy call would take CPU from them.
    """

    policy_threads: int | None = 1

    def __init__(self, family: TaskFamily, num_trajectories: int, seed: int) -> None:
        self.family = family
        self.num_trajectories = num_trajectories
        seeds = np.random.SeedSequence(seed).spawn(2)
        self.env_rng = np.random.default_rng(seeds[0])
        self.action_generator = torch.Generator().manual_seed(
            int(seeds[1].generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        )
        self._envs: dict[int, BatchedEnv] = {}
        keep_freed_memory()  # the per-step policy buffers are reused, not page-faulted anew

    def _env(self, num_envs: int) -> BatchedEnv:
        if num_envs not in self._envs:
            self._envs[num_envs] = self.family.make_batched_env(num_envs)
        return self._envs[num_envs]

    def sample(self, tasks: Sequence[Task], policy: GaussianMLPPolicy, params: Params) -> Episodes:
        """Roll out ``policy`` under ``params`` (shared, or one set per task) on every task."""
        num_tasks, per_task = len(tasks), self.num_trajectories
        env = self._env(num_tasks * per_task)
        env.set_tasks([task for task in tasks for _ in range(per_task)])
        params = {name: p.detach().cpu().float() for name, p in params.items()}
        with _torch_threads(self.policy_threads):
            return self._sample(env, num_tasks, policy, params)

    def _sample(
        self, env: BatchedEnv, num_tasks: int, policy: GaussianMLPPolicy, params: Params
    ) -> Episodes:
        per_task = self.num_trajectories
        observation = env.reset(self.env_rng)
        observations, actions, rewards, masks = [], [], [], []
        for _ in range(env.horizon):
            alive = env.alive.copy()
            if not alive.any():
                break
            obs = torch.from_numpy(observation).float().view(num_tasks, per_task, -1)
            action = policy.sample(obs, params, self.action_generator)
            result = env.step(action.view(num_tasks * per_task, -1).numpy().astype(np.float64))
            observations.append(obs)
            actions.append(action)
            rewards.append(result.reward)
            masks.append(alive)
            observation = result.observation
        shape = (len(rewards), num_tasks, per_task)
        return Episodes(
            observations=torch.stack(observations),
            actions=torch.stack(actions),
            rewards=torch.from_numpy(np.stack(rewards)).float().view(shape),
            mask=torch.from_numpy(np.stack(masks)).float().view(shape),
        )

    def state_dict(self) -> dict[str, Any]:
        """The sampler's random streams, for exact resume."""
        return {
            "env_rng": self.env_rng.bit_generator.state,
            "action_generator": self.action_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env_rng.bit_generator.state = state["env_rng"]
        self.action_generator.set_state(state["action_generator"])


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with torch on ``num_threads`` intra-op threads (``None``: unchanged)."""
    previous = torch.get_num_threads()
    if num_threads is not None and num_threads != previous:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
