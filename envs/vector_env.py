"""A task family's batched environment as a :class:`gymnasium.vector.VectorEnv`.

``gymnasium.make_vec("metarl/<Family>-vN", num_envs=n)`` builds it (the registrations'
``vector_entry_point``): the ``n`` environments step together in one call, in C for the MuJoCo
families, instead of one Python environment each as ``vectorization_mode="sync"`` or ``"async"``
would.  Sub-environment ``i`` behaves exactly as the single-task environment ``i`` of
``make_vec(..., vectorization_mode="sync")`` does, for the same seed and actions.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from metarl.envs.base import Task, TaskFamily


class TaskVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` single-task environments of ``family`` with gymnasium's vector API.

    Each sub-environment keeps its own task and random generator, as
    :class:`~metarl.envs.gym_env.TaskEnv` does: ``reset(seed=s)`` seeds sub-environment ``i``
    with ``s + i`` and draws its task from that generator, unless tasks were set explicitly
    (``task=`` for all, or ``reset(options={"tasks": [...]})``, one each); an unseeded reset keeps
    the tasks.  Episodes end by termination or after ``max_episode_steps`` steps, or the family's
    horizon if sooner (as the single-task environment truncates there), and restart with
    gymnasium 1.x's next-step autoreset: the step after an episode's end returns the new
    episode's first observation, zero reward and ``False`` flags, ignoring that
    sub-environment's action.  ``info`` holds each reward term and ``task``, each with its
    ``_key`` mask, as gymnasium's own vector environments group them.
    """

    def __init__(
        self,
        family: TaskFamily,
        num_envs: int,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        task: Task | None = None,
    ) -> None:
        self.family = family
        self.env = family.make_batched_env(num_envs)
        self.num_envs = num_envs
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        self.max_episode_steps = min(max_episode_steps or self.env.horizon, self.env.horizon)
        self.render_mode = family.check_render_mode(render_mode)
        self.metadata = {
            "render_modes": list(family.render_modes),
            "render_fps": self.env.metadata.get("render_fps", 30),
            "autoreset_mode": AutoresetMode.NEXT_STEP,
        }
        self.single_observation_space = gym.spaces.Box(
            -np.inf, np.inf, shape=(self.env.observation_dim,), dtype=np.float64
        )
        self.single_action_space = gym.spaces.Box(
            -1.0, 1.0, shape=(self.env.action_dim,), dtype=np.float32
        )
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.tasks: list[Task | None] = [None] * num_envs
        self.tasks_are_fixed = task is not None
        if task is not None:
            self.tasks = [family.check_task(task)] * num_envs
        self.rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        self.elapsed = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._task_info: dict[str, Any] = {}

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = self._seeds(seed)
        for slot, slot_seed in enumerate(seeds):
            if slot_seed is not None:
                self.rngs[slot] = seeding.np_random(slot_seed)[0]
        if options and "tasks" in options:
            self._set_tasks(options["tasks"])
        for slot, slot_seed in enumerate(seeds):
            if not self.tasks_are_fixed and (slot_seed is not None or self.tasks[slot] is None):
                self.tasks[slot] = self.family.sample_tasks(1, self.rngs[slot])[0]
        self.env.set_tasks(self._current_tasks())
        self.env.reset(np.random.default_rng(0))  # a start for every slot, replaced just below
        observation = self._restart(np.ones(self.num_envs, dtype=bool))
        self.elapsed[:] = 0
        self._autoreset[:] = False
        self._task_info = self._group_tasks()
        return observation, copy.deepcopy(self._task_info)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        restarting = self._autoreset
        result = self.env.step(np.asarray(actions, dtype=np.float64))
        observation = result.observation
        self.elapsed += 1
        if restarting.any():
            observation = self._restart(restarting)
            self.elapsed[restarting] = 0
        stepped = ~restarting
        reward = np.where(stepped, result.reward, 0.0)
        terminated = stepped & result.terminated
        truncated = stepped & ~terminated & (self.elapsed >= self.max_episode_steps)
        self._autoreset = terminated | truncated
        info: dict[str, Any] = {}
        for key, values in result.info.items() if stepped.any() else ():
            info[key] = np.where(stepped, values, 0.0)
            info[f"_{key}"] = stepped.copy()
        info.update(copy.deepcopy(self._task_info))
        return observation, reward, terminated, truncated, info

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(self.env.render(slot) for slot in range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int):
            return [seed + slot for slot in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} seeds, got {len(seed)}")
        return list(seed)

    def _set_tasks(self, tasks: Sequence[Task] | None) -> None:
        """Fix one task per sub-environment (None: draw tasks again from the next seeded reset)."""
        self.tasks_are_fixed = tasks is not None
        if tasks is None:
            return
        if len(tasks) != self.num_envs:
            raise ValueError(f"options['tasks'] needs {self.num_envs} tasks, got {len(tasks)}")
        self.tasks = [self.family.check_task(task) for task in tasks]  # type: ignore[misc]

    def _current_tasks(self) -> list[Task]:
        assert all(task is not None for task in self.tasks), "every slot has a task after reset"
        return [task for task in self.tasks if task is not None]

    def _restart(self, slots: np.ndarray) -> np.ndarray:
        """Start a new episode of its task in each of the ``slots``, each with the noise of its
        own generator; returns every slot's observation."""
        tasks = self._current_tasks()
        observation = np.empty(0)
        for slot in np.flatnonzero(slots):
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[slot] = True
            observation = self.env.reset_slots(mask, [tasks[slot]], self.rngs[slot])
        return observation

    def _group_tasks(self) -> dict[str, Any]:
        """``{"task": ..., "_task": ...}`` grouped as gymnasium's vector environments group the
        infos of their sub-environments (``_add_info``): one array per task key, with its mask."""
        grouped: dict[str, Any] = {}
        for slot, task in enumerate(self._current_tasks()):
            grouped = self._add_info(grouped, {"task": copy.deepcopy(task)}, slot)
        return grouped


def make_vector_env(
    family_class: type[TaskFamily],
    num_envs: int = 1,
    max_episode_steps: int | None = None,
    render_mode: str | None = None,
    task: Task | None = None,
    **family_arguments: Any,
) -> TaskVectorEnv:
    """The ``vector_entry_point`` of ``metarl/<Family>-vN``: a :class:`TaskVectorEnv` of
    ``family_class`` built from its keyword arguments."""
    family = family_class.from_env_arguments(family_arguments)
    return TaskVectorEnv(family, num_envs, max_episode_steps, render_mode, task)
