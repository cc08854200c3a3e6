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
    GaussianLogLikelihood,
    MeanNetwork,
    Vectors,
    meta_kl_hessian_product,
    split_parameters,
)
from metarl.episodes import (
    Episodes,
    TaskSamples,
    discounted_returns,
    generalized_advantages,
    live_samples,
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
from metarl.runtime import keep_freed_memory
from metarl.sampling import BatchSampler


@dataclass
class MetaBatch:
    """The trajectories of one meta-iteration: D_k before each inner step, D'_k after the last."""

    train: list[Episodes]  # one Episodes per inner step
    valid: Episodes


@dataclass
class MetaCurvature:
    """What the TRPO meta-step needs at the current meta-parameters."""

    surrogate: Tensor  # post-adaptation surrogate (a scalar)
    gradient: Tensor  # its meta-gradient, flat
    product: Callable[[Tensor], Tensor]  # v ↦ (∇²KL + damping·I) v, flat
    old: tuple[Tensor, Tensor]  # the adapted policies' mean and log σ (the KL's reference)


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
        keep_freed_memory()  # batch-sized buffers are reused, not page-faulted anew each pass

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
            params = self.inner_update(params, episodes)
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
        With ``create_graph`` the step is an autograd expression, differentiable to second order
        (in first-order mode the inner gradient is treated as a constant): the reference path of
        double backpropagation.  Without it the gradient is the hand-derived one of
        :meth:`log_likelihood` and the result is a constant.
        """
        num_tasks = episodes.num_tasks
        per_task = {
            name: p if p.dim() > reference.dim() else p.expand(num_tasks, *p.shape)
            for (name, p), reference in zip(params.items(), self.policy.parameters())
        }
        step_size = self.config.inner_lr if inner_lr is None else inner_lr
        if not create_graph:
            with torch.no_grad():
                tensors = [p.detach() for p in per_task.values()]
                samples = live_samples(episodes)
                loss = self.log_likelihood(tensors, samples, -1.0, second_order=False)
                return {
                    name: p - step_size * g for name, p, g in zip(per_task, tensors, loss.gradient)
                }
        second_order = not self.config.first_order
        grads = torch.autograd.grad(
            self.inner_loss(per_task, episodes).sum(),
            list(per_task.values()),
            create_graph=second_order,
        )
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
        adapted = self.adapt(self.policy.meta_parameters(), batch)
        with torch.no_grad():
            return self.policy.mean_and_log_std(batch.valid.observations, adapted)

    def meta_objective(self, params: Params, batch: MetaBatch) -> tuple[Tensor, Tensor]:
        """Surrogate and KL as differentiable functions of the meta-parameters ``params``,
        by backpropagation through the inner update(s) (the straightforward definition)."""
        adapted = self.adapt(params, batch, create_graph=True)
        return self.surrogate_and_kl(adapted, batch, self.old_distribution(batch))

    def log_likelihood(
        self, params: Vectors, samples: TaskSamples, scale: float, second_order: bool
    ) -> GaussianLogLikelihood:
        """``scale · Σ_k mean_t,m[A log π_k(a|s)]`` over the live ``samples`` at per-task
        ``params`` (scale -1: the inner losses), with its exact derivatives
        (:mod:`metarl.curvature`)."""
        weights, biases, log_std = split_parameters(params)
        network = MeanNetwork(weights, biases, samples.observations, self.policy.nonlinearity)
        rho = scale * samples.advantages * samples.weights
        return GaussianLogLikelihood(network, log_std, samples.actions, rho, second_order)

    @torch.no_grad()
    def curvature(self, batch: MetaBatch) -> MetaCurvature:
        """Surrogate, meta-gradient and ``v ↦ (∇²KL + damping·I) v``, all exact, from
        hand-derived products whose passes are computed once per meta-step (see
        :mod:`metarl.curvature`) rather than by double backpropagation."""
        cfg = self.config
        valid, num_tasks = batch.valid, batch.valid.num_tasks
        second_order = not cfg.first_order
        params = [p.detach().expand(num_tasks, *p.shape) for p in self.policy.parameters()]
        inner_losses = []
        for episodes in batch.train:  # θ'_k = θ - α ∇L_k(θ), as in inner_update
            loss = self.log_likelihood(params, live_samples(episodes), -1.0, second_order)
            inner_losses.append(loss)
            params = [p - cfg.inner_lr * g for p, g in zip(params, loss.gradient)]
        # At θ'_old the importance ratio is 1: the surrogate's gradient is the log-likelihood's.
        samples = live_samples(valid)
        post = self.log_likelihood(params, samples, -1.0 / num_tasks, second_order=False)
        jacobian = AdaptationJacobian(inner_losses, cfg.inner_lr, cfg.first_order)
        gradient = flatten([g.sum(0) for g in jacobian.vjp(post.gradient)])
        surrogate = post.rho.sum()
        log_std = split_parameters(params)[2]
        fisher = GaussianFisher(post.network, log_std, samples.weights / num_tasks)
        product = meta_kl_hessian_product(jacobian, fisher, num_tasks, cfg.cg_damping)
        like = list(self.policy.parameters())

        def flat_product(vector: Tensor) -> Tensor:
            return flatten(product(unflatten(vector, like)))

        steps, _, trajectories = valid.mask.shape
        mean = samples.scatter(post.network.output, steps * trajectories)  # 0 where not taken
        mean = mean.view(num_tasks, steps, trajectories, -1).movedim(0, 1)
        old = (mean, log_std.unsqueeze(-2))
        return MetaCurvature(surrogate, gradient, flat_product, old)

    def curvature_by_double_backprop(self, batch: MetaBatch) -> MetaCurvature:
        """The same as :meth:`curvature`, by double backpropagation of the KL through the
        inner update(s) (as pytorch-maml-rl does): the slower reference."""
        params = self.policy.meta_parameters()
        tensors = list(params.values())
        old = self.old_distribution(batch)
        adapted = self.adapt(params, batch, create_graph=True)
        surrogate, kl = self.surrogate_and_kl(adapted, batch, old)
        gradient = flatten(torch.autograd.grad(surrogate, tensors, retain_graph=True))
        product = hessian_vector_product(kl, tensors, self.config.cg_damping)
        return MetaCurvature(surrogate.detach(), gradient, product, old)

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
            meta = self.curvature(batch)
        else:
            meta = self.curvature_by_double_backprop(batch)
        surrogate, gradient, fisher_product = meta.surrogate, meta.gradient, meta.product
        times["meta_gradient"] = time.perf_counter() - start
        check_finite("loss", surrogate, *meta.old)  # the old policies: the KL's reference
        check_finite("gradient", gradient)

        start = time.perf_counter()
        solved = conjugate_gradient(fisher_product, -gradient, cfg.cg_iterations)
        direction, curvature = solved.solution, 0.5 * solved.quadratic_form()
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

        def evaluate(candidate: Tensor) -> tuple[float, float]:
            adapted = self.adapt(dict(zip(names, unflatten(candidate, tensors))), batch)
            with torch.no_grad():
                loss, divergence = self.surrogate_and_kl(adapted, batch, meta.old)
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
