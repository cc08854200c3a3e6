"""Task families for meta-reinforcement learning, and their gymnasium registration.

``make_family(name, seed=..., **kwargs)`` builds a task family by name; every family is also
registered with gymnasium as ``metarl/{name}-v0``: ``gymnasium.make`` gives one task of it
(:mod:`metarl.envs.gym_env`), ``gymnasium.make_vec`` its batched simulator as a vector
environment (:mod:`metarl.envs.vector_env`)."""

from __future__ import annotations

import difflib
import functools
import importlib
from typing import TYPE_CHECKING, Any

import gymnasium as gym

if TYPE_CHECKING:
    from metarl.envs.base import (
        BatchedEnv,
        RenderError,
        StepResult,
        Task,
        TaskFamily,
        default_num_threads,
    )
    from metarl.envs.gym_env import TaskEnv
    from metarl.envs.vector_env import TaskVectorEnv

    FAMILIES: dict[str, type[TaskFamily]]

# The module of each family. They import MuJoCo and numba, so they load when first used:
# importing metarl (the registration) stays cheap.
FAMILY_MODULES = {
    "Navigation2D": "metarl.envs.navigation",
    "HalfCheetahVel": "metarl.envs.half_cheetah",
    "HalfCheetahDir": "metarl.envs.half_cheetah",
    "AntVel": "metarl.envs.ant",
    "AntDir": "metarl.envs.ant",
    "AntGoal": "metarl.envs.ant",
}
_LAZY_NAMES = {
    "BatchedEnv": "base",
    "RenderError": "base",
    "StepResult": "base",
    "Task": "base",
    "TaskFamily": "base",
    "default_num_threads": "base",
    "TaskEnv": "gym_env",
    "TaskVectorEnv": "vector_env",
}


def __getattr__(name: str) -> Any:
    """``FAMILIES`` (name -> class) and the API's classes, imported on first use."""
    if name == "FAMILIES":
        return {family: family_class(family) for family in FAMILY_MODULES}
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"metarl.envs.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'metarl.envs' has no attribute {name!r}")


def family_class(name: str) -> type[TaskFamily]:
    """The family class called ``name``; a clear error with a suggestion otherwise."""
    if name not in FAMILY_MODULES:
        close = difflib.get_close_matches(name, FAMILY_MODULES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown task family {name!r}{hint}; expected one of {sorted(FAMILY_MODULES)}"
        )
    family: type[TaskFamily] = getattr(importlib.import_module(FAMILY_MODULES[name]), name)
    return family


def make_family(name: str, seed: int | None = None, **kwargs: Any) -> TaskFamily:
    """Build the task family ``name`` with its keyword arguments."""
    return family_class(name)(seed=seed, **kwargs)


def make_task_env(family: str, **kwargs: Any) -> TaskEnv:
    """A single-task environment of ``family`` (what ``gymnasium.make`` builds for its id)."""
    from metarl.envs.gym_env import FAMILY_ENVS

    family_class(family)
    return FAMILY_ENVS[family](**kwargs)


def make_task_vector_env(family: str, **kwargs: Any) -> TaskVectorEnv:
    """``num_envs`` environments of ``family`` stepped as one batch (what
    ``gymnasium.make_vec`` builds for its id)."""
    from metarl.envs.vector_env import make_vector_env

    return make_vector_env(family_class(family), **kwargs)


def _register_all() -> None:
    for name in FAMILY_MODULES:
        env_id = f"metarl/{name}-v0"
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=f"metarl.envs.gym_env:{name}Env",
                vector_entry_point=functools.partial(make_task_vector_env, name),
                max_episode_steps=None,  # the environment truncates at its preset's horizon
                disable_env_checker=False,
            )


_register_all()

__all__ = [
    "FAMILIES",
    "FAMILY_MODULES",
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
    "make_task_vector_env",
]
