"""Task families for meta-reinforcement learning, and their gymnasium registration.

``make_family(name, seed=..., **kwargs)`` builds a task family by name; every family is also
registered with gymnasium as ``metarl/{name}-v0`` (a single-task environment)."""

from __future__ import annotations

import difflib
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
from metarl.envs.gym_env import TaskEnv
from metarl.envs.half_cheetah import HalfCheetahDir, HalfCheetahVel
from metarl.envs.navigation import Navigation2D

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


def make_task_env(
    family: str, render_mode: str | None = None, seed: int | None = None, **kwargs: Any
) -> TaskEnv:
    """Entry point of the gymnasium registrations: a single-task environment of ``family``."""
    return TaskEnv(make_family(family, seed=seed, **kwargs), render_mode=render_mode)


def _register_all() -> None:
    for name in FAMILIES:
        env_id = f"metarl/{name}-v0"
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point="metarl.envs:make_task_env",
                kwargs={"family": name},
                max_episode_steps=None,
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
    "default_num_threads",
    "family_class",
    "make_family",
    "make_task_env",
]
