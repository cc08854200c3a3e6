"""``metarl baseline``: the SB3 actor as a metarl policy, baseline run directories that every
command reads, resume, and a short pretrained run that learns."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl import envs
from metarl.agents.common.vec_env import TaskVecEnv
from metarl.agents.sb3_baselines import copy_actor, make_model
from metarl.baselines import BaselineTrainer, total_steps
from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.components import build_policy
from metarl.config import ConfigError, load_config
from metarl.logging import read_metrics
from metarl.training import Trainer

TINY = ["--set", "policy.hidden_sizes=[8]", "--steps-per-update", "400", "--no-progress"]


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
def test_copied_actor_gives_the_same_gaussian(nonlinearity: str) -> None:
    family = envs.make_family("HalfCheetahVel", seed=0)
    vec = TaskVecEnv(family, 2, seed=0)
    model = make_model("trpo", vec, [16, 8], nonlinearity, 0.7, 0.99, 0.01, 0, 5)
    with torch.no_grad():
        model.policy.log_std.add_(torch.linspace(-0.3, 0.3, 6))  # not the initial value
    settings = [f"policy.nonlinearity={nonlinearity}", "policy.hidden_sizes=[16, 8]"]
    config = load_config(None, ["env.family=HalfCheetahVel", *settings])
    policy = copy_actor(model.policy, build_policy(config, family).double())
    observations = np.random.default_rng(0).normal(size=(7, 20)).astype(np.float32)
    expected = model.policy.get_distribution(torch.as_tensor(observations)).distribution
    mean, log_std = policy.mean_and_log_std(
        torch.as_tensor(observations, dtype=torch.float64), policy.meta_parameters()
    )
    torch.testing.assert_close(mean.float(), expected.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_std.exp().float().expand_as(mean), expected.stddev)


def test_baseline_runs_are_read_by_evaluate_and_resume(tmp_path: Path) -> None:
    run = tmp_path / "pretrained"
    assert main(["baseline", "pretrained", "--run-dir", str(run), "--steps", "800", *TINY]) == 0
    assert [r["iteration"] for r in read_metrics(run)] == [1, 2]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["config"]["baseline"]["method"] == "pretrained" and state["env_steps"] == 800
    assert main(["baseline", "pretrained", "--resume", str(run), "--no-progress"]) == 0  # done
    assert len(read_metrics(run)) == 2
    resumed = ["baseline", "pretrained", "--resume", str(run), "--steps", "1200", "--no-progress"]
    assert main(resumed) == 0
    assert [r["env_steps"] for r in read_metrics(run)] == [400, 800, 1200]
    assert main(["evaluate", str(run), "--tasks", "3", "--trajectories", "2", "--steps", "1"]) == 0
    oracle = tmp_path / "oracle"
    assert main(["baseline", "oracle", "--run-dir", str(oracle), "--steps", "400", *TINY]) == 0
    config = load_checkpoint(oracle / "checkpoints" / "last.pt")["config"]
    assert config["env"]["kwargs"]["oracle"] is True
    assert load_checkpoint(oracle / "checkpoints" / "last.pt")["policy"][
        "layers.0.weight"
    ].shape == (8, 4)
    assert (
        main(["evaluate", str(oracle), "--tasks", "3", "--trajectories", "2", "--steps", "0"]) == 0
    )


def test_random_baseline_is_the_initial_maml_policy(tmp_path: Path) -> None:
    run = tmp_path / "random"
    assert main(["baseline", "random", "--run-dir", str(run), "--seed", "5", *TINY]) == 0
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["policy"]
    config = load_config(None, ["policy.hidden_sizes=[8]", "train.seed=5"])
    initial = Trainer(config, tmp_path / "unused").policy.state_dict()
    assert saved.keys() == initial.keys()
    for name in saved:
        torch.testing.assert_close(saved[name], initial[name])


@pytest.mark.slow
def test_short_pretrained_run_improves(tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ["--steps", "30000", "--steps-per-update", "2000", "--set", "policy.hidden_sizes=[32]"]
    assert main(["baseline", "pretrained", "--run-dir", str(run), "--no-progress", *flags]) == 0
    returns = [r["return"] for r in read_metrics(run)]
    assert len(returns) == 15
    assert np.mean(returns[-3:]) > np.mean(returns[:3]) + 10, returns


def test_resume_continues_the_task_stream_and_restores_best(tmp_path: Path) -> None:
    """A resumed baseline draws the tasks that follow the checkpoint's, not the first ones
    again (loading an SB3 learner re-seeds its environment)."""
    settings = ["policy.hidden_sizes=[8]", "baseline.method=pretrained", "env.kwargs={horizon: 20}"]
    config = load_config(None, [*settings, "baseline.steps_per_update=200"])
    run = tmp_path / "run"
    trainer = BaselineTrainer(config, run)
    trainer.write_config()
    trainer.update()
    drawn = trainer.env.episode_tasks
    following = copy.deepcopy(trainer.family).sample_tasks(3)
    (run / "checkpoints" / "best.pt").unlink()  # lost in a crash: rewritten from last.pt
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    state["env_before"] = before = [[1, "metarl/Navigation2D-v7", None]]
    resumed = BaselineTrainer.resume(run, config, state)
    assert resumed.env.episode_tasks == drawn and resumed.iteration == 1
    assert resumed.state_dict()["env_before"] == before  # the versions trained on stay recorded
    assert resumed.family.sample_tasks(3) == following
    assert load_checkpoint(run / "checkpoints" / "best.pt")["iteration"] == 1


def test_a_family_outside_the_papers_budget_needs_total_steps() -> None:
    config = load_config(None, ["env.family=MetaWorldML1", "baseline.method=pretrained"])
    with pytest.raises(ConfigError, match=r"^baseline.total_steps: needed for MetaWorldML1"):
        total_steps(config)
    assert total_steps(load_config(None, ["baseline.method=pretrained"])) == 100 * 20_000
