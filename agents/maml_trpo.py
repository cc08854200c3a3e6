"""MAML-TRPO: model-agnostic meta-learning for reinforcement learning (Finn et al. 2017).

Algorithm 3 of the paper, with TRPO as the meta-optimiser::

    randomly initialise θ                                        (the policy's meta-parameters)
    while not done:
        sample a batch of tasks T_k ~ p(T)                            -> sample_tasks
        for every T_k:
            sample trajectories D_k with f_θ                          -> collect
            θ'_k = θ - α ∇_θ L_{T_k}(f_θ)  on D_k    (inner step, α = inner_lr)   -> adapt
            sample trajectories D'_k with f_{θ'_k}
        θ ← TRPO step on Σ_k L_{T_k}(f_{θ'_k}) using D'_k,           -> meta_step
            differentiating through the inner step (second order)

The inner loss L is REINFORCE with a per-task linear feature baseline; the meta-step maximises
the importance-weighted surrogate of the adapted policies within a trust region
``mean_k KL(π_{θ'_k,old} ‖ π_{θ'_k}) ≤ δ`` (δ = ``max_kl``), via conjugate gradient on exact
Hessian-vector products and a backtracking line search.  With several inner steps, fresh
trajectories are sampled after each step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from envs import Task
from metarl.baseline import baseline_values
from metarl.config import AlgorithmConfig
from metarl.curvature import (
    AdaptationJacobian,
    GaussianFisher,
    InnerStep,
    meta_kl_hessian_product,
)
from metarl.episodes import (
    Episodes,
    discounted_returns,
    generalized_advantages,
    masked_mean_per_task,
    normalize_per_task,
)
from metarl.numerics import NonFiniteError, check_finite
from metarl.optim import (
    backtracking_line_search,
    conjugate_gradient,
    flatten,
    hessian_vector_product,
    unflatten,
)
from metarl.policies import GaussianMLPPolicy, Params, gaussian_kl, gaussian_log_prob
from metarl.sampling import BatchSampler


@dataclass
class MetaBatch:
    """The trajectories of one meta-iteration: D_k before each inner step, D'_k after the last."""

    train: list[Episodes]  # one Episodes per inner step
    valid: Episodes


@dataclass
class MetaStepInfo:
    """What the TRPO meta-step did."""

    accepted: bool
    surrogate_before: float
    surrogate_after: float
    kl: float
    line_search_steps: int
    step_fraction: float
    times: dict[str, float] = field(default_factory=dict)
    rejected_reason: str | None = None  # the stage that met a NaN or Inf (metarl.numerics)

    @classmethod
    def rejected(cls, reason: str) -> MetaStepInfo:
        """A meta-step rejected for a non-finite value: the meta-parameters were not changed."""
        times = dict.fromkeys(("meta_gradient", "conjugate_gradient", "line_search"), 0.0)
        return cls(False, math.nan, math.nan, 0.0, 0, 0.0, times, reason)


class MAMLTRPO:
    """The MAML-TRPO agent: adapts ``policy`` per task and meta-updates it in place."""

    def __init__(self, policy: GaussianMLPPolicy, config: AlgorithmConfig) -> None:
        self.policy = policy
        self.config = config

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.policy.parameters()).dtype

    # ------------------------------------------------------------------ collect + adapt
    def collect(self, tasks: Sequence[Task], sampler: BatchSampler) -> tuple[MetaBatch, float]:
        """Lines 5-8: sample D_k with θ, adapt, sample again; returns the batch and the time
        spent in adaptation (the rest is sampling)."""
        params: Params = self.policy.meta_parameters()
        train: list[Episodes] = []
        adaptation_time = 0.0
        for _ in range(self.config.num_inner_steps):
            episodes = self.prepare(sampler.sample(tasks, self.policy, params))
            train.append(episodes)
            start = time.perf_counter()
            adapted = self.inner_update(params, episodes)
            params = {k: v.detach().requires_grad_() for k, v in adapted.items()}
            adaptation_time += time.perf_counter() - start
        valid = self.prepare(sampler.sample(tasks, self.policy, params))
        return MetaBatch(train, valid), adaptation_time

    def prepare(self, episodes: Episodes) -> Episodes:
        """Move to the learning device and attach normalised advantages (baseline per task)."""
        episodes = episodes.to(self.device, self.dtype)
        cfg = self.config
        returns = discounted_returns(episodes.rewards, episodes.mask, cfg.gamma)
        values = baseline_values(episodes, returns, cfg.baseline_ridge)
        advantages = generalized_advantages(
            episodes.rewards, values, episodes.mask, cfg.gamma, cfg.gae_lambda
        )
        episodes.advantages = normalize_per_task(advantages, episodes.mask)
        return episodes

    def inner_loss(self, params: Params, episodes: Episodes) -> Tensor:
        """REINFORCE loss ``-E[log π(a|s) A]`` of each task: shape ``[K]``."""
        assert episodes.advantages is not None, "prepare() attaches advantages"
        log_prob = self.policy.log_prob(episodes.observations, episodes.actions, params)
        return -masked_mean_per_task(log_prob * episodes.advantages, episodes.mask)

    def inner_update(
        self,
        params: Params,
        episodes: Episodes,
        create_graph: bool = False,
        inner_lr: float | None = None,
    ) -> Params:
        """One inner step ``θ'_k = θ - α ∇_θ L_k(θ)`` for every task k at once
        (α = ``inner_lr``, by default the config's).

        ``params`` is shared (the meta-parameters) or already per task; the result is per task.
        With ``create_graph`` the step stays differentiable to second order; in first-order mode
        the inner gradient is treated as a constant.
        """
        num_tasks = episodes.num_tasks
        per_task = {
            name: p if p.dim() > reference.dim() else p.expand(num_tasks, *p.shape)
            for (name, p), reference in zip(params.items(), self.policy.parameters())
        }
        loss = self.inner_loss(per_task, episodes).sum()
        second_order = create_graph and not self.config.first_order
        grads = torch.autograd.grad(loss, list(per_task.values()), create_graph=second_order)
        step_size = self.config.inner_lr if inner_lr is None else inner_lr
        return {name: p - step_size * g for (name, p), g in zip(per_task.items(), grads)}

    def adapt(self, params: Params, batch: MetaBatch, create_graph: bool = False) -> Params:
        """θ'_k after all inner steps, each on its own trajectories D_k."""
        for episodes in batch.train:
            params = self.inner_update(params, episodes, create_graph)
        return params

    # ------------------------------------------------------------------ meta-objective
    def surrogate_and_kl(
        self, adapted: Params, batch: MetaBatch, old: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Post-adaptation surrogate ``-mean_k E[π_θ'/π_old · A]`` and mean KL(π_old ‖ π_θ')."""
        valid = batch.valid
        assert valid.advantages is not None, "prepare() attaches advantages"
        mean, log_std = self.policy.mean_and_log_std(valid.observations, adapted)
        old_mean, old_log_std = old
        log_ratio = gaussian_log_prob(valid.actions, mean, log_std) - gaussian_log_prob(
            valid.actions, old_mean, old_log_std
        )
        surrogate = -masked_mean_per_task(torch.exp(log_ratio) * valid.advantages, valid.mask)
        kl = masked_mean_per_task(gaussian_kl(old_mean, old_log_std, mean, log_std), valid.mask)
        return surrogate.mean(), kl.mean()

    def old_distribution(self, batch: MetaBatch) -> tuple[Tensor, Tensor]:
        """Mean and log σ of the adapted policies at the current meta-parameters (constants)."""
        with torch.enable_grad():
            adapted = self.adapt(self.policy.meta_parameters(), batch)
        with torch.no_grad():
            mean, log_std = self.policy.mean_and_log_std(batch.valid.observations, adapted)
        return mean, log_std

    def meta_objective(self, params: Params, batch: MetaBatch) -> tuple[Tensor, Tensor]:
        """Surrogate and KL as differentiable functions of the meta-parameters ``params``,
        by backpropagation through the inner update(s) (the straightforward definition)."""
        adapted = self.adapt(params, batch, create_graph=True)
        return self.surrogate_and_kl(adapted, batch, self.old_distribution(batch))

    def differentiable_adaptation(self, batch: MetaBatch) -> list[InnerStep]:
        """The inner steps from the current meta-parameters with per-task leaves and their
        gradient graphs, for exact Jacobian products; the last leaves are θ'_k."""
        num_tasks = batch.valid.num_tasks
        names = list(self.policy.meta_parameters())
        leaves = [
            p.detach().expand(num_tasks, *p.shape).clone().requires_grad_()
            for p in self.policy.parameters()
        ]
        steps = []
        for episodes in batch.train:
            loss = self.inner_loss(dict(zip(names, leaves)), episodes).sum()
            grads = torch.autograd.grad(loss, leaves, create_graph=not self.config.first_order)
            steps.append(InnerStep(leaves, list(grads)))
            leaves = [
                (p - self.config.inner_lr * g).detach().requires_grad_()
                for p, g in zip(leaves, grads)
            ]
        steps.append(InnerStep(leaves, []))
        return steps

    def curvature(self, batch: MetaBatch) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
        """Surrogate value, its meta-gradient and ``v ↦ (∇²KL + damping·I) v``, all exact.

        Built once per meta-step from per-task Jacobian products (see :mod:`metarl.curvature`)
        rather than by double backpropagation through the whole meta-objective.
        """
        cfg = self.config
        valid = batch.valid
        *inner_steps, final = self.differentiable_adaptation(batch)
        names = list(self.policy.meta_parameters())
        adapted = dict(zip(names, final.params))
        mean, log_std = self.policy.mean_and_log_std(valid.observations, adapted)
        old = (mean.detach(), log_std.detach())
        surrogate, _ = self.surrogate_and_kl(adapted, batch, old)
        jacobian = AdaptationJacobian(inner_steps, cfg.inner_lr, cfg.first_order)
        cotangent = torch.autograd.grad(surrogate, final.params, retain_graph=True)
        gradient = flatten([g.sum(0) for g in jacobian.vjp(list(cotangent))])
        weights = valid.mask / valid.mask.sum(dim=(0, 2), keepdim=True) / valid.num_tasks
        fisher = GaussianFisher(final.params, mean, names.index("log_std"), weights)
        product = meta_kl_hessian_product(jacobian, fisher, valid.num_tasks, cfg.cg_damping)
        like = list(self.policy.parameters())

        def flat_product(vector: Tensor) -> Tensor:
            return flatten(product(unflatten(vector, like)))

        return surrogate.detach(), gradient, flat_product

    def curvature_by_double_backprop(
        self, batch: MetaBatch
    ) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
        """The same triple as :meth:`curvature`, by double backpropagation of the KL through the
        inner update(s) (as pytorch-maml-rl does): the slower reference."""
        params = self.policy.meta_parameters()
        tensors = list(params.values())
        surrogate, kl = self.meta_objective(params, batch)
        gradient = flatten(torch.autograd.grad(surrogate, tensors, retain_graph=True))
        product = hessian_vector_product(kl, tensors, self.config.cg_damping)
        return surrogate.detach(), gradient, product

    # ------------------------------------------------------------------ TRPO meta-step
    def meta_step(self, batch: MetaBatch) -> MetaStepInfo:
        """Line 10: one TRPO step on the meta-parameters, through the inner update(s)."""
        cfg = self.config
        times: dict[str, float] = {}
        episodes = [*batch.train, batch.valid]
        check_finite("returns", *(e.rewards for e in episodes))
        check_finite("advantages", *(e.advantages for e in episodes if e.advantages is not None))
        start = time.perf_counter()
        if cfg.hessian_method == "jacobian":
            surrogate, gradient, fisher_product = self.curvature(batch)
        else:
            surrogate, gradient, fisher_product = self.curvature_by_double_backprop(batch)
        times["meta_gradient"] = time.perf_counter() - start
        check_finite("loss", surrogate)
        check_finite("gradient", gradient)

        start = time.perf_counter()
        direction = conjugate_gradient(fisher_product, -gradient, cfg.cg_iterations)
        curvature = 0.5 * direction @ fisher_product(direction)
        times["conjugate_gradient"] = time.perf_counter() - start
        check_finite("cg_direction", direction, curvature)

        surrogate_before = float(surrogate.item())
        start = time.perf_counter()
        if curvature <= 0:  # no descent direction (finiteness was checked above)
            times["line_search"] = time.perf_counter() - start
            return MetaStepInfo(False, surrogate_before, surrogate_before, 0.0, 0, 0.0, times)
        full_step = direction * math.sqrt(cfg.max_kl / curvature.item())
        tensors = list(self.policy.parameters())
        names = list(self.policy.meta_parameters())
        current = flatten([t.detach() for t in tensors])
        old = self.old_distribution(batch)

        def evaluate(candidate: Tensor) -> tuple[float, float]:
            trial = {n: t.requires_grad_() for n, t in zip(names, unflatten(candidate, tensors))}
            adapted = self.adapt(trial, batch)
            with torch.no_grad():
                loss, divergence = self.surrogate_and_kl(adapted, batch, old)
            return float(loss.item()), float(divergence.item())

        new_params, search = backtracking_line_search(
            evaluate,
            current,
            full_step,
            surrogate_before,
            cfg.max_kl,
            cfg.line_search_max_steps,
            cfg.line_search_backtrack_ratio,
        )
        check_finite("kl", search.kl)
        with torch.no_grad():
            for tensor, value in zip(tensors, unflatten(new_params, tensors)):
                tensor.copy_(value)
        times["line_search"] = time.perf_counter() - start
        return MetaStepInfo(
            accepted=search.accepted,
            surrogate_before=surrogate_before,
            surrogate_after=search.loss if search.accepted else surrogate_before,
            kl=search.kl if search.accepted else 0.0,
            line_search_steps=search.num_steps,
            step_fraction=search.step_fraction,
            times=times,
        )

    # ------------------------------------------------------------------ one iteration
    def train_iteration(
        self, tasks: Sequence[Task], sampler: BatchSampler
    ) -> tuple[dict[str, float], MetaStepInfo]:
        """Collect, adapt and meta-update once; returns the iteration's metrics."""
        start = time.perf_counter()
        batch, adaptation_time = self.collect(tasks, sampler)
        sampling_time = time.perf_counter() - start - adaptation_time
        try:
            step = self.meta_step(batch)
        except NonFiniteError as error:  # rejected before the meta-parameters changed
            step = MetaStepInfo.rejected(error.stage)
        metrics: dict[str, float] = {
            "env_steps": sum(e.env_steps for e in batch.train) + batch.valid.env_steps,
            "return_pre": batch.train[0].mean_return(),
            "return_post": batch.valid.mean_return(),
            "kl": step.kl,
            "surrogate_before": step.surrogate_before,
            "surrogate_after": step.surrogate_after,
            "line_search_steps": step.line_search_steps,
            "step_accepted": float(step.accepted),
            "time_sampling": sampling_time,
            "time_adaptation": adaptation_time,
            "time_meta_gradient": step.times["meta_gradient"],
            "time_conjugate_gradient": step.times["conjugate_gradient"],
            "time_line_search": step.times["line_search"],
        }
        metrics["time_learning"] = adaptation_time + sum(step.times.values())
        for i, episodes in enumerate(batch.train[1:], start=1):
            metrics[f"return_step{i}"] = episodes.mean_return()
        return metrics, step
