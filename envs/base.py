"""The task-family API shared by every environment in metarl.

A *task family* is a distribution over tasks plus the dynamics, reward, termination and
observation of one kind of environment.  A *task* is a small plain value (a dict of floats or
lists of floats) that can be saved to JSON, e.g. ``{"goal": [0.1, -0.3]}``.

Two views of the same family are built from one implementation:

* :class:`BatchedEnv` steps ``num_envs`` environments together, slot ``i`` set to its own task;
  arrays are shaped ``[num_envs, ...]``.  Slots whose episode ended are *masked*, never reset
  mid-batch: they keep their last observation and receive zero reward.
* :class:`metarl.envs.gym_env.TaskEnv` is a standard single-task :class:`gymnasium.Env` that wraps a
  batch of one, so batched and single-task environments agree exactly.

envs/ knows nothing of torch or of learning code: everything here is numpy.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RENDER_SIZE = 480
"""Default side of a rendered frame, pixels."""

Task = dict[str, Any]
"""A task: JSON-serialisable dict of floats / lists of floats, e.g. ``{"velocity": 1.2}``."""


def default_num_threads() -> int:
    """Threads used for stepping: the cores this process may run on (where the system says,
    as Linux does), else all the machine's cores."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class RenderError(RuntimeError):
    """A frame cannot be rendered here (no offscreen OpenGL context could be made)."""


@dataclass
class StepResult:
    """What :meth:`BatchedEnv.step` returns, every array shaped ``[num_envs, ...]``.

    ``reward`` and ``terminated`` are only meaningful for slots that were alive before the step;
    ``info`` holds one array per reward term (``reward_*``) plus any family-specific values.
    """

    observation: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    info: dict[str, np.ndarray] = field(default_factory=dict)


class BatchedEnv(ABC):
    """``num_envs`` environments of one family, stepped together in one call.

    Usage::

        env = family.make_batched_env(num_envs)
        env.set_tasks(tasks)              # one task per slot
        obs = env.reset(rng)              # [num_envs, observation_dim]
        for t in range(env.horizon):
            result = env.step(actions)    # actions in [-1, 1]^action_dim (clipped here)

    After a slot terminates, ``alive`` is False for it; further steps leave its observation
    unchanged and give it zero reward.  Truncation at ``horizon`` is the caller's business.
    """

    observation_dim: int
    action_dim: int
    horizon: int
    metadata: dict[str, Any] = {"render_modes": [], "render_fps": 30}

    def __init__(self, num_envs: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.tasks: list[Task] = []
        self.alive = np.ones(num_envs, dtype=bool)

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        """Assign one task per slot (``len(tasks) == num_envs``)."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} tasks, got {len(tasks)}")
        self.tasks = [dict(task) for task in tasks]
        self._on_tasks_set()

    @abstractmethod
    def _on_tasks_set(self) -> None:
        """Cache the task parameters as arrays after :meth:`set_tasks`."""

    @abstractmethod
    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """Reset every slot (noise drawn from ``rng``); return observations ``[num_envs, obs]``."""

    @abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Advance every alive slot by one control step."""

    def reset_slots(
        self, slots: np.ndarray, tasks: Sequence[Task], rng: np.random.Generator
    ) -> np.ndarray:
        """Start a new episode in each of the ``slots`` (a boolean mask), with ``tasks`` in
        slot order, leaving the others as they are; returns every slot's observation.  For
        vectorised training, where each slot resets as soon as its episode ends."""
        raise NotImplementedError(f"{type(self).__name__} cannot reset single slots")

    def end_slots(self, slots: np.ndarray) -> None:
        """End the episodes of the ``slots`` (a boolean mask) now, as if they had terminated:
        no step simulates them again before a reset.  For batches that need fewer episodes
        of some tasks than they have slots."""
        self.alive = self.alive & ~slots

    def _assign_tasks(self, slots: np.ndarray, tasks: Sequence[Task]) -> np.ndarray:
        """Give the ``slots`` their new ``tasks``; returns the slots' indices."""
        index = np.flatnonzero(slots)
        if len(tasks) != len(index):
            raise ValueError(f"expected {len(index)} tasks, got {len(tasks)}")
        for slot, task in zip(index, tasks):
            self.tasks[slot] = dict(task)
        self._on_tasks_set()
        return index

    def use_threads(self, num_threads: int) -> None:  # noqa: B027 - families that can
        """Step on ``num_threads`` threads from now on (where the family steps in threads)."""

    def render(self, index: int = 0, size: int = RENDER_SIZE) -> np.ndarray:
        """RGB frame ``[size, size, 3]`` of slot ``index`` at its current state (families that
        can render)."""
        raise NotImplementedError(f"{type(self).__name__} cannot render")

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release renderers or other resources."""


def task_features(task: Task) -> np.ndarray:
    """A task's parameters as one flat vector, its values in key order: what an oracle sees."""
    return np.concatenate([np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in task.values()])


def uniform_goals(rng: np.random.Generator, goal_range: float, num_tasks: int) -> list[Task]:
    """``num_tasks`` tasks ``{"goal": [x, y]}``, the goals drawn from ``U[-goal_range,
    goal_range]^2``."""
    goals = rng.uniform(-goal_range, goal_range, size=(num_tasks, 2))
    return [{"goal": [float(x), float(y)]} for x, y in goals]


class OracleObservation(BatchedEnv):
    """``env`` with each slot's task parameters (:func:`task_features`) appended to its
    observation: the paper's "oracle", a policy told the task.  Everything else is ``env``'s."""

    def __init__(self, env: BatchedEnv, num_task_features: int) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.tasks = []
        self.observation_dim = env.observation_dim + num_task_features
        self.action_dim, self.horizon, self.metadata = env.action_dim, env.horizon, env.metadata
        self._features = np.zeros((env.num_envs, num_task_features))

    @property
    def alive(self) -> np.ndarray:  # type: ignore[override]
        return self.env.alive

    def end_slots(self, slots: np.ndarray) -> None:
        self.env.end_slots(slots)

    def set_tasks(self, tasks: Sequence[Task]) -> None:
        super().set_tasks(tasks)
        self.env.set_tasks(self.tasks)

    def _on_tasks_set(self) -> None:
        self._features = np.stack([task_features(task) for task in self.tasks])

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        return np.concatenate([self.env.reset(rng), self._features], axis=1)

    def step(self, action: np.ndarray) -> StepResult:
        result = self.env.step(action)
        result.observation = np.concatenate([result.observation, self._features], axis=1)
        return result

    def reset_slots(
        self, slots: np.ndarray, tasks: Sequence[Task], rng: np.random.Generator
    ) -> np.ndarray:
        index = self._assign_tasks(slots, tasks)
        self._features[index] = [task_features(task) for task in tasks]
        return np.concatenate([self.env.reset_slots(slots, tasks, rng), self._features], axis=1)

    def use_threads(self, num_threads: int) -> None:
        self.env.use_threads(num_threads)

    def render(self, index: int = 0, size: int = RENDER_SIZE) -> np.ndarray:
        return self.env.render(index, size)

    def close(self) -> None:
        self.env.close()


class TaskFamily(ABC):
    """A distribution over tasks plus the environment they parametrise.

    Tasks are drawn from ``self.rng``, a :class:`numpy.random.Generator` seeded at construction
    (never global numpy state); its state can be saved and restored via ``rng.bit_generator.state``.
    Keyword arguments of subclasses (reward weights, ranges, horizon, physics preset) configure
    both the task distribution and the environment.
    """

    name: str
    """Family name used in configs and gymnasium ids (``metarl/{name}-v{N}``, :func:`env_id`)."""
    task_dim: int
    """Length of a task's :func:`task_features`, appended to the observation by ``oracle``."""
    render_modes: tuple[str, ...] = ()
    """Render modes of its environments (gymnasium's ``metadata["render_modes"]``)."""

    def __init__(self, seed: int | None = None, oracle: bool = False) -> None:
        if not isinstance(oracle, bool):
            raise ValueError(f"oracle must be true or false, got {oracle!r}")
        self.rng = np.random.default_rng(seed)
        self.oracle = oracle

    def seed(self, seed: int | None) -> None:
        """Re-seed the task generator."""
        self.rng = np.random.default_rng(seed)

    @abstractmethod
    def sample_tasks(self, num_tasks: int, rng: np.random.Generator | None = None) -> list[Task]:
        """Draw ``num_tasks`` independent tasks from the family's distribution, with ``rng``
        (default: the family's own generator)."""

    def sample_test_tasks(
        self, num_tasks: int, rng: np.random.Generator | None = None
    ) -> list[Task]:
        """Draw ``num_tasks`` tasks for held-out evaluation: from the distribution of
        :meth:`sample_tasks` (held out by the stream they come from), or from the test split of
        a family that has one (Meta-World's benchmarks)."""
        return self.sample_tasks(num_tasks, rng)

    @classmethod
    def from_env_arguments(cls, arguments: dict[str, Any]) -> TaskFamily:
        """The family of a gymnasium environment's keyword arguments (whose seed belongs to
        ``reset``, not to the family)."""
        if "seed" in arguments:
            raise ValueError("seed is not an environment argument: pass it to reset(seed=...)")
        return cls(**arguments)

    def check_render_mode(self, render_mode: str | None) -> str | None:
        """``render_mode`` if its environments can render that way (None: no rendering)."""
        if render_mode is not None and render_mode not in self.render_modes:
            modes = list(self.render_modes)
            raise ValueError(f"render_mode must be one of {modes}, got {render_mode!r}")
        return render_mode

    def check_task(self, task: Any) -> Task:
        """``task`` as a task of this family; a clear error unless it has the family's keys and
        number of parameters."""
        keys = sorted(self.sample_tasks(1, np.random.default_rng(0))[0])
        if not isinstance(task, dict) or sorted(task) != keys:
            raise ValueError(f"a {self.name} task is a dict with keys {keys}, got {task!r}")
        try:
            size = task_features(task).size
        except (TypeError, ValueError):
            size = -1
        if size != self.task_dim:
            raise ValueError(
                f"a {self.name} task has {self.task_dim} number(s) in {keys}, got {task!r}"
            )
        return dict(task)

    steps_without_gil: bool = False
    """Whether its batched environments step outside Python's GIL (in C), so that several of
    them can step at once on separate threads (the sampler's lanes)."""

    @abstractmethod
    def make_batched_env(self, num_envs: int, num_threads: int | None = None) -> BatchedEnv:
        """A batched environment of ``num_envs`` slots configured like this family, stepping on
        ``num_threads`` threads (``None``: one per core) where it steps in parallel at all."""

    def observed(self, env: BatchedEnv) -> BatchedEnv:
        """``env`` as the policy observes it: with the task appended when ``oracle``."""
        return OracleObservation(env, self.task_dim) if self.oracle else env

    @property
    def preset(self) -> str:
        """Physics preset name (``"original"`` for families with a single physics)."""
        return "original"

    def describe_task(self, task: Task) -> str:
        """Short human-readable label of a task, for plots and videos."""
        return ", ".join(f"{key}={_format_value(value)}" for key, value in task.items())


def _format_value(value: Any) -> str:
    if isinstance(value, list | tuple | np.ndarray):
        return "(" + ", ".join(f"{float(v):+.2f}" for v in value) + ")"
    return f"{float(value):+.2f}"
