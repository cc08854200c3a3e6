"""The linear feature baseline against a closed-form least-squares fit."""

from __future__ import annotations

import numpy as np
import torch

from metarl.agents.common.baseline import baseline_features, fit_linear_baseline


def test_features_layout() -> None:
    observations = torch.tensor([[[[20.0, -1.0]]], [[[0.5, 2.0]]]], dtype=torch.float64)
    mask = torch.ones(2, 1, 1, dtype=torch.float64)
    features = baseline_features(observations, mask)
    expected_t1 = [0.5, 2.0, 0.25, 4.0, 0.01, 0.0001, 0.000001, 1.0]
    np.testing.assert_allclose(features[1, 0, 0].numpy(), expected_t1)
    np.testing.assert_allclose(features[0, 0, 0, :4].numpy(), [10.0, -1.0, 100.0, 1.0])  # clipped


def test_fit_matches_closed_form_least_squares_with_masks() -> None:
    rng = np.random.default_rng(0)
    steps, tasks, trajectories, dim = 15, 3, 4, 2
    observations = torch.from_numpy(rng.normal(size=(steps, tasks, trajectories, dim)))
    targets = torch.from_numpy(rng.normal(size=(steps, tasks, trajectories)))
    lengths = rng.integers(5, steps + 1, size=(tasks, trajectories))
    mask = torch.from_numpy((np.arange(steps)[:, None, None] < lengths[None]).astype(np.float64))
    ridge = 1e-3
    values = fit_linear_baseline(observations, targets, mask, ridge)
    for k in range(tasks):
        x = np.concatenate([_rows(observations, k, m, lengths[k, m]) for m in range(trajectories)])
        y = np.concatenate([targets[: lengths[k, m], k, m].numpy() for m in range(trajectories)])
        weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
        for m in range(trajectories):
            fitted = values[: lengths[k, m], k, m].numpy()
            expected = _rows(observations, k, m, lengths[k, m]) @ weights
            np.testing.assert_allclose(fitted, expected, rtol=1e-8, atol=1e-8)


def _rows(observations: torch.Tensor, k: int, m: int, length: int) -> np.ndarray:
    o = observations[:length, k, m].numpy()
    time = (np.arange(length) / 100)[:, None]
    return np.concatenate([o, o**2, time, time**2, time**3, np.ones_like(time)], axis=1)


def test_baseline_predicts_a_linear_target_exactly() -> None:
    rng = np.random.default_rng(1)
    observations = torch.from_numpy(rng.uniform(-2, 2, size=(10, 2, 3, 2)))
    targets = 3.0 * observations[..., 0] - observations[..., 1].pow(2) + 0.5
    mask = torch.ones(10, 2, 3, dtype=torch.float64)
    values = fit_linear_baseline(observations, targets, mask, ridge=1e-10)
    torch.testing.assert_close(values, targets, rtol=1e-6, atol=1e-6)


def test_fit_on_ant_sized_features_after_torch_threads_changed() -> None:
    """Ant's 105-dim observations give 214 features; torch 2.13's batched LU solve fails on such
    systems once torch's thread count has been changed (as the sampler does around each call)."""
    rng = np.random.default_rng(2)
    steps, tasks, trajectories, dim = 100, 2, 5, 105
    observations = torch.from_numpy(rng.uniform(-3, 3, size=(steps, tasks, trajectories, dim)))
    targets = torch.from_numpy(rng.normal(size=(steps, tasks, trajectories)))
    mask = torch.ones(steps, tasks, trajectories, dtype=torch.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_num_threads(2)
    try:
        values = fit_linear_baseline(observations, targets, mask, ridge=1e-5)
    finally:
        torch.set_num_threads(previous)
    for k in range(tasks):
        x = np.concatenate([_rows(observations, k, m, steps) for m in range(trajectories)])
        y = targets[:, k].T.reshape(-1).numpy()
        weights = np.linalg.solve(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y)
        expected = (x @ weights).reshape(trajectories, steps).T
        np.testing.assert_allclose(values[:, k].numpy(), expected, rtol=1e-6, atol=1e-6)
