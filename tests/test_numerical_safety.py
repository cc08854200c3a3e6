"""NaN and Inf guards: a non-finite value at any stage rejects the meta-step with the parameters
unchanged; too many rejections in a row stop the run; a NaN never reaches a checkpoint."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl import envs
from metarl.agents.common.numerics import NonFiniteError
from metarl.agents.common.sampling import BatchSampler
from metarl.agents.maml_trpo import MAMLTRPO, MetaBatch
from metarl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from metarl.cli import main
from metarl.envs.base import StepResult
from metarl.envs.navigation import BatchedNavigation2D, Navigation2D
from metarl.logging import read_metrics
from metarl.training import meta_iteration
from tests.conftest import make_agent, make_reptile
from tests.tiny_runs import tiny_flags

Injection = Callable[[MAMLTRPO, MetaBatch], None]


def nan_reward(agent: MAMLTRPO, batch: MetaBatch) -> None:
    batch.train[0].rewards[3, 1, 2] = math.nan


def inf_advantage(agent: MAMLTRPO, batch: MetaBatch) -> None:
    assert batch.valid.advantages is not None
    batch.valid.advantages[0, 0, 1] = math.inf


def nan_parameter(agent: MAMLTRPO, batch: MetaBatch) -> None:
    with torch.no_grad():
        agent.policy.log_std[1] = math.nan


def inf_observation(agent: MAMLTRPO, batch: MetaBatch) -> None:
    # tanh saturates: the loss stays finite, but its gradient is 0 · inf = NaN
    batch.valid.observations[0, 0, 0, 0] = math.inf


def nan_damping(agent: MAMLTRPO, batch: MetaBatch) -> None:
    agent.config = agent.config.model_copy(update={"cg_damping": math.nan})


def infinite_trust_region(agent: MAMLTRPO, batch: MetaBatch) -> None:
    agent.config = agent.config.model_copy(update={"max_kl": math.inf})


INJECTIONS: dict[str, tuple[Injection, str]] = {
    "nan-reward": (nan_reward, "returns"),
    "inf-advantage": (inf_advantage, "advantages"),
    "nan-parameter": (nan_parameter, "loss"),
    "inf-observation": (inf_observation, "gradient"),
    "nan-damping": (nan_damping, "cg_direction"),
    "infinite-trust-region": (infinite_trust_region, "kl"),
}
# Reptile's update, the mean step towards the adapted parameters, is checked as ``gradient``.
REPTILE_INJECTIONS: dict[str, tuple[Injection, str]] = {
    "nan-reward": (nan_reward, "returns"),
    "inf-advantage": (inf_advantage, "advantages"),
    "nan-parameter": (nan_parameter, "gradient"),
}
REJECTIONS = {
    **{f"maml-trpo-{name}": (make_agent, *case) for name, case in INJECTIONS.items()},
    **{f"reptile-{name}": (make_reptile, *case) for name, case in REPTILE_INJECTIONS.items()},
}


def parameters(agent: MAMLTRPO) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.policy.parameters()]


@pytest.mark.parametrize("name", list(REJECTIONS))
def test_non_finite_value_rejects_the_meta_step(name: str) -> None:
    make, inject, stage = REJECTIONS[name]
    agent, batch = make()
    inject(agent, batch)
    before = parameters(agent)
    with pytest.raises(NonFiniteError, match=f"non-finite {stage}") as error:
        agent.meta_step(batch)
    assert error.value.stage == stage
    for old, new in zip(before, parameters(agent)):
        assert torch.equal(old.nan_to_num(), new.nan_to_num())


def test_the_same_batch_without_injection_takes_a_step() -> None:
    agent, batch = make_agent()
    before = parameters(agent)
    assert agent.meta_step(batch).accepted
    assert any(not torch.equal(old, new) for old, new in zip(before, parameters(agent)))


def test_meta_iteration_reports_the_rejection() -> None:
    agent, batch = make_agent()
    nan_damping(agent, batch)
    before = parameters(agent)
    family = envs.make_family("Navigation2D", seed=0, horizon=12)
    sampler = BatchSampler(family, agent.config.num_trajectories, seed=0)
    metrics, step = meta_iteration(agent, family.sample_tasks(agent.config.num_tasks), sampler)
    assert step.rejected_reason == "cg_direction" and not step.accepted
    assert metrics["step_accepted"] == 0.0 and metrics["kl"] == 0.0
    assert math.isfinite(metrics["return_post"])
    assert all(torch.equal(old, new) for old, new in zip(before, parameters(agent)))


def test_a_non_finite_policy_never_reaches_a_checkpoint(tmp_path: Path) -> None:
    agent, batch = make_agent()
    path = tmp_path / "last.pt"
    state = {"iteration": 1, "config": {}, "policy": agent.policy.state_dict()}
    save_checkpoint(path, state)
    nan_parameter(agent, batch)
    with pytest.raises(CheckpointError, match="refusing to save non-finite parameters log_std"):
        save_checkpoint(path, {**state, "iteration": 2})
    assert load_checkpoint(path)["iteration"] == 1


class FlakyNavigation(Navigation2D):
    """Navigation whose rewards are NaN on the meta-iterations listed in ``nan_iterations``
    (counted by the sampler's two sampling calls per iteration): test data, not a mock."""

    name = "FlakyNavigation"
    nan_iterations: frozenset[int] = frozenset()

    def __init__(self, seed: int | None = None, horizon: int = 100) -> None:
        super().__init__(seed, horizon=horizon)
        self.num_sampling_calls = 0

    def make_batched_env(
        self, num_envs: int, num_threads: int | None = None
    ) -> BatchedNavigation2D:
        return FlakyBatchedNavigation(self, num_envs)


class FlakyBatchedNavigation(BatchedNavigation2D):
    def __init__(self, family: FlakyNavigation, num_envs: int) -> None:
        super().__init__(num_envs, family.max_step, family.goal_tolerance, family.horizon)
        self.family = family

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        self.family.num_sampling_calls += 1
        return super().reset(rng)

    def step(self, action: np.ndarray) -> StepResult:
        result = super().step(action)
        iteration = (self.family.num_sampling_calls + 1) // 2
        if iteration in self.family.nan_iterations:
            result.reward = np.full_like(result.reward, np.nan)
        return result


TINY = tiny_flags(
    "env.family=FlakyNavigation",
    "env.kwargs={horizon: 10}",
    "train.max_consecutive_rejections=2",
    num_trajectories=3,
)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> type[FlakyNavigation]:
    monkeypatch.setitem(envs.FAMILY_MODULES, FlakyNavigation.name, __name__)
    return FlakyNavigation


def strict_json(line: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in metrics.jsonl")

    return json.loads(line, parse_constant=refuse)


@pytest.mark.parametrize(
    ("flag", "stream"), [("--no-progress", "out"), ("--quiet", "err")], ids=["lines", "quiet"]
)
def test_isolated_rejections_are_counted_and_training_goes_on(
    tmp_path: Path,
    flaky: type[FlakyNavigation],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    stream: str,
) -> None:
    """A rejected step's line is printed with the others, or alone on stderr with --quiet."""
    monkeypatch.setattr(flaky, "nan_iterations", frozenset({1, 3}))
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--iterations", "4", *TINY, flag]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [strict_json(line) for line in lines]
    assert [r["rejected_steps"] for r in records] == [1, 1, 2, 2]
    assert [r["step_rejected_reason"] for r in records] == ["returns", None, "returns", None]
    assert records[0]["return_pre"] is None  # NaN is written as null
    printed = getattr(capsys.readouterr(), stream)
    assert printed.count("[step rejected: non-finite returns]") == 2


def test_consecutive_rejections_stop_the_run_without_nan_in_checkpoints(
    tmp_path: Path,
    flaky: type[FlakyNavigation],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(flaky, "nan_iterations", frozenset({2, 3, 4, 5}))
    run = tmp_path / "run"
    every = ["--set", "train.checkpoint_every=5"]  # last.pt is still written when stopping
    assert main(["train", "--run-dir", str(run), "--iterations", "6", *TINY, *every]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("metarl train: error: stopped at iteration 3: 2 meta-steps in a row")
    assert "non-finite returns" in err and "train.max_consecutive_rejections=2" in err
    assert [r["rejected_steps"] for r in read_metrics(run)] == [0, 1, 2]
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert last["iteration"] == 3 and best["iteration"] == 1
    assert last["consecutive_rejections"] == 2
    for name, tensor in last["policy"].items():
        assert torch.isfinite(tensor).all()
        assert torch.equal(tensor, best["policy"][name])  # unchanged since iteration 1
