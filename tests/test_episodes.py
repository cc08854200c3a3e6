"""Returns, GAE and per-task normalisation against hand-computed values, with masks."""

from __future__ import annotations

import torch

from metarl.agents.common.episodes import (
    Episodes,
    discounted_returns,
    generalized_advantages,
    live_samples,
    masked_mean_per_task,
    normalize_per_task,
    samples_by_task,
)


def _as_tkm(values: list[list[float]]) -> torch.Tensor:
    """[M trajectories][T steps] -> [T, K=1, M]."""
    return torch.tensor(values, dtype=torch.float64).T.unsqueeze(1)


def test_discounted_returns_by_hand_with_mask() -> None:
    rewards = _as_tkm([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
    mask = _as_tkm([[1, 1, 1], [1, 1, 0]])
    returns = discounted_returns(rewards, mask, gamma=0.5)
    expected = _as_tkm([[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3], [4 + 0.5 * 5, 5, 0]])
    torch.testing.assert_close(returns, expected)


def test_gae_by_hand_with_mask() -> None:
    rewards = _as_tkm([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
    values = _as_tkm([[0.5, 1.0, 1.5], [2.0, 3.0, 77.0]])
    mask = _as_tkm([[1, 1, 1], [1, 1, 0]])
    gamma, lam = 0.9, 0.8
    # trajectory 0: δ = r_t + γ V_{t+1} - V_t with V_3 = 0
    d0 = [1 + 0.9 * 1.0 - 0.5, 2 + 0.9 * 1.5 - 1.0, 3 - 1.5]
    a0 = [d0[0] + 0.72 * d0[1] + 0.72**2 * d0[2], d0[1] + 0.72 * d0[2], d0[2]]
    # trajectory 1 ends after 2 steps: the value after its last step is 0
    d1 = [4 + 0.9 * 3.0 - 2.0, 5 - 3.0]
    a1 = [d1[0] + 0.72 * d1[1], d1[1], 0.0]
    advantages = generalized_advantages(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, _as_tkm([a0, a1]))


def test_gae_with_lambda_one_is_return_minus_baseline() -> None:
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(6, 2, 3, generator=generator, dtype=torch.float64)
    values = torch.randn(6, 2, 3, generator=generator, dtype=torch.float64)
    mask = torch.ones(6, 2, 3, dtype=torch.float64)
    mask[4:, 0, 1] = 0
    advantages = generalized_advantages(rewards, values, mask, 0.97, 1.0)
    expected = (discounted_returns(rewards, mask, 0.97) - values) * mask
    torch.testing.assert_close(advantages, expected)


def test_normalize_per_task_ignores_masked_steps() -> None:
    values = torch.tensor(
        [[[1.0, 100.0], [2.0, 4.0]], [[3.0, -50.0], [6.0, 8.0]]], dtype=torch.float64
    )  # [T=2, K=2, M=2]
    mask = torch.tensor([[[1, 0], [1, 1]], [[1, 0], [1, 1]]], dtype=torch.float64)
    normalized = normalize_per_task(values, mask)
    task0 = torch.tensor([1.0, 3.0], dtype=torch.float64)
    expected0 = (task0 - task0.mean()) / task0.std(unbiased=False)
    torch.testing.assert_close(normalized[:, 0, 0], expected0, rtol=1e-6, atol=1e-6)
    assert normalized[:, 0, 1].abs().sum() == 0
    kept = normalized[:, 1][mask[:, 1].bool()]
    torch.testing.assert_close(kept.mean(), torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(
        masked_mean_per_task(values, mask), torch.tensor([2.0, 5.0], dtype=torch.float64)
    )


def _episodes(mask: torch.Tensor) -> Episodes:
    steps, tasks, trajectories = mask.shape
    values = torch.arange(mask.numel(), dtype=torch.float64).view(mask.shape)
    observations = torch.stack([values, -values], dim=-1)
    return Episodes(observations, observations * 2, values, mask, advantages=values / 10)


def test_live_samples_keep_each_task_s_live_steps_in_order() -> None:
    # 2 tasks, 2 trajectories, 3 steps; task 0 has 4 live steps, task 1 has 2.
    mask = torch.tensor(
        [[[1, 1], [1, 1]], [[1, 0], [0, 0]], [[1, 0], [0, 0]]], dtype=torch.float64
    )  # [T=3, K=2, M=2]
    episodes = _episodes(mask)
    samples = live_samples(episodes)
    values = episodes.rewards
    # samples_by_task order is (t, m): task 0's live steps are (0,0), (0,1), (1,0), (2,0).
    expected_task0 = [values[0, 0, 0], values[0, 0, 1], values[1, 0, 0], values[2, 0, 0]]
    torch.testing.assert_close(samples.observations[0, :, 0], torch.stack(expected_task0))
    torch.testing.assert_close(samples.observations[1, :2, 0], values[0, 1, :])
    torch.testing.assert_close(samples.weights[0], torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(samples.weights[1], torch.tensor([0.5, 0.5, 0, 0]).double())
    # a masked mean per task is a weighted sum of rows
    torch.testing.assert_close(
        (samples.weights * samples.advantages).sum(1),
        masked_mean_per_task(episodes.advantages, mask),  # type: ignore[arg-type]
    )
    # scattering rows back puts every live step where it was and zeros elsewhere
    back = samples.scatter(samples.actions, num_samples=6)
    flat_actions = episodes.actions.movedim(1, 0).reshape(2, 6, 2)
    flat_mask = mask.movedim(1, 0).reshape(2, 6, 1)
    live_rows = samples.weights > 0
    torch.testing.assert_close(back * flat_mask, flat_actions * flat_mask)
    assert samples.actions[live_rows].shape == (6, 2)


def test_live_samples_of_full_episodes_are_every_step() -> None:
    mask = torch.ones(3, 2, 2, dtype=torch.float64)
    episodes = _episodes(mask)
    samples = live_samples(episodes)
    torch.testing.assert_close(
        samples.observations, episodes.observations.movedim(1, 0).reshape(2, 6, 2)
    )
    torch.testing.assert_close(samples.weights, torch.full((2, 6), 1 / 6, dtype=torch.float64))


def test_a_subsample_spreads_over_every_trajectory_and_keeps_each_task_s_weight() -> None:
    # 2 tasks of 20 trajectories × 50 steps; task 1's trajectories end after 30 steps.
    mask = torch.ones(50, 2, 20, dtype=torch.float64)
    mask[30:, 1] = 0
    episodes = _episodes(mask)
    samples = live_samples(episodes)
    fewer = samples.subsample(0.2)  # a stride of 5 would keep whole trajectories: 0, 5, 10, 15
    live = fewer.weights > 0
    assert abs(live[0].sum().item() / 1000 - 0.2) < 0.01
    assert abs(live[1].sum().item() / 600 - 0.2) < 0.01
    for task in range(2):
        kept = fewer.positions[task][live[task]]
        assert set((kept % 20).tolist()) == set(range(20))  # every trajectory,
        assert len(set((kept // 20).tolist())) > 0.8 * (50 if task == 0 else 30)  # most steps
        # the kept rows are the task's steps at their positions, equally weighted, with the
        # task's total weight
        steps = samples_by_task(episodes.observations, 1)[task]
        torch.testing.assert_close(fewer.observations[task][live[task]], steps[kept])
        weights = fewer.weights[task][live[task]]
        torch.testing.assert_close(weights, torch.full_like(weights, 1 / len(kept)))
    assert samples.subsample(1.0).weights.shape == samples.weights.shape  # 1: every row
