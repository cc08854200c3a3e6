"""Task families for meta-reinforcement learning, and their gymnasium registration.

``make_family(name, seed=..., **kwargs)`` builds a task family by name; every family is also
registered with gymnasium as ``metarl/{name}-v0``: ``gymnasium.make`` gives one task of it
(:mod:`metarl.envs.gym_env`), ``gymnasium.make_vec`` its batched simulator as a vector
environment (:mod:`metarl.envs.vector_env`)."""

from __future__ import annotations

import difflib
import functools
from typing import Any

import gymnasium as gym

from metarl.envs.ant import AntDir, AntGoal, AntVel
from metarl.envs.base import (
    BatchedEnv,
    RenderError,
    StepResult,
    Task,
    TaskFamily,
    default_num_threads,
)
from metarl.envs.gym_env import FAMILY_ENVS, TaskEnv
from metarl.envs.half_cheetah import HalfCheetahDir, HalfCheetahVel
from metarl.envs.navigation import Navigation2D
from metarl.envs.vector_env import TaskVectorEnv, make_vector_env

FAMILIES: dict[str, type[TaskFamily]] = {
    Navigation2D.name: Navigation2D,
    HalfCheetahVel.name: HalfCheetahVel,
    HalfCheetahDir.name: HalfCheetahDir,
    AntVel.name: AntVel,
    AntDir.name: AntDir,
    AntGoal.name: AntGoal,
}


def family_class(name: str) -> type[TaskFamily]:
    """The family class called ``name``; a clear error with a suggestion otherwise."""
    if name not in FAMILIES:
        close = difflib.get_close_matches(name, FAMILIES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown task family {name!r}{hint}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def make_family(name: str, seed: int | None = None, **kwargs: Any) -> TaskFamily:
    """Build the task family ``name`` with its keyword arguments."""
    return family_class(name)(seed=seed, **kwargs)


def make_task_env(family: str, **kwargs: Any) -> TaskEnv:
    """A single-task environment of ``family`` (what ``gymnasium.make`` builds for its id)."""
    family_class(family)
    return FAMILY_ENVS[family](**kwargs)


def _register_all() -> None:
    for name, family in FAMILIES.items():
        env_id = f"metarl/{name}-v0"
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=f"metarl.envs.gym_env:{FAMILY_ENVS[name].__name__}",
                vector_entry_point=functools.partial(make_vector_env, family),
                max_episode_steps=None,  # the environment truncates at its preset's horizon
                disable_env_checker=False,
            )


_register_all()

__all__ = [
    "FAMILIES",
    "BatchedEnv",
    "RenderError",
    "StepResult",
    "Task",
    "TaskEnv",
    "TaskFamily",
    "TaskVectorEnv",
    "default_num_threads",
    "family_class",
    "make_family",
    "make_task_env",
]
