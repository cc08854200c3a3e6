"""Single-task :class:`gymnasium.Env` classes built on a batch of one of any task family.

``gymnasium.make("metarl/<Family>-vN", task=..., **family_arguments)`` builds the family's class
below (``HalfCheetahVelEnv`` for ``HalfCheetahVel``); :class:`TaskEnv` wraps a family object.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from metarl.envs.ant import AntDir, AntGoal, AntVel
from metarl.envs.base import Task, TaskFamily
from metarl.envs.half_cheetah import HalfCheetahDir, HalfCheetahVel
from metarl.envs.navigation import Navigation2D


class TaskEnv(gym.Env[np.ndarray, np.ndarray]):
    """One environment of a task family, with the standard gymnasium API.

    Tasks across resets:

    * a task set explicitly (``task=`` at construction, ``env.unwrapped.set_task(task)`` or
      ``reset(options={"task": task})``) is kept by every later reset, seeded or not;
    * otherwise ``reset(seed=s)`` draws the task from ``env.np_random`` just seeded with ``s``
      (so the seed alone determines the task and the start), and an unseeded reset keeps the
      current task (the first one draws it): several episodes of one task, as adaptation needs.

    The current task is ``env.unwrapped.task`` and is reported in ``info["task"]``.  The episode
    is truncated after the family's ``horizon`` steps (its preset's, or its ``horizon`` argument),
    which ``env.spec.max_episode_steps`` reports; gymnasium adds no ``TimeLimit`` of its own.
    Dynamics, rewards and observations are those of the family's batched environment with one
    slot, so both agree exactly for the same task, noise and actions.
    """

    metadata: dict[str, Any] = {"render_modes": [], "render_fps": 30}

    def __init__(
        self, family: TaskFamily, render_mode: str | None = None, task: Task | None = None
    ) -> None:
        self.family = family
        self._batch = family.make_batched_env(1)
        self.metadata = {
            "render_modes": list(family.render_modes),
            "render_fps": self._batch.metadata.get("render_fps", 30),
        }
        self.render_mode = family.check_render_mode(render_mode)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, shape=(self._batch.observation_dim,), dtype=np.float64
        )
        self.action_space = gym.spaces.Box(
            -1.0, 1.0, shape=(self._batch.action_dim,), dtype=np.float32
        )
        self.task: Task | None = None
        self.task_is_fixed = False
        self._elapsed = 0
        self._spec: EnvSpec | None = None
        if task is not None:
            self.set_task(task)

    @property
    def horizon(self) -> int:
        return self._batch.horizon

    @property
    def spec(self) -> EnvSpec | None:  # type: ignore[override]
        """gymnasium's spec, its ``max_episode_steps`` the family's horizon."""
        return self._spec

    @spec.setter
    def spec(self, spec: EnvSpec | None) -> None:
        if spec is not None and spec.max_episode_steps is None:
            spec = dataclasses.replace(spec, max_episode_steps=self.horizon)
        self._spec = spec

    def set_task(self, task: Task | None) -> None:
        """Use ``task`` from the next reset on, whatever its seed (None: draw tasks again)."""
        self.task_is_fixed = task is not None
        if task is not None:
            self.task = self.family.check_task(task)
            self._batch.set_tasks([self.task])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        if not self.task_is_fixed and (seed is not None or self.task is None):
            self.task = self.family.sample_tasks(1, self.np_random)[0]
            self._batch.set_tasks([self.task])
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


class FamilyEnv(TaskEnv):
    """A :class:`TaskEnv` of the family ``family_class``, built from its keyword arguments: the
    gymnasium entry point of ``metarl/<Family>-vN``."""

    family_class: ClassVar[type[TaskFamily]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # what gymnasium.make reads before building one; an instance adds its render_fps
        cls.metadata = {"render_modes": list(cls.family_class.render_modes)}

    def __init__(
        self, render_mode: str | None = None, task: Task | None = None, **family_arguments: Any
    ) -> None:
        family = self.family_class.from_env_arguments(family_arguments)
        super().__init__(family, render_mode, task)


class Navigation2DEnv(FamilyEnv):
    """``metarl/Navigation2D-v0``: one task of :class:`~metarl.envs.navigation.Navigation2D`."""

    family_class = Navigation2D


class HalfCheetahVelEnv(FamilyEnv):
    """``metarl/HalfCheetahVel-v0``: one task of :class:`~metarl.envs.HalfCheetahVel`."""

    family_class = HalfCheetahVel


class HalfCheetahDirEnv(FamilyEnv):
    """``metarl/HalfCheetahDir-v0``: one task of :class:`~metarl.envs.HalfCheetahDir`."""

    family_class = HalfCheetahDir


class AntVelEnv(FamilyEnv):
    """``metarl/AntVel-v1``: one task of :class:`~metarl.envs.AntVel`."""

    family_class = AntVel


class AntDirEnv(FamilyEnv):
    """``metarl/AntDir-v1``: one task of :class:`~metarl.envs.AntDir`."""

    family_class = AntDir


class AntGoalEnv(FamilyEnv):
    """``metarl/AntGoal-v1``: one task of :class:`~metarl.envs.AntGoal`."""

    family_class = AntGoal
