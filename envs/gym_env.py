"""A single-task :class:`gymnasium.Env` built on a batch of one of any task family."""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.envs.base import Task, TaskFamily


class TaskEnv(gym.Env[np.ndarray, np.ndarray]):
    """One environment of a task family, with the standard gymnasium API.

    The task is set with ``env.unwrapped.set_task(task)`` or ``env.reset(options={"task": task})``;
    when none was set, the first reset draws one from the family (seeded by ``reset(seed=...)``).
    The current task is ``env.unwrapped.task`` and is reported in ``info["task"]``.
    Dynamics, rewards and observations are those of the family's batched environment with one slot,
    so both agree exactly for the same task, seed and actions.
    """

    def __init__(self, family: TaskFamily, render_mode: str | None = None) -> None:
        self.family = family
        self._batch = family.make_batched_env(1)
        render_modes = list(self._batch.metadata.get("render_modes", []))
        self.metadata = {
            "render_modes": render_modes,
            "render_fps": self._batch.metadata.get("render_fps", 30),
        }
        if render_mode is not None and render_mode not in render_modes:
            raise ValueError(f"render_mode must be one of {render_modes}, got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, shape=(self._batch.observation_dim,), dtype=np.float64
        )
        self.action_space = gym.spaces.Box(
            -1.0, 1.0, shape=(self._batch.action_dim,), dtype=np.float32
        )
        self.task: Task | None = None
        self._elapsed = 0

    @property
    def horizon(self) -> int:
        return self._batch.horizon

    def set_task(self, task: Task) -> None:
        """Set the task used from the next reset on."""
        self.task = dict(task)
        self._batch.set_tasks([self.task])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.family.seed(seed)
        if options and "task" in options:
            self.set_task(options["task"])
        elif self.task is None:
            self.set_task(self.family.sample_tasks(1)[0])
        self._elapsed = 0
        observation = self._batch.reset(self.np_random)
        return observation[0].copy(), {"task": copy.deepcopy(self.task)}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        result = self._batch.step(np.asarray(action, dtype=np.float64).reshape(1, -1))
        self._elapsed += 1
        info: dict[str, Any] = {key: float(value[0]) for key, value in result.info.items()}
        info["task"] = copy.deepcopy(self.task)
        terminated = bool(result.terminated[0])
        truncated = self._elapsed >= self.horizon and not terminated
        return result.observation[0].copy(), float(result.reward[0]), terminated, truncated, info

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        if self.render_mode is None:
            return None
        return self._batch.render(0)

    def close(self) -> None:
        self._batch.close()
