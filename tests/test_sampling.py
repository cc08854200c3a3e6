"""The lock-stepped batch sampler and the policy's per-task parameter sets."""

from __future__ import annotations

import pytest
import torch

from metarl import envs
from metarl.agents.common.episodes import Episodes
from metarl.agents.common.policies import GaussianMLPPolicy, Params
from metarl.agents.common.sampling import FILL_LIMIT, BatchSampler


class CountingPolicy(GaussianMLPPolicy):
    """The real policy, counting how often the sampler calls it."""

    calls = 0

    def act(self, *args, **kwargs):  # type: ignore[override]
        self.calls += 1
        return super().act(*args, **kwargs)


def test_per_task_parameters_equal_separate_evaluations() -> None:
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, (8, 8), "tanh").double()
    shared = policy.meta_parameters()
    per_task = {
        k: v.detach() + 0.1 * torch.randn(3, *v.shape, dtype=v.dtype) for k, v in shared.items()
    }
    observations = torch.randn(5, 3, 4, 2, dtype=torch.float64)  # [T, K, M, D]
    mean, log_std = policy.mean_and_log_std(observations, per_task)
    for k in range(3):
        own = {name: value[k] for name, value in per_task.items()}
        mean_k, log_std_k = policy.mean_and_log_std(observations[:, k], own)
        torch.testing.assert_close(mean[:, k], mean_k)
        torch.testing.assert_close(log_std[k, 0], log_std_k)


def test_sampler_shapes_masks_and_one_policy_call_per_step() -> None:
    family = envs.make_family("Navigation2D", seed=0, goal_tolerance=0.1, horizon=30)
    policy = CountingPolicy(2, 2, (16,), "tanh")
    sampler = BatchSampler(family, num_trajectories=5, seed=0)
    tasks = family.sample_tasks(4)
    per_task = {
        k: v.detach().expand(4, *v.shape).clone() for k, v in policy.meta_parameters().items()
    }
    episodes = sampler.sample(tasks, policy, per_task)
    steps = episodes.rewards.shape[0]
    assert episodes.observations.shape == (steps, 4, 5, 2)
    assert episodes.actions.shape == (steps, 4, 5, 2) and episodes.mask.shape == (steps, 4, 5)
    assert policy.calls == steps <= 30
    # masks are prefixes (1 then 0) and masked steps carry no reward
    assert torch.all(episodes.mask[1:] <= episodes.mask[:-1])
    assert torch.all(episodes.rewards[episodes.mask == 0] == 0)
    assert episodes.env_steps == int(episodes.mask.sum())
    # each observation is the previous one plus the clipped action, within a trajectory
    moved = episodes.observations[1:] - episodes.observations[:-1]
    expected = 0.1 * episodes.actions[:-1].clamp(-1, 1)
    alive = episodes.mask[1:].bool()
    torch.testing.assert_close(moved[alive], expected[alive], rtol=1e-5, atol=1e-6)


def test_sampler_is_reproducible_from_its_seed_and_state() -> None:
    family = envs.make_family("Navigation2D", seed=0)
    policy = GaussianMLPPolicy(2, 2, (8,), "tanh")
    tasks = family.sample_tasks(3)
    a = BatchSampler(family, 2, seed=7)
    b = BatchSampler(family, 2, seed=7)
    first = a.sample(tasks, policy, policy.meta_parameters())
    assert torch.equal(first.actions, b.sample(tasks, policy, policy.meta_parameters()).actions)
    state = a.state_dict()
    second = a.sample(tasks, policy, policy.meta_parameters())
    a.load_state_dict(state)
    assert torch.equal(second.actions, a.sample(tasks, policy, policy.meta_parameters()).actions)
    assert not torch.equal(first.actions, second.actions)


def _five_tasks(family: envs.TaskFamily) -> tuple[list, GaussianMLPPolicy, Params]:
    """5 tasks, a small policy with a wide action noise and a parameter set per task."""
    tasks = family.sample_tasks(5)
    probe = family.make_batched_env(1)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(probe.observation_dim, probe.action_dim, (16,), init_std=2.0)
    per_task = {
        k: v.detach() + 0.5 * torch.randn(5, *v.shape) for k, v in policy.meta_parameters().items()
    }
    return tasks, policy, per_task


def _batches_by_lanes(family: envs.TaskFamily, lanes: tuple[int, ...]) -> dict[int, Episodes]:
    """The same 5 tasks × 2 trajectories sampled with each number of lanes."""
    tasks, policy, per_task = _five_tasks(family)
    batches = {}
    for count in lanes:
        sampler = BatchSampler(family, 2, seed=3, num_lanes=count)
        batches[count] = sampler.sample(tasks, policy, per_task)
        assert len(sampler.lanes_for(5)) == count
    return batches


@pytest.mark.parametrize(
    ("family_name", "kwargs"),
    [
        ("HalfCheetahVel", {"physics": "original", "horizon": 8}),
        ("Navigation2D", {"goal_tolerance": 0.3, "horizon": 30}),  # a lane ends early
    ],
)
def test_lanes_change_nothing_but_speed(family_name: str, kwargs: dict) -> None:
    """A batch split into lanes (stepped on separate threads) is the unsplit batch: the same
    masks, and values equal up to the rounding of matrix products; padded where a lane ends
    before the others."""
    batches = _batches_by_lanes(envs.make_family(family_name, seed=0, **kwargs), (1, 2, 3, 5))
    one = batches[1]
    if family_name == "Navigation2D":  # a task (a lane of 5) ends early: its lane is padded
        assert (one.mask[-1].sum(-1) == 0).any()
    for lanes in (2, 3, 5):
        assert torch.equal(batches[lanes].mask, one.mask)
        for field in ("observations", "actions", "rewards"):
            torch.testing.assert_close(
                getattr(batches[lanes], field), getattr(one, field), rtol=1e-5, atol=1e-5
            )
        assert torch.all(batches[lanes].observations[one.mask == 0] == 0)


def test_lanes_are_reproducible() -> None:
    def sample() -> Episodes:
        family = envs.make_family("AntVel", seed=0, physics="gymnasium", horizon=30)
        return _batches_by_lanes(family, (2,))[2]

    first, second = sample(), sample()
    for field in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(first, field), getattr(second, field)), field


def _filled_and_plain(family: envs.TaskFamily) -> tuple[Episodes, Episodes]:
    """5 tasks × 3 trajectories with per-task parameters, sampled with and without
    ``fill_steps`` from the same seed."""
    tasks, policy, params = _five_tasks(family)
    filled = BatchSampler(family, 3, seed=3, fill_steps=True).sample(tasks, policy, params)
    return filled, BatchSampler(family, 3, seed=3).sample(tasks, policy, params)


def test_fill_steps_gives_each_task_whose_episodes_ended_early_its_step_budget() -> None:
    filled, plain = _filled_and_plain(
        envs.make_family("Navigation2D", seed=0, goal_tolerance=0.3, horizon=30)
    )
    budget, steps, episodes = 3 * 30, filled.mask.sum((0, 2)), filled.episodes_per_task()
    assert (plain.mask.sum((0, 2)) < budget).any()  # some episodes reached the goal early
    assert filled.mask.shape[2] <= FILL_LIMIT * 3  # the batch's bound
    assert torch.all((steps >= budget) | (filled.mask.shape[2] == FILL_LIMIT * 3))
    last = torch.arange(filled.mask.shape[2]) * (filled.mask[0] > 0)  # each task's last episode
    last_length = filled.mask.sum(0).gather(1, last.argmax(1, keepdim=True)).squeeze(1)
    assert torch.all(steps - last_length < budget)  # no episode kept once the budget is reached
    full = plain.mask.sum((0, 2)) == budget
    assert torch.all(episodes[full] == 3) and torch.all(episodes[~full] > 3)
    # the first round is the plain batch; later rounds' slots are whole episodes or unused
    for field in ("observations", "actions", "rewards", "mask"):
        part = getattr(filled, field)[: len(plain.mask), :, :3]
        assert torch.equal(part, getattr(plain, field))
    assert torch.all(filled.mask[1:] <= filled.mask[:-1])
    assert torch.all(filled.rewards[filled.mask == 0] == 0)
    assert torch.all(filled.observations[filled.mask == 0] == 0)
    # the return per task is the mean over its episodes, unused slots left out
    per_episode = filled.rewards.sum(0)
    for task in range(5):
        taken = filled.mask[0, task] > 0
        torch.testing.assert_close(filled.returns_per_task()[task], per_episode[task][taken].mean())


def test_fill_steps_changes_nothing_where_no_episode_ends_early() -> None:
    filled, plain = _filled_and_plain(
        envs.make_family("HalfCheetahVel", physics="original", horizon=8, seed=0)
    )
    for field in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(filled, field), getattr(plain, field))


def test_fill_rounds_sample_each_short_task_with_its_own_parameters() -> None:
    """Tasks 1 and 3 reach their goal early (a fill round runs them alone): every action taken
    is its task's own constant action, in every round."""
    family = envs.make_family("Navigation2D", seed=0, goal_tolerance=0.05, horizon=30)
    policy = GaussianMLPPolicy(2, 2, (8,), "tanh")
    directions = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0], [0.0, 1.0]])
    tasks = [{"goal": [float(x), float(y)]} for x, y in directions]  # 10 steps away
    for task in (0, 2, 4):  # goals the constant action never reaches
        tasks[task]["goal"] = [-0.5 * float(directions[task, 0]) + 0.3, 0.0]
    params = {
        k: v.detach().expand(5, *v.shape).clone() for k, v in policy.meta_parameters().items()
    }
    params["layers.1.weight"].zero_()
    params["layers.1.bias"].copy_(directions)
    params["log_std"].fill_(-20.0)
    episodes = BatchSampler(family, 2, seed=0, fill_steps=True).sample(tasks, policy, params)
    taken = episodes.mask > 0
    assert episodes.episodes_per_task().tolist() == [2, 2 * 30 // 10, 2, 2 * 30 // 10, 2]
    for task in range(5):
        actions = episodes.actions[:, task][taken[:, task]]
        torch.testing.assert_close(actions, directions[task].expand_as(actions))


@pytest.mark.parametrize(
    ("family_name", "kwargs"),
    [("Navigation2D", {"goal_tolerance": 0.3, "horizon": 30}), ("AntVel", {"horizon": 20})],
)
def test_a_round_of_fewer_episodes_for_some_tasks_leaves_the_others_as_they_were(
    family_name: str, kwargs: dict
) -> None:
    """A fill round's surplus slots end at the reset (never simulated): masked whole from
    the first step, and every wanted episode bit for bit the one of a round without."""
    family = envs.make_family(family_name, seed=0, **kwargs)
    tasks, policy, params = _five_tasks(family)
    wanted = [3, 1, 2, 1, 3]
    rounds = []
    for counts in (None, wanted):
        sampler = BatchSampler(family, 3, seed=4)
        runner = sampler.fill_runner(3)
        rounds.append(sampler.sample_round(tasks, policy, params, runner, counts))
    full, fewer = rounds
    kept = torch.arange(3) < torch.tensor(wanted).unsqueeze(1)  # [task, trajectory]
    assert torch.all(fewer.mask[:, ~kept] == 0) and torch.all(fewer.rewards[:, ~kept] == 0)
    assert torch.all(fewer.mask[0, kept] == 1)
    steps = len(fewer.mask)
    for field in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(fewer, field)[:, kept], getattr(full, field)[:steps, kept])
    assert torch.all(full.mask[steps:, kept] == 0)  # no wanted episode ran longer


def test_fill_rounds_keep_the_environments_of_one_round_only() -> None:
    family = envs.make_family("Navigation2D", seed=0, goal_tolerance=0.3, horizon=30)
    tasks, policy, params = _five_tasks(family)
    sampler = BatchSampler(family, 3, seed=3, fill_steps=True)
    sizes = set()
    for _ in range(6):  # rounds of several sizes, for several numbers of short tasks
        sampler.sample(tasks, policy, params)
        fill = sampler.fill_runner(sampler._fill_runner.num_trajectories)  # type: ignore[union-attr]
        sizes.add((fill.num_trajectories, *fill._lanes))
        assert len(sampler.runner._lanes) == 1 and len(fill._lanes) == 1
    assert len(sizes) > 1
