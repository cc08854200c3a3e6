"""The stable-baselines3 VecEnv over the batched environments: the single gymnasium environment's
dynamics, per-slot automatic resets with a new task each episode, and the oracle's layout."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from metarl import envs
from metarl.agents.common.vec_env import TaskVecEnv
from metarl.envs.base import task_features

FAMILIES = [("Navigation2D", {}), ("HalfCheetahVel", {}), ("AntVel", {}), ("AntDir", {})]


@pytest.mark.parametrize(("name", "kwargs"), FAMILIES, ids=[name for name, _ in FAMILIES])
def test_one_slot_matches_the_gymnasium_environment(name: str, kwargs: dict) -> None:
    vec = TaskVecEnv(envs.make_family(name, seed=4, **kwargs), 1, seed=4)
    single = gym.make(envs.env_id(name), **kwargs)
    observation = vec.reset()
    expected, info = single.reset(seed=4, options={"task": vec.tasks[0]})
    np.testing.assert_allclose(observation[0], expected, rtol=1e-6)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 1, vec.action_space.shape[0]))
    for action in actions:
        observation, reward, done, _ = vec.step(action)
        expected, expected_reward, terminated, truncated, _ = single.step(action[0])
        assert not done[0] and not (terminated or truncated)
        np.testing.assert_allclose(observation[0], expected, rtol=1e-5, atol=1e-6)
        assert reward[0] == pytest.approx(expected_reward, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("oracle", [False, True], ids=["plain", "oracle"])
def test_horizon_ends_reset_each_slot_with_the_next_tasks_of_the_stream(oracle: bool) -> None:
    family = envs.make_family("HalfCheetahVel", seed=1, horizon=5, oracle=oracle)
    stream = envs.make_family("HalfCheetahVel", seed=1).sample_tasks(9)
    vec = TaskVecEnv(family, 3, seed=0)
    vec.reset()
    reference = envs.make_family("HalfCheetahVel", horizon=5, oracle=oracle).make_batched_env(3)
    reference.set_tasks(stream[:3])
    reference.reset(np.random.default_rng(0))
    actions = np.random.default_rng(2).uniform(-1, 1, size=(10, 3, 6))
    for t, action in enumerate(actions, start=1):
        observation, _, done, infos = vec.step(action)
        expected = reference.step(action).observation.astype(np.float32)  # first episode only
        assert done.all() == (t % 5 == 0) and done.any() == done.all()
        if t <= 5:
            terminal = np.stack([i["terminal_observation"] for i in infos]) if t == 5 else None
            np.testing.assert_allclose(observation if t < 5 else terminal, expected, rtol=1e-6)
        if t % 5 == 0:
            assert all(info["TimeLimit.truncated"] is True for info in infos)
            assert vec.tasks == stream[3 * (t // 5) : 3 * (t // 5) + 3]
        if oracle:
            features = np.stack([task_features(task) for task in vec.tasks])
            np.testing.assert_allclose(observation[:, -1:], features, rtol=1e-6)


def test_terminated_slots_restart_alone() -> None:
    family = envs.make_family("Navigation2D", seed=0, goal_range=0.05, max_step=0.1)
    vec = TaskVecEnv(family, 4, seed=0)
    vec.reset()
    goals = np.array([task["goal"] for task in vec.tasks])
    action = np.zeros((4, 2))
    action[0] = goals[0] / 0.1  # slot 0 lands on its goal in one step
    observation, reward, done, infos = vec.step(action)
    assert done.tolist() == [True, False, False, False]
    assert infos[0]["TimeLimit.truncated"] is False
    np.testing.assert_allclose(infos[0]["terminal_observation"], goals[0], rtol=1e-6)
    np.testing.assert_array_equal(observation[0], [0.0, 0.0])  # a new episode at the origin
    assert vec.tasks[1:] == [{"goal": list(goal)} for goal in goals[1:].tolist()]
    assert vec.episode_tasks == 5 and reward[0] == pytest.approx(-np.linalg.norm(goals[0] * 0))


def test_ant_original_reset_slot_observes_like_a_fresh_reset() -> None:
    """Ant original observes contact forces from a forward pass: a slot reset alone must see
    what a whole fresh batch sees."""
    family = envs.make_family("AntDir", seed=0)
    env = family.make_batched_env(3)
    env.set_tasks(family.sample_tasks(3))
    env.reset(np.random.default_rng(0))
    for action in np.random.default_rng(1).uniform(-1, 1, size=(20, 3, 8)):
        env.step(action)
    tasks = family.sample_tasks(1)
    observation = env.reset_slots(np.array([False, True, False]), tasks, np.random.default_rng(5))
    fresh = family.make_batched_env(1)
    fresh.set_tasks(tasks)
    np.testing.assert_allclose(observation[1], fresh.reset(np.random.default_rng(5))[0])
    assert env.tasks[1] == tasks[0] and env.alive.all()


def test_navigation_keeps_one_episode_of_path_while_slots_reset_alone() -> None:
    """Trained through the VecEnv, a batch is never reset whole: the path kept for rendering
    stays one episode long instead of growing with every step."""
    vec = TaskVecEnv(envs.make_family("Navigation2D", seed=0, horizon=5), 3, seed=0)
    vec.reset()
    for _ in range(17):
        vec.step(np.zeros((3, 2)))
    assert len(vec.env._path) == 6
