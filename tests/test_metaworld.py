"""Meta-World's ML1 and ML10 as task families: the MuJoCo fix, every ML10 environment, the train
and test splits, stepping in worker processes, success as a metric, and the install error."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from metarl import envs
from metarl.agents.common.episodes import Episodes
from metarl.cli import main
from metarl.envs import metaworld_compat
from metarl.envs.metaworld import MetaWorldBatchedEnv, MetaWorldML1, MetaWorldML10
from metarl.envs.subprocess_env import SubprocessBatchedEnv
from metarl.logging import deterministic_fields, read_metrics
from tests.tiny_runs import tiny_flags

ML10_TRAIN = {
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "sweep-v3",
    "basketball-v3",
}
ML10_TEST = {"drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3"}


def test_the_mujoco_fix_is_still_needed_and_works() -> None:
    """Meta-World's own ``reset_mocap_welds`` still fails on this MuJoCo (if it stops failing,
    the fix can go), and the fix writes Meta-World's 11 weld values and zeroes the rest."""
    assert metaworld_compat.installed_version() == metaworld_compat.PATCHED_VERSION
    env = MetaWorldBatchedEnv(1)
    env.set_tasks(MetaWorldML1(seed=0).sample_tasks(1))
    sawyer = env._envs[0]
    with pytest.raises(ValueError, match="broadcast"):
        metaworld_compat.original_reset_mocap_welds(sawyer)
    sawyer.model.eq_data[:] = 7.0
    metaworld_compat.reset_mocap_welds(sawyer)
    welds = sawyer.model.eq_type == 1  # mjEQ_WELD
    assert welds.any() and sawyer.model.eq_data.shape[1] > len(metaworld_compat.WELD_DATA)
    np.testing.assert_array_equal(sawyer.model.eq_data[welds, :11], [metaworld_compat.WELD_DATA])
    assert (sawyer.model.eq_data[welds, 11:] == 0).all()
    env.close()


def test_every_ml10_environment_constructs_resets_and_steps() -> None:
    family = MetaWorldML10(seed=0)
    train, test = family.splits()
    assert {t["env"] for t in train} == ML10_TRAIN and {t["env"] for t in test} == ML10_TEST
    tasks = [next(t for t in [*train, *test] if t["env"] == name) for name in sorted(ML10_TRAIN)]
    tasks += [next(t for t in test if t["env"] == name) for name in sorted(ML10_TEST)]
    env = family.make_batched_env(len(tasks), num_threads=1)
    env.set_tasks(tasks)
    first = env.reset(np.random.default_rng(0))
    assert first.shape == (15, 39) and np.isfinite(first).all()
    assert (first[:, 36:] == 0).all()  # the goal is hidden
    actions = np.random.default_rng(1).uniform(-1, 1, size=(10, 15, 4))
    for action in actions:
        result = env.step(action)
        assert np.isfinite(result.observation).all()
        assert ((result.reward >= 0) & (result.reward <= 10)).all()
        assert set(np.unique(result.info["success"])) <= {0.0, 1.0}
    assert not (result.observation == first).all(axis=1).any()  # every arm moved
    env.close()


def test_the_splits_are_disjoint_and_evaluation_draws_from_the_test_split() -> None:
    ml1 = MetaWorldML1(seed=3, env_name="push-v3")
    train, test = ml1.splits()
    assert len(train) == len(test) == 50
    train_positions = {tuple(t["rand_vec"]) for t in train}
    assert train_positions.isdisjoint(tuple(t["rand_vec"]) for t in test)
    drawn = ml1.sample_tasks(30)
    assert len({tuple(t["rand_vec"]) for t in drawn}) == 30  # without replacement
    assert all(tuple(t["rand_vec"]) in train_positions for t in drawn)
    held_out = ml1.sample_test_tasks(40)
    assert all(t in test for t in held_out) and len({tuple(t["rand_vec"]) for t in held_out}) == 40
    ml10 = MetaWorldML10(seed=0)
    batch = ml10.sample_tasks(23)
    counts = {name: sum(t["env"] == name for t in batch) for name in ML10_TRAIN}
    assert set(counts.values()) == {2, 3} and sum(counts.values()) == 23  # evenly
    assert {t["env"] for t in ml10.sample_test_tasks(10)} == ML10_TEST  # skills never trained on


def test_the_seeds_fix_the_benchmark_and_the_draws() -> None:
    assert MetaWorldML1(seed=1).splits() == MetaWorldML1(seed=2).splits()
    assert MetaWorldML1(benchmark_seed=1).splits() != MetaWorldML1().splits()
    assert MetaWorldML1(seed=1).sample_tasks(5) == MetaWorldML1(seed=1).sample_tasks(5)
    assert MetaWorldML1(seed=1).sample_tasks(5) != MetaWorldML1(seed=2).sample_tasks(5)


def test_worker_processes_step_as_this_process_does() -> None:
    family = MetaWorldML10(seed=0, horizon=6)
    tasks = family.sample_tasks(5)
    local = family.make_batched_env(5, num_threads=1)
    workers = family.make_batched_env(5, num_threads=2)
    assert isinstance(workers, SubprocessBatchedEnv) and workers.num_workers == 2
    assert (workers.observation_dim, workers.action_dim, workers.horizon) == (39, 4, 6)
    for env in (local, workers):
        env.set_tasks(tasks)
    start = local.reset(np.random.default_rng(0))
    np.testing.assert_array_equal(start, workers.reset(np.random.default_rng(0)))
    ended = np.array([False, False, True, False, False])
    for env in (local, workers):
        env.end_slots(ended)
        np.testing.assert_array_equal(env.alive, ~ended)
    actions = np.random.default_rng(2).uniform(-1, 1, size=(8, 5, 4))
    restart = np.array([False, True, False, False, True])
    for step, action in enumerate(actions):  # past the horizon too: slots then stay put
        ours, theirs = local.step(action), workers.step(action)
        np.testing.assert_array_equal(ours.observation[2], start[2])  # ended: never stepped
        assert ours.reward[2] == 0
        np.testing.assert_array_equal(ours.observation, theirs.observation)
        np.testing.assert_array_equal(ours.reward, theirs.reward)
        np.testing.assert_array_equal(ours.info["success"], theirs.info["success"])
        if step == 6:
            assert (ours.reward == 0).all()
            new = family.sample_tasks(2)
            np.testing.assert_array_equal(
                local.reset_slots(restart, new, np.random.default_rng(1)),
                workers.reset_slots(restart, new, np.random.default_rng(1)),
            )
    assert workers.tasks == local.tasks
    np.testing.assert_array_equal(local.render(3, 64), workers.render(3, 64))
    local.close()
    workers.close()


def test_after_a_worker_fails_every_call_raises() -> None:
    family = MetaWorldML1(seed=0, horizon=5)
    env = family.make_batched_env(4, num_threads=2)
    env.set_tasks(family.sample_tasks(4))
    env.reset(np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="Actions should be size 4"):
        env.step(np.zeros((4, 3)))
    with pytest.raises(RuntimeError, match="failed earlier"):  # never another call's replies
        env.step(np.zeros((4, 4)))
    env.close()


def test_vector_episodes_end_at_the_horizon_whatever_max_episode_steps() -> None:
    env = gym.make_vec("metarl/MetaWorldML1-v0", num_envs=2, horizon=5, max_episode_steps=8)
    env.reset(seed=0)
    truncated = [env.step(np.zeros((2, 4)))[3].tolist() for _ in range(7)]
    assert truncated == [[False] * 2] * 4 + [[True] * 2] + [[False] * 2] * 2
    env.close()


def test_workers_never_run_the_main_script(tmp_path: Path) -> None:
    """A script without a ``__main__`` guard: its workers import what they need, not it."""
    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np\n"
        "from metarl.envs.metaworld import MetaWorldML1\n"
        "print('script ran')\n"
        "family = MetaWorldML1(seed=0, horizon=3)\n"
        "env = family.make_batched_env(2, num_threads=2)\n"
        "env.set_tasks(family.sample_tasks(2))\n"
        "env.reset(np.random.default_rng(0))\n"
        "print(env.step(np.zeros((2, 4))).reward.shape)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "script ran\n(2,)\n"


@pytest.mark.filterwarnings("ignore:Constant\\(s\\) may be too high")  # the script's own gains
def test_a_scripted_reach_succeeds_and_success_counts_once_per_episode() -> None:
    from metaworld.policies import SawyerReachV3Policy

    family = MetaWorldML1(seed=0, horizon=150)
    env = family.make_batched_env(2, num_threads=1)
    tasks = family.sample_tasks(2)
    env.set_tasks(tasks)
    observation = env.reset(np.random.default_rng(0))
    scripted = SawyerReachV3Policy()
    success = []
    for _ in range(150):
        told = observation.copy()
        told[:, 36:39] = [task["rand_vec"][3:] for task in tasks]  # the script reads the goal
        act = np.stack([scripted.get_action(o) for o in told])
        act[1] = 0.0  # the second arm stays where it is
        result = env.step(act)
        observation = result.observation
        success.append(result.info["success"])
    flags = torch.tensor(np.stack(success)).float().view(150, 1, 2)
    assert flags[:, 0, 0].any() and not flags[:, 0, 1].any()
    episodes = Episodes(
        observations=torch.zeros(150, 1, 2, 39),
        actions=torch.zeros(150, 1, 2, 4),
        rewards=torch.zeros(150, 1, 2),
        mask=torch.ones(150, 1, 2),
        success=flags,
    )
    assert episodes.success_per_task().tolist() == [0.5] and episodes.success_rate() == 0.5
    ended_early = torch.zeros(150, 1, 2)
    ended_early[:2] = 1.0  # both episodes ended after two steps, before the reach succeeded
    assert replace(episodes, mask=ended_early).success_rate() == 0.0
    env.close()


def test_training_evaluation_and_video(tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = [
        *("--set", "env.kwargs.horizon=20", "--set", "policy.hidden_sizes=[16]"),
        *("--set", "algorithm.num_tasks=2", "--set", "algorithm.num_trajectories=2"),
    ]
    assert (
        main(
            [
                *("train", "--config", "metaworld_ml1_reach", "--run-dir", str(run)),
                *("--iterations", "1", "--eval-tasks", "2", "--no-progress", *flags),
            ]
        )
        == 0
    )
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= record["success_pre"] <= 1 and 0 <= record["success_post"] <= 1
    evaluation = json.loads((run / "evaluation" / "evaluation.json").read_text())
    assert len(evaluation["success"]) == 4 and all(len(s) == 2 for s in evaluation["success"])
    assert evaluation["success_mean"] == [float(np.mean(s)) for s in evaluation["success"]]
    assert all(t["env"] == "reach-v3" for t in evaluation["tasks"])
    train_positions = {tuple(t["rand_vec"]) for t in MetaWorldML1().splits()[0]}
    assert all(tuple(t["rand_vec"]) not in train_positions for t in evaluation["tasks"])
    assert "Success rate" in (run / "evaluation" / "evaluation.md").read_text()
    assert iio.imread(run / "learning_curve.png").shape[0] > 800  # returns, then success rates
    video = tmp_path / "adaptation.mp4"
    assert main(["video", str(run), "--steps", "1", "--size", "48", "--out", str(video)]) == 0
    frames = iio.imread(video)
    assert frames.shape[0] == 20 and frames.std() > 10  # one frame per step, not blank


def test_a_resumed_run_repeats_the_uninterrupted_one(tmp_path: Path) -> None:
    flags = tiny_flags("env.family=MetaWorldML10", "env.kwargs={horizon: 10}")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["train", "--run-dir", str(whole), "--iterations", "2", *flags]) == 0
    assert main(["train", "--run-dir", str(resumed), "--iterations", "1", *flags]) == 0
    assert main(["train", "--resume", str(resumed), "--iterations", "2", "--no-progress"]) == 0
    records = [[deterministic_fields(r) for r in read_metrics(run)] for run in (whole, resumed)]
    assert records[0] == records[1] and len(records[0]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"env_name": "reach-v2"},
            "env_name must be a Meta-World V3 skill \\(did you mean 'reach-v3'",
        ),
        ({"horizon": 501}, "horizon must be an integer in \\[1, 500\\]"),
        ({"benchmark_seed": -1}, "benchmark_seed must be an integer >= 0"),
    ],
)
def test_bad_arguments_are_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        envs.make_family("MetaWorldML1" if "env_name" in kwargs else "MetaWorldML10", **kwargs)


@pytest.mark.parametrize(
    "task",
    [
        {"env": "reach-v3"},
        {"env": "lever-pull-v3", "rand_vec": [0.0] * 6},
        {"env": "reach-v3", "rand_vec": [0.0] * 5},
    ],
    ids=["missing-key", "other-benchmark", "wrong-size"],
)
def test_a_bad_task_is_one_line(task: dict) -> None:
    with pytest.raises(ValueError, match="MetaWorldML1 task|reach-v3 task") as error:
        MetaWorldML1().check_task(task)
    assert "\n" not in str(error.value)


def test_without_metaworld_one_line_names_the_install_command(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    code = (
        "import sys; sys.modules['metaworld'] = None\n"
        "from metarl.cli import main\n"
        f"sys.exit(main(['train', '--config', 'metaworld_ml1_reach', '--run-dir', {run!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "env.family" in result.stderr and metaworld_compat.INSTALL_COMMAND in result.stderr
    assert not (tmp_path / "run").exists()
    listing = (
        "import sys; sys.modules['metaworld'] = None\nfrom metarl.cli import main\nmain(['list'])"
    )
    listed = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True)
    assert listed.returncode == 0 and "  ant_vel " in listed.stdout  # the rest is listed
    hint = f"Meta-World is not installed; install it with: {metaworld_compat.INSTALL_COMMAND}"
    assert f"  MetaWorldML1, MetaWorldML10: {hint}\n" in listed.stdout
