"""The registered ids through gymnasium's and stable-baselines3's own entry points: render
wrappers, the ``task`` keyword, tasks across seeded resets, ``spec.max_episode_steps``, and the
batched simulator behind ``gymnasium.make_vec`` against gymnasium's own synchronous vector."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import HumanRendering, RenderCollection

from metarl import envs

IDS = [envs.env_id(name) for name in envs.FAMILIES]
TASKS = {
    "Navigation2D": {"goal": [0.2, -0.3]},
    "HalfCheetahVel": {"velocity": 1.5},
    "HalfCheetahDir": {"direction": -1.0},
    "AntVel": {"velocity": 0.5},
    "AntDir": {"direction": 1.0},
    "AntGoal": {"goal": [1.0, -2.0]},
    "MetaWorldML1": {"env": "reach-v3", "rand_vec": [0.0, 0.6, 0.02, 0.1, 0.8, 0.2]},
    "MetaWorldML10": {"env": "push-v3", "rand_vec": [0.0, 0.6, 0.02, 0.05, 0.8, 0.01]},
}


def family_of(env_id: str) -> str:
    return env_id.split("/")[1].rsplit("-v", 1)[0]


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_applies_its_render_wrappers(env_id: str) -> None:
    collecting = gym.make(env_id, render_mode="rgb_array_list")
    assert isinstance(collecting, RenderCollection)
    collecting.reset(seed=0)
    collecting.step(collecting.action_space.sample())
    frames = collecting.render()
    assert len(frames) == 2 and frames[0].ndim == 3
    collecting.close()
    assert any(
        isinstance(w, HumanRendering) for w in _wrappers(gym.make(env_id, render_mode="human"))
    )


def _wrappers(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


@pytest.mark.parametrize("env_id", IDS)
def test_task_keyword_fixes_the_task_across_seeded_resets(env_id: str) -> None:
    task = TASKS[family_of(env_id)]
    env = gym.make(env_id, task=task)
    for seed in (0, 1, None):
        _, info = env.reset(seed=seed)
        assert info["task"] == task
    _, _, _, _, info = env.step(env.action_space.sample())
    assert info["task"] == task


def test_a_seeded_reset_draws_the_task_a_fresh_environment_draws() -> None:
    used = gym.make("metarl/HalfCheetahVel-v0")
    used.reset(seed=1)
    for _ in range(3):
        used.step(used.action_space.sample())
    observation, info = used.reset(seed=7)
    fresh_observation, fresh_info = gym.make("metarl/HalfCheetahVel-v0").reset(seed=7)
    assert info["task"] == fresh_info["task"]
    np.testing.assert_array_equal(observation, fresh_observation)
    _, other = used.reset(seed=8)
    assert other["task"] != info["task"]
    _, kept = used.reset()
    assert kept["task"] == other["task"]  # an unseeded reset keeps the task


def test_options_task_overrides_and_none_draws_again() -> None:
    env = gym.make("metarl/Navigation2D-v0")
    _, info = env.reset(seed=0, options={"task": {"goal": [0.4, 0.4]}})
    assert info["task"] == {"goal": [0.4, 0.4]}
    env.unwrapped.set_task(None)
    _, info = env.reset(seed=0)
    assert info["task"] == gym.make("metarl/Navigation2D-v0").reset(seed=0)[1]["task"]


@pytest.mark.parametrize(
    "task",
    [{"velocity": 1.0}, {"goal": [0.1]}, {"goal": "far"}, [0.1, 0.2]],
    ids=["wrong-key", "wrong-size", "not-numbers", "not-a-dict"],
)
def test_a_bad_task_is_one_line_naming_the_keys(task: object) -> None:
    with pytest.raises(ValueError, match=r"Navigation2D task .*\['goal'\]") as error:
        gym.make("metarl/Navigation2D-v0", task=task)
    assert "\n" not in str(error.value)


def test_seed_is_a_reset_argument() -> None:
    with pytest.raises(ValueError, match=r"reset\(seed=\.\.\.\)"):
        gym.make("metarl/Navigation2D-v0", seed=3)


@pytest.mark.parametrize(
    ("env_id", "kwargs", "horizon"),
    [
        ("metarl/Navigation2D-v0", {}, 100),
        ("metarl/HalfCheetahVel-v0", {}, 200),
        ("metarl/HalfCheetahVel-v0", {"physics": "gymnasium"}, 100),
        ("metarl/AntGoal-v1", {"horizon": 7}, 7),
    ],
    ids=["navigation", "cheetah-original", "cheetah-gymnasium", "ant-horizon-argument"],
)
def test_max_episode_steps_is_the_horizon_and_truncates_once(
    env_id: str, kwargs: dict, horizon: int
) -> None:
    env = gym.make(env_id, task=TASKS[family_of(env_id)], **kwargs)
    assert env.spec is not None and env.spec.max_episode_steps == horizon
    assert not any(isinstance(w, gym.wrappers.TimeLimit) for w in _wrappers(env))
    env.reset(seed=0)
    far = np.ones(env.action_space.shape, dtype=np.float32)  # navigation: away from the goal
    ends = [env.step(far)[3] for _ in range(horizon)]
    assert ends == [False] * (horizon - 1) + [True]


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_steps_as_gymnasiums_sync_vector(env_id: str) -> None:
    """Same seed, same actions: the batched vector environment and ``SyncVectorEnv`` of the
    single environments agree on every output, through two next-step autoresets."""
    kwargs = {"horizon": 4}
    batched = gym.make_vec(env_id, num_envs=3, **kwargs)
    sync = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync", **kwargs)
    assert isinstance(batched, envs.TaskVectorEnv)
    assert batched.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"]
    assert batched.single_observation_space == sync.single_observation_space
    assert batched.single_action_space == sync.single_action_space
    observation, info = batched.reset(seed=5)
    expected, expected_info = sync.reset(seed=5)
    np.testing.assert_allclose(observation, expected, rtol=1e-6, atol=1e-8)
    _assert_infos_equal(info, expected_info)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(11, *batched.action_space.shape))
    ends = 0
    for action in actions:
        result = batched.step(action)
        expected_result = sync.step(action)
        for ours, theirs in zip(result[:4], expected_result[:4]):
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8)
        _assert_infos_equal(result[4], expected_result[4])
        ends += int(np.sum(expected_result[2] | expected_result[3]))
    assert ends >= 6  # two autoresets of each sub-environment


def _assert_infos_equal(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if isinstance(value, dict):
            _assert_infos_equal(ours[key], value)
        elif value.dtype == object:
            assert [np.asarray(v).tolist() for v in ours[key]] == [
                np.asarray(v).tolist() for v in value
            ]
        else:
            np.testing.assert_allclose(ours[key], value, rtol=1e-6, atol=1e-8)


def test_make_vec_options_max_steps_and_render() -> None:
    tasks = [{"velocity": 0.5}, {"velocity": 1.0}]
    env = gym.make_vec(
        "metarl/HalfCheetahVel-v0", num_envs=2, max_episode_steps=3, render_mode="rgb_array"
    )
    _, info = env.reset(seed=0, options={"tasks": tasks})
    np.testing.assert_array_equal(info["task"]["velocity"], [0.5, 1.0])
    truncated = [env.step(env.action_space.sample())[3].tolist() for _ in range(4)]
    assert truncated == [[False, False], [False, False], [True, True], [False, False]]
    _, info = env.reset(seed=1)
    np.testing.assert_array_equal(info["task"]["velocity"], [0.5, 1.0])  # fixed tasks stay
    frames = env.render()
    assert len(frames) == 2 and frames[0].shape[-1] == 3
    with pytest.raises(ValueError, match="options\\['tasks'\\] needs 2 tasks"):
        env.reset(options={"tasks": tasks[:1]})
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_stable_baselines3_trains_through_make_vec_env(env_id: str) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    vec = make_vec_env(env_id, n_envs=2, seed=0)
    model = PPO("MlpPolicy", vec, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    assert model.num_timesteps == 256
    assert any(not (b == p).all() for b, p in zip(before, model.policy.parameters()))
    tasks = vec.get_attr("task")
    assert tasks[0] != tasks[1]  # each sub-environment seeded on its own: its own task
    vec.close()
