"""A stable-baselines3 :class:`VecEnv` over a task family's batched environment.

All slots step together in one call (in C for the MuJoCo families, as the sampler steps them).
Each episode of each slot has its own task, drawn from the family's seeded stream when the
episode starts; a slot whose episode ends (termination, or the family's horizon) is reset at once,
as SB3 expects: the step returns the new episode's first observation, and ``info`` holds the last
one as ``terminal_observation`` with ``TimeLimit.truncated`` set for horizon ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from metarl.envs import TaskFamily


class TaskVecEnv(VecEnv):
    """``num_envs`` slots of ``family``, a new task at every episode (``family.rng``) and the
    reset noise from a generator seeded by ``seed``."""

    render_mode = None  # no rendering through SB3

    def __init__(self, family: TaskFamily, num_envs: int, seed: int | None = None) -> None:
        self.family = family
        self.env = family.make_batched_env(num_envs)
        observation_space = gym.spaces.Box(
            -np.inf, np.inf, shape=(self.env.observation_dim,), dtype=np.float32
        )
        action_space = gym.spaces.Box(-1.0, 1.0, shape=(self.env.action_dim,), dtype=np.float32)
        super().__init__(num_envs, observation_space, action_space)
        self.rng = np.random.default_rng(seed)
        self.elapsed = np.zeros(num_envs, dtype=np.int64)
        self.episode_tasks = 0  # tasks drawn so far
        self.finished_returns: list[float] = []  # undiscounted returns of ended episodes
        self._running_returns = np.zeros(num_envs)
        self._actions = np.zeros((num_envs, self.env.action_dim))

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """The task of each slot's current episode."""
        return self.env.tasks

    def _draw_tasks(self, count: int) -> list[dict[str, Any]]:
        self.episode_tasks += count
        return self.family.sample_tasks(count)

    def reset(self) -> np.ndarray:
        self.env.set_tasks(self._draw_tasks(self.num_envs))
        self.elapsed[:] = 0
        self._running_returns[:] = 0.0
        return self.env.reset(self.rng).astype(np.float32)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64)

    def step_wait(self) -> VecEnvStepReturn:
        result = self.env.step(self._actions)
        self.elapsed += 1
        self._running_returns += result.reward
        terminated = result.terminated
        truncated = (self.elapsed >= self.env.horizon) & ~terminated
        done = terminated | truncated
        observation = result.observation
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            for slot in np.flatnonzero(done):
                infos[slot]["terminal_observation"] = observation[slot].astype(np.float32)
                infos[slot]["TimeLimit.truncated"] = bool(truncated[slot])
            self.finished_returns.extend(self._running_returns[done].tolist())
            self._running_returns[done] = 0.0
            tasks = self._draw_tasks(int(done.sum()))
            observation = self.env.reset_slots(done, tasks, self.rng)
            self.elapsed[done] = 0
        reward = result.reward.astype(np.float32)
        return observation.astype(np.float32), reward, done, infos

    def close(self) -> None:
        self.env.close()

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        """Re-seed the reset noise (the task stream is the family's own)."""
        self.rng = np.random.default_rng(seed)
        return [seed] * self.num_envs

    # SB3's attribute plumbing: the slots share one family, so there is one object to ask.
    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        method = getattr(self, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices: None | int | Iterable[int]) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)
