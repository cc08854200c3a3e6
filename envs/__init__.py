"""Task families for meta-reinforcement learning, and their gymnasium registration.

``make_family(name, seed=..., **kwargs)`` builds a task family by name; every family is also
registered with gymnasium as ``metarl/{name}-v{N}`` (:func:`env_id`): ``gymnasium.make`` gives
one task of it (:mod:`metarl.envs.gym_env`), ``gymnasium.make_vec`` its batched simulator as a
vector environment (:mod:`metarl.envs.vector_env`)."""

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
    "MetaWorldML1": "metarl.envs.metaworld",  # needs Meta-World (metarl.envs.metaworld_compat)
    "MetaWorldML10": "metarl.envs.metaworld",
}
# The version of a family's gymnasium id where it is not 0: raised when the family's dynamics
# or rewards change (its docstring's "Version history"); and the physics presets a version
# changed, where it left the others as they were.
VERSIONS = {"AntVel": 1, "AntDir": 1, "AntGoal": 1}
PRESETS_CHANGED = {(family, 1): ("original",) for family in ("AntVel", "AntDir", "AntGoal")}
# The families whose single-task gymnasium class lives in their own module (the others':
# metarl.envs.gym_env).
OWN_ENV_CLASS = frozenset({"MetaWorldML1", "MetaWorldML10"})
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
    try:
        module = importlib.import_module(FAMILY_MODULES[name])
    except ImportError as error:  # an optional dependency (Meta-World) is missing
        raise ValueError(f"task family {name!r} cannot load: {error}") from error
    family: type[TaskFamily] = getattr(module, name)
    return family


def make_family(name: str, seed: int | None = None, **kwargs: Any) -> TaskFamily:
    """Build the task family ``name`` with its keyword arguments."""
    return family_class(name)(seed=seed, **kwargs)


def task_env_class(family: str) -> type[TaskEnv]:
    """The single-task environment class of ``family`` (what ``gymnasium.make`` builds for its
    id)."""
    family_class(family)
    module = importlib.import_module(env_class_module(family))
    env_class: type[TaskEnv] = getattr(module, f"{family}Env")
    return env_class


def env_class_module(family: str) -> str:
    """The module of ``family``'s single-task environment class."""
    return FAMILY_MODULES[family] if family in OWN_ENV_CLASS else "metarl.envs.gym_env"


def make_task_env(family: str, **kwargs: Any) -> TaskEnv:
    """A single-task environment of ``family`` (what ``gymnasium.make`` builds for its id)."""
    return task_env_class(family)(**kwargs)


def make_task_vector_env(family: str, **kwargs: Any) -> TaskVectorEnv:
    """``num_envs`` environments of ``family`` stepped as one batch (what
    ``gymnasium.make_vec`` builds for its id)."""
    from metarl.envs.vector_env import make_vector_env

    return make_vector_env(family_class(family), **kwargs)


def env_id(family: str) -> str:
    """The gymnasium id of ``family``: ``metarl/{family}-v{version}``."""
    return f"metarl/{family}-v{VERSIONS.get(family, 0)}"


def changed_since(family: str, version: int, physics: str | None) -> bool:
    """Whether ``family`` under the physics preset ``physics`` (None: a family without presets)
    is not what it was at ``version``: a later version changed it, or ``version`` is newer than
    this metarl's."""
    now = VERSIONS.get(family, 0)
    changed = (PRESETS_CHANGED.get((family, v), [physics]) for v in range(version + 1, now + 1))
    return version > now or any(physics in presets for presets in changed)


def _register_all() -> None:
    for name in FAMILY_MODULES:
        if env_id(name) not in gym.registry:
            gym.register(
                id=env_id(name),
                entry_point=f"{env_class_module(name)}:{name}Env",
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
    "changed_since",
    "default_num_threads",
    "env_id",
    "family_class",
    "make_family",
    "make_task_env",
    "task_env_class",
    "make_task_vector_env",
]
