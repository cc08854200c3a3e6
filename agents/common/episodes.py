"""Batches of episodes as time-major tensors, and the returns / advantages computed on them.

Layout: ``[T, K, M, ...]`` (time, task, trajectory).  ``mask[t, k, m]`` is 1 where step ``t`` of
trajectory ``m`` of task ``k`` was taken (the episode was alive before the step) and 0 after it
ended.  Every reduction over time or trajectories is mask-weighted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Episodes:
    """Trajectories of K tasks × M trajectories, padded to T steps."""

    observations: Tensor  # [T, K, M, obs_dim]
    actions: Tensor  # [T, K, M, action_dim]
    rewards: Tensor  # [T, K, M]
    mask: Tensor  # [T, K, M], 1.0 for steps taken
    advantages: Tensor | None = None  # [T, K, M], set by the agent
    success: Tensor | None = None  # [T, K, M], 1.0 where the task's success held (Meta-World)

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[1]

    @property
    def env_steps(self) -> int:
        """Number of environment steps actually taken."""
        return int(self.mask.sum().item())

    def episodes_per_task(self) -> Tensor:
        """Number of trajectories of each task, slots with no step taken left out: ``[K]``."""
        return self.mask[0].sum(-1)

    def returns_per_task(self) -> Tensor:
        """Undiscounted return per trajectory averaged over trajectories: shape ``[K]``."""
        return (self.rewards * self.mask).sum(0).sum(-1) / self.episodes_per_task()

    def mean_return(self) -> float:
        """Undiscounted return per trajectory, averaged over all trajectories."""
        return float(self.returns_per_task().mean().item())

    def success_per_task(self) -> Tensor:
        """Fraction of each task's trajectories that succeeded (success held at some step taken):
        shape ``[K]``; only for families that report success."""
        if self.success is None:
            raise ValueError("these episodes come from a family that reports no success")
        return (self.success * self.mask).amax(0).sum(-1) / self.episodes_per_task()

    def success_rate(self) -> float:
        """Fraction of all trajectories that succeeded."""
        return float(self.success_per_task().mean().item())

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Episodes:
        """A copy on ``device`` (floating tensors cast to ``dtype`` when given)."""

        def move(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device=device, dtype=dtype or x.dtype)

        return Episodes(
            observations=move(self.observations),  # type: ignore[arg-type]
            actions=move(self.actions),  # type: ignore[arg-type]
            rewards=move(self.rewards),  # type: ignore[arg-type]
            mask=move(self.mask),  # type: ignore[arg-type]
            advantages=move(self.advantages),
            success=move(self.success),
        )


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """``R_t = Σ_{l≥0} γ^l r_{t+l}`` over the steps taken (masked steps contribute 0)."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = (rewards[t] + gamma * running) * mask[t]
        returns[t] = running
    return returns


def generalized_advantages(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, gae_lambda: float
) -> Tensor:
    """GAE (Schulman et al. 2016): ``A_t = Σ_l (γλ)^l δ_{t+l}``, ``δ_t = r_t + γV_{t+1} - V_t``.

    The value after the last step taken is 0 (episode end or horizon), as in rllab; with
    ``gae_lambda = 1`` this is the discounted return minus the baseline.
    """
    values = values * mask
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])], dim=0)
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = (deltas[t] + gamma * gae_lambda * running) * mask[t]
        advantages[t] = running
    return advantages


def normalize_per_task(values: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Standardise ``values`` to zero mean, unit std within each task (masked steps excluded)."""
    count = mask.sum(dim=(0, 2), keepdim=True)
    mean = (values * mask).sum(dim=(0, 2), keepdim=True) / count
    var = ((values - mean).pow(2) * mask).sum(dim=(0, 2), keepdim=True) / count
    return (values - mean) / (var.sqrt() + eps) * mask


def samples_by_task(values: Tensor, event_dims: int = 0) -> Tensor:
    """``[..., K, M, *event]`` -> ``[K, N, *event]``: each task's samples in one row (a copy)."""
    moved = values.movedim(values.dim() - event_dims - 2, 0)
    return moved.reshape(moved.shape[0], -1, *moved.shape[moved.dim() - event_dims :])


GOLDEN_RATIO_CONJUGATE = (5**0.5 - 1) / 2


@dataclass
class TaskSamples:
    """Each task's live steps as rows ``[K, N, ...]``, N the most live steps of any task: the
    learning step skips the steps after episodes ended.  Rows past a task's live steps are
    padding (steps that were not taken) with weight 0."""

    observations: Tensor  # [K, N, obs_dim]
    actions: Tensor  # [K, N, action_dim]
    advantages: Tensor  # [K, N]
    weights: Tensor  # [K, N]: 1 / (live steps of the task), 0 on padding
    positions: Tensor  # [K, N]: each row's index in samples_by_task order (a permutation prefix)

    def scatter(self, rows: Tensor, num_samples: int) -> Tensor:
        """Per-row values ``[K, N, *event]`` back to ``[K, num_samples, *event]`` (zeros where no
        row was taken)."""
        shape = (rows.shape[0], num_samples, *rows.shape[2:])
        index = self.positions.view(*self.positions.shape, *([1] * (rows.dim() - 2)))
        return rows.new_zeros(shape).scatter_(1, index.expand_as(rows), rows)

    def subsample(self, fraction: float) -> TaskSamples:
        """About ``fraction`` of each task's live rows, reweighted so that each task's weights
        keep their sum.  Row ``r`` is kept where ``frac(r φ) < fraction`` (φ the golden ratio's
        conjugate, a low-discrepancy sequence): the kept rows spread over steps and trajectories
        instead of being whole trajectories, and every task keeps its first row.  The same rows
        of every task (and of every batch: fresh samples each meta-step), so the kept live rows
        stay a prefix."""
        rows = torch.arange(self.weights.shape[1], dtype=torch.float64, device=self.weights.device)
        kept = torch.nonzero(torch.frac(rows * GOLDEN_RATIO_CONJUGATE) < fraction).squeeze(1)
        weights = self.weights[:, kept]
        total = weights.sum(1, keepdim=True)
        scale = self.weights.sum(1, keepdim=True) / total.clamp_min(torch.finfo(total.dtype).tiny)
        return TaskSamples(
            observations=self.observations[:, kept],
            actions=self.actions[:, kept],
            advantages=self.advantages[:, kept],
            weights=weights * scale,
            positions=self.positions[:, kept],
        )


def live_samples(episodes: Episodes) -> TaskSamples:
    """The live steps of ``episodes`` (with advantages attached) as :class:`TaskSamples`, in
    their order within each task.  A masked mean per task is then ``(weights * x).sum(1)``."""
    assert episodes.advantages is not None, "advantages are attached before learning"
    mask = samples_by_task(episodes.mask)
    counts = mask.sum(1, keepdim=True)
    size = int(counts.max().item())
    positions = torch.argsort(mask, dim=1, descending=True, stable=True)[:, :size]
    every_step_live = size == mask.shape[1] and bool((counts == size).all())

    def rows(values: Tensor, event_dims: int) -> Tensor:
        flat = samples_by_task(values, event_dims)
        if every_step_live:  # the positions are the identity
            return flat
        index = positions.view(*positions.shape, *([1] * event_dims))
        return flat.gather(1, index.expand(-1, -1, *flat.shape[2:]))

    return TaskSamples(
        observations=rows(episodes.observations, 1),
        actions=rows(episodes.actions, 1),
        advantages=rows(episodes.advantages, 0),
        weights=rows(episodes.mask, 0) / counts,
        positions=positions,
    )


def masked_mean_per_task(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over time and trajectories of each task, masked steps excluded: shape ``[K]``."""
    return (values * mask).sum(dim=(0, 2)) / mask.sum(dim=(0, 2))
