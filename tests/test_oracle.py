"""``oracle=True``: every family's observation followed by the task's parameters (the paper's
oracle baseline), the dynamics and rewards unchanged."""

from __future__ import annotations

import inspect

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from metarl import envs
from metarl.envs.base import task_features

NAMES = sorted(  # the families with an oracle (Meta-World's benchmarks have none)
    name
    for name, family in envs.FAMILIES.items()
    if "oracle" in inspect.signature(family.__init__).parameters
)


@pytest.mark.parametrize("name", NAMES)
def test_oracle_appends_the_task_and_changes_nothing_else(name: str) -> None:
    plain, oracle = (envs.make_family(name, seed=3, oracle=flag) for flag in (False, True))
    tasks = plain.sample_tasks(4)
    assert oracle.sample_tasks(4) == tasks  # the same task stream
    assert all(len(task_features(task)) == oracle.task_dim for task in tasks)
    features = np.stack([task_features(task) for task in tasks])
    plain_env, oracle_env = plain.make_batched_env(4), oracle.make_batched_env(4)
    assert oracle_env.observation_dim == plain_env.observation_dim + oracle.task_dim
    for env in (plain_env, oracle_env):
        env.set_tasks(tasks)
    first = [env.reset(np.random.default_rng(0)) for env in (plain_env, oracle_env)]
    np.testing.assert_array_equal(first[1], np.hstack([first[0], features]))
    for env in (plain_env, oracle_env):
        env.end_slots(np.arange(4) == 2)  # ended in the wrapped environment as in the plain one
        np.testing.assert_array_equal(env.alive, np.arange(4) != 2)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(5, 4, plain_env.action_dim))
    for action in actions:
        a, b = plain_env.step(action), oracle_env.step(action)
        np.testing.assert_array_equal(b.observation, np.hstack([a.observation, features]))
        np.testing.assert_array_equal(b.reward, a.reward)
        np.testing.assert_array_equal(oracle_env.alive, plain_env.alive)


def test_oracle_is_a_gymnasium_argument() -> None:
    env = gym.make("metarl/HalfCheetahVel-v0", oracle=True)
    check_env(env.unwrapped, skip_render_check=True)
    observation, info = env.reset(seed=0, options={"task": {"velocity": 1.25}})
    assert env.observation_space.shape == (21,) and observation[-1] == 1.25
    assert info["task"] == {"velocity": 1.25}
