"""Navigation2D against hand computation, and as a gymnasium environment."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from metarl import envs
from metarl.envs.navigation import BatchedNavigation2D, Navigation2D


def _batch(goals: list[list[float]], **kwargs: float) -> BatchedNavigation2D:
    env = Navigation2D(**kwargs).make_batched_env(len(goals))
    env.set_tasks([{"goal": g} for g in goals])
    env.reset(np.random.default_rng(0))
    return env


def test_action_mapping_reward_and_clipping_by_hand() -> None:
    env = _batch([[0.3, -0.2], [0.0, 0.0]])
    result = env.step(np.array([[0.5, -3.0], [1.0, 1.0]]))
    np.testing.assert_allclose(result.observation, [[0.05, -0.1], [0.1, 0.1]])
    expected = [-np.hypot(0.05 - 0.3, -0.1 + 0.2), -np.hypot(0.1, 0.1)]
    np.testing.assert_allclose(result.reward, expected)
    np.testing.assert_allclose(result.info["reward_distance"], result.reward)
    assert not result.terminated.any()


def test_termination_within_tolerance_on_both_axes_and_masking() -> None:
    env = _batch([[0.1, 0.1], [0.1, 0.5], [0.105, 0.095]])
    result = env.step(np.ones((3, 2)))  # all move to (0.1, 0.1)
    assert list(result.terminated) == [True, False, True]
    assert list(env.alive) == [False, True, False]
    frozen = result.observation.copy()
    result = env.step(np.ones((3, 2)))
    np.testing.assert_allclose(result.observation[[0, 2]], frozen[[0, 2]])
    assert list(result.reward[[0, 2]]) == [0.0, 0.0]
    assert not result.terminated.any()
    np.testing.assert_allclose(result.observation[1], [0.2, 0.2])


def test_task_distribution_and_seeding() -> None:
    goals = np.array([t["goal"] for t in Navigation2D(seed=3).sample_tasks(5000)])
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert abs(goals.mean()) < 0.02 and abs(goals.std() - 1 / np.sqrt(12)) < 0.01
    assert Navigation2D(seed=3).sample_tasks(4) == Navigation2D(seed=3).sample_tasks(4)
    assert Navigation2D(seed=3).sample_tasks(4) != Navigation2D(seed=4).sample_tasks(4)
    wide = np.array([t["goal"] for t in Navigation2D(seed=0, goal_range=2.0).sample_tasks(500)])
    assert np.abs(wide).max() > 1.5


@pytest.mark.parametrize("argument", ["goal_range", "max_step", "goal_tolerance", "horizon"])
def test_bad_arguments_are_refused_with_their_name(argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        Navigation2D(**{argument: 0})


def test_gymnasium_registration_and_checker() -> None:
    env = gym.make("metarl/Navigation2D-v0")
    check_env(env.unwrapped, skip_render_check=True)
    observation, info = env.reset(seed=1, options={"task": {"goal": [0.2, 0.1]}})
    assert env.unwrapped.task == {"goal": [0.2, 0.1]} and info["task"] == {"goal": [0.2, 0.1]}
    np.testing.assert_allclose(observation, [0.0, 0.0])
    _, reward, terminated, truncated, info = env.step(np.array([1.0, 1.0], dtype=np.float32))
    assert reward == pytest.approx(-np.hypot(0.1, 0.0))
    assert info["task"] == {"goal": [0.2, 0.1]} and not terminated and not truncated
    env.unwrapped.set_task({"goal": [-0.3, 0.3]})
    env.reset()
    assert env.unwrapped.task == {"goal": [-0.3, 0.3]}


def test_single_env_truncates_at_horizon_and_matches_batch() -> None:
    env = envs.make_task_env("Navigation2D", horizon=7)
    env.reset(seed=0, options={"task": {"goal": [0.4, -0.4]}})
    batch = _batch([[0.4, -0.4]], horizon=7)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(7, 2))
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, _ = env.step(action)
        result = batch.step(action[None])
        np.testing.assert_array_equal(obs, result.observation[0])
        assert reward == result.reward[0]
        assert truncated == (t == 6) and not terminated


def test_pickling_and_seeded_task_draws() -> None:
    env = gym.make("metarl/Navigation2D-v0")
    _, info_a = env.reset(seed=5)
    _, info_b = pickle.loads(pickle.dumps(env)).reset(seed=5)
    assert info_a["task"] == info_b["task"]
