"""The linear feature baseline of rllab (Duan et al. 2016), fitted per task."""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.agents.common.episodes import Episodes


def baseline_features(observations: Tensor, mask: Tensor) -> Tensor:
    """Features ``[o, o², t/100, (t/100)², (t/100)³, 1]`` with ``o`` clipped to ±10.

    ``observations`` is ``[T, K, M, D]``; the result is ``[T, K, M, 2D + 4]``, zero where masked.
    """
    steps = observations.shape[0]
    obs = observations.clamp(-10.0, 10.0)
    time = torch.arange(steps, dtype=obs.dtype, device=obs.device) / 100.0
    time = time.view(steps, 1, 1, 1).expand(*obs.shape[:-1], 1)
    ones = torch.ones_like(time)
    features = torch.cat([obs, obs.pow(2), time, time.pow(2), time.pow(3), ones], dim=-1)
    return features * mask.unsqueeze(-1)


def fit_linear_baseline(
    observations: Tensor, targets: Tensor, mask: Tensor, ridge: float = 1e-5
) -> Tensor:
    """Per-task ridge regression of ``targets`` on the baseline features; returns fitted values.

    Solves ``(XᵀX + ridge·I) w = Xᵀy`` for each task in float64 by Cholesky factorisation (the
    matrix is symmetric positive definite), raising ``ridge`` tenfold (up to five times, as rllab
    does) if the factorisation fails or the solution is not finite.  Output: values ``[T, K, M]``.
    """
    features = baseline_features(observations.double(), mask.double())
    num_features = features.shape[-1]
    x = features.permute(1, 0, 2, 3).reshape(features.shape[1], -1, num_features)  # [K, TM, F]
    y = (targets.double() * mask.double()).permute(1, 0, 2).reshape(x.shape[0], -1, 1)
    gram, moment = x.transpose(1, 2) @ x, x.transpose(1, 2) @ y
    identity = torch.eye(num_features, dtype=x.dtype, device=x.device)
    for _ in range(5):
        # Not an LU solve: torch 2.13's batched LU solve fails on these matrices once torch's
        # thread count has been changed (as the sampler does), with "Pivots given to lu_solve".
        factor, info = torch.linalg.cholesky_ex(gram + ridge * identity)
        weights = torch.cholesky_solve(moment, factor)
        if bool((info == 0).all()) and torch.isfinite(weights).all():
            break
        ridge *= 10
    values = (features @ weights.unsqueeze(0)).squeeze(-1)  # [T, K, M]
    return values.to(targets.dtype)


def baseline_values(episodes: Episodes, returns: Tensor, ridge: float) -> Tensor:
    """Baseline values for ``episodes`` fitted on their own discounted ``returns``."""
    return fit_linear_baseline(episodes.observations, returns, episodes.mask, ridge)
