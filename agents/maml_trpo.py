"""MAML-TRPO: model-agnostic meta-learning for reinforcement learning (Finn et al. 2017).

Algorithm 3 of the paper, with TRPO as the meta-optimiser, and the method of each line::

    randomly initialise θ                                     (the policy's meta-parameters)
    while not done:
        sample a batch of tasks T_k ~ p(T)                        TaskFamily.sample_tasks
        for every T_k:                                            collect:
            sample trajectories D_k with f_θ                        BatchSampler.sample
            θ'_k = θ - α ∇_θ L_{T_k}(f_θ) on D_k                    inner_step  (α = inner_lr)
            sample trajectories D'_k with f_{θ'_k}                  BatchSampler.sample
        θ ← θ + TRPO step on Σ_k L_{T_k}(f_{θ'_k}) using D'_k     meta_step:
              meta-gradient through the inner step                  meta_gradient
              (∇²KL + λI)⁻¹ g by conjugate gradient                 kl_hessian_vector_product
              backtracking line search with a KL check              surrogate_and_kl

The inner loss L is REINFORCE with a per-task linear feature baseline (:meth:`prepare`); the
meta-step maximises the importance-weighted surrogate of the adapted policies within a trust
region ``mean_k KL(π_{θ'_k,old} ‖ π_{θ'_k}) ≤ δ`` (δ = ``max_kl``, λ = ``cg_damping``).  With
several inner steps, fresh trajectories are sampled after each step.  Lines 5-8, and line 10's
surrogate and KL, are :class:`PolicyGradientAdaptation`, which Reptile
(:mod:`metarl.agents.reptile`) shares; the TRPO step is :class:`MAMLTRPO`'s own.

The meta-gradient and the KL's Hessian-vector products are exact and hand-derived
(:mod:`metarl.agents.common.curvature`); the last section of the class computes the same
quantities by double backpropagation through the inner step, the reference they are tested
against (``hessian_method: double_backprop``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)
from torch import Tensor

from metarl.agents.common.baseline import baseline_values
from metarl.agents.common.curvature import (
    AdaptationJacobian,
    GaussianFisher,
    GaussianLogLikelihood,
    MeanNetwork,
    Vectors,
    meta_kl_hessian_product,
    split_parameters,
    summed_vjp,
)
from metarl.agents.common.episodes import (
    Episodes,
    TaskSamples,
    discounted_returns,
    generalized_advantages,
    live_samples,
    masked_mean_per_task,
    normalize_per_task,
)
from metarl.agents.common.numerics import check_finite
from metarl.agents.common.optim import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    flatten,
    hessian_vector_product,
    unflatten,
)
from metarl.agents.common.policies import GaussianMLPPolicy, Params, gaussian_kl, gaussian_log_prob
from metarl.agents.common.runtime import keep_freed_memory
from metarl.agents.common.sampling import BatchSampler
from metarl.agents.common.timing import PhaseTimer
from metarl.envs import Task


class AdaptationConfig(BaseModel):
    """The meta-batch and the inner policy-gradient steps (defaults: the original work)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_tasks: PositiveInt = 40  # tasks per meta-batch
    num_trajectories: PositiveInt = 20  # trajectories per task per sampling step
    # inner gradient steps during meta-training; 0: none, the meta-step is plain TRPO on all
    # tasks (the paper's "pretrained" baseline for 2D navigation)
    num_inner_steps: NonNegativeInt = 1
    # α; negative: the inner step amplifies the loss ("negative inner step" variant)
    inner_lr: float = 0.1
    gamma: float = Field(0.99, gt=0.0, le=1.0)  # discount γ
    gae_lambda: float = Field(1.0, ge=0.0, le=1.0)  # GAE λ
    baseline_ridge: PositiveFloat = 1e-5  # ridge of the linear feature baseline
    # parameters the inner step adapts: all (MAML), or the head, the mean's output layer and the
    # log-std, the body learned by the outer loop alone (ANIL, Raghu et al. 2020)
    inner_parameters: Literal["all", "head"] = "all"

    @field_validator("inner_lr")
    @classmethod
    def _non_zero(cls, value: float) -> float:
        if value == 0 or not math.isfinite(value):
            raise ValueError("must be a non-zero number (negative: the negative inner step)")
        return value


class MAMLTRPOConfig(AdaptationConfig):
    """MAML-TRPO hyperparameters (defaults: the original work)."""

    first_order: bool = False  # drop second-order terms of the meta-gradient
    max_kl: PositiveFloat = 0.01  # trust region δ
    cg_iterations: PositiveInt = 10
    cg_damping: float = Field(1e-5, ge=0.0)  # λ
    line_search_max_steps: PositiveInt = 15
    line_search_backtrack_ratio: float = Field(0.8, gt=0.0, lt=1.0)
    # exact Hessian-vector products of the meta-KL: per-task Jacobian products (fast) or
    # double backpropagation through the inner update (the straightforward reference)
    hessian_method: Literal["jacobian", "double_backprop"] = "jacobian"
    # fraction of each task's post-update samples the conjugate gradient's Fisher products (and
    # so the step's length from ½ dᵀHd) use, as TRPO implementations subsample them; 1: all of
    # them, exact.  The inner losses' Hessians, the meta-gradient and the line search's KL check
    # always use every sample.
    cg_subsample: float = Field(1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _subsample_needs_jacobian(self) -> MAMLTRPOConfig:
        if self.cg_subsample < 1 and self.hessian_method != "jacobian":
            raise ValueError("cg_subsample below 1 needs hessian_method 'jacobian'")
        return self


ConfigT = TypeVar("ConfigT", bound=AdaptationConfig)


@dataclass
class MetaBatch:
    """The trajectories of one meta-iteration: D_k before each inner step, D'_k after the last,
    and the parameters θ'_k that sampled D'_k."""

    train: list[Episodes]  # one Episodes per inner step
    valid: Episodes
    adapted: Params  # θ'_k per task (with no inner step, θ itself)


@dataclass
class MetaGradient:
    """The post-adaptation surrogate at the current meta-parameters, its meta-gradient, and the
    damped Hessian of the trust region's KL as a product."""

    surrogate: Tensor  # Σ_k L_{T_k}(f_{θ'_k}) / K, a scalar
    gradient: Tensor  # ∇_θ of the surrogate, through the inner step(s), flat
    kl_hessian_vector_product: Callable[[Tensor], Tensor]  # v ↦ (∇²_θ KL + λI) v, flat
    old: tuple[Tensor, Tensor]  # mean and log σ of the adapted policies (the KL's reference)


@dataclass
class MetaStepInfo:
    """What a meta-step did (Reptile's has no line search: 0 steps, the whole step taken)."""

    accepted: bool
    surrogate_before: float
    surrogate_after: float
    kl: float
    line_search_steps: int
    step_fraction: float
    rejected_reason: str | None = None  # the stage that met a NaN or Inf (numerics.STAGES)

    @classmethod
    def rejected(cls, reason: str) -> MetaStepInfo:
        """A meta-step rejected for a non-finite value: the meta-parameters were not changed."""
        return cls(False, math.nan, math.nan, 0.0, 0, 0.0, reason)


class PolicyGradientAdaptation(Generic[ConfigT]):
    """Adapts ``policy`` to each task of a meta-batch by inner policy-gradient steps, sampling
    fresh trajectories after each (lines 5-8), and scores the adapted policies (line 10's
    surrogate and KL); the meta-update is the subclass's.

    ``timer`` receives the seconds spent in each phase (``sampling``, ``adaptation``, and the
    meta-step's).
    """

    def __init__(
        self,
        policy: GaussianMLPPolicy,
        config: ConfigT,
        timer: PhaseTimer | None = None,
    ) -> None:
        self.policy = policy
        self.config = config
        self.timer = timer or PhaseTimer()
        keep_freed_memory()  # batch-sized buffers are reused, not page-faulted anew each pass

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.policy.parameters()).dtype

    @property
    def adapted(self) -> list[bool]:
        """Per meta-parameter, whether the inner step adapts it (``inner_parameters``)."""
        head = f"layers.{len(self.policy.layers) - 1}."
        names = self.policy.meta_parameters()
        if self.config.inner_parameters == "all":
            return [True] * len(names)
        return [name == "log_std" or name.startswith(head) for name in names]

    # ------------------------------------------------------------------ lines 5-8
    def collect(self, tasks: Sequence[Task], sampler: BatchSampler) -> MetaBatch:
        """Sample D_k with θ, take the inner step(s), sample D'_k with θ'_k (with no inner
        step, D'_k is sampled with θ)."""
        params: Params = self.policy.meta_parameters()
        train: list[Episodes] = []
        for _ in range(self.config.num_inner_steps):
            with self.timer("sampling"):
                episodes = self.prepare(sampler.sample(tasks, self.policy, params))
            train.append(episodes)
            with self.timer("adaptation"):
                params = self.inner_step(params, episodes)
        with self.timer("sampling"):
            valid = self.prepare(sampler.sample(tasks, self.policy, params))
        return MetaBatch(train, valid, params)

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

    @torch.no_grad()
    def inner_step(
        self, params: Params, episodes: Episodes, step_size: float | None = None
    ) -> Params:
        """``θ'_k = θ - α ∇_θ L_k(θ)`` for every task k at once (α = ``step_size``, by default
        ``inner_lr``), with the hand-derived gradient of :meth:`log_likelihood`.

        ``params`` is shared (the meta-parameters) or already per task; the result is per task.
        """
        tensors = [p.detach() for p in self._per_task(params, episodes.num_tasks).values()]
        loss = self.log_likelihood(tensors, live_samples(episodes), -1.0, second_order=False)
        alpha = self.config.inner_lr if step_size is None else step_size
        updates = zip(params, tensors, loss.gradient, self.adapted)
        return {name: p - alpha * g if adapted else p for name, p, g, adapted in updates}

    def adapt(self, params: Params, batch: MetaBatch) -> Params:
        """θ'_k after all inner steps, each on its own trajectories D_k."""
        for episodes in batch.train:
            params = self.inner_step(params, episodes)
        return params

    def _per_task(self, params: Params, num_tasks: int) -> Params:
        """``params`` with a leading task dimension (shared ones expanded, not copied)."""
        return {
            name: p if p.dim() > reference.dim() else p.expand(num_tasks, *p.shape)
            for (name, p), reference in zip(params.items(), self.policy.parameters())
        }

    def log_likelihood(
        self, params: Vectors, samples: TaskSamples, scale: float, second_order: bool
    ) -> GaussianLogLikelihood:
        """``scale · Σ_k mean_t,m[A log π_k(a|s)]`` over the live ``samples`` at per-task
        ``params`` (scale -1: the inner losses), with its exact derivatives."""
        network = self.mean_network(params, samples)
        rho = scale * samples.advantages * samples.weights
        log_std = split_parameters(params)[2]
        return GaussianLogLikelihood(network, log_std, samples.actions, rho, second_order)

    def mean_network(self, params: Vectors, samples: TaskSamples) -> MeanNetwork:
        """The policy's mean network at per-task ``params`` on the ``samples``' observations."""
        weights, biases, _ = split_parameters(params)
        return MeanNetwork(weights, biases, samples.observations, self.policy.nonlinearity)

    # ------------------------------------------------------------------ line 10: the objective
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


class MAMLTRPO(PolicyGradientAdaptation[MAMLTRPOConfig]):
    """The MAML-TRPO agent: adapts ``policy`` per task and meta-updates it in place by a TRPO
    step through the inner step(s) (timed phases: ``meta_gradient``, ``conjugate_gradient``,
    ``line_search``).
    """

    # ------------------------------------------------------------------ line 10: the meta-step
    @torch.no_grad()
    def meta_gradient(self, batch: MetaBatch) -> MetaGradient:
        """The surrogate, its meta-gradient ``Σ_k J_kᵀ ∇L_k(θ'_k) / K`` (``J_k = ∂θ'_k/∂θ``) and
        the KL's damped Hessian-vector product ``mean_k J_kᵀ F_k J_k + λI``, all exact, from
        passes computed once per meta-step (:mod:`metarl.agents.common.curvature`).  With
        ``cg_subsample`` below 1, ``F_k`` is that of a part of task k's post-update samples
        (:meth:`TaskSamples.subsample`); everything else stays exact."""
        cfg = self.config
        valid, num_tasks = batch.valid, batch.valid.num_tasks
        second_order = not cfg.first_order
        params = [p.detach().expand(num_tasks, *p.shape) for p in self.policy.parameters()]
        inner_losses = []
        for episodes in batch.train:  # θ'_k = θ - α ∇L_k(θ), as in inner_step
            loss = self.log_likelihood(params, live_samples(episodes), -1.0, second_order)
            inner_losses.append(loss)
            updates = zip(params, loss.gradient, self.adapted)
            params = [p - cfg.inner_lr * g if adapted else p for p, g, adapted in updates]
        # At θ'_old the importance ratio is 1: the surrogate's gradient is the log-likelihood's.
        samples = live_samples(valid)
        post = self.log_likelihood(params, samples, -1.0 / num_tasks, second_order=False)
        selection = None if cfg.inner_parameters == "all" else self.adapted
        jacobian = AdaptationJacobian(inner_losses, cfg.inner_lr, cfg.first_order, selection)
        gradient = flatten(summed_vjp(jacobian, post.gradient))
        log_std = split_parameters(params)[2]
        fisher_samples, network = samples, post.network
        if cfg.cg_subsample < 1:
            fisher_samples = samples.subsample(cfg.cg_subsample)
            network = self.mean_network(params, fisher_samples)
        fisher = GaussianFisher(network, log_std, fisher_samples.weights / num_tasks)
        kl_hessian_product = meta_kl_hessian_product(jacobian, fisher, num_tasks, cfg.cg_damping)
        like = list(self.policy.parameters())

        def kl_hessian_vector_product(vector: Tensor) -> Tensor:
            return flatten(kl_hessian_product(unflatten(vector, like)))

        steps, _, trajectories = valid.mask.shape
        mean = samples.scatter(post.network.output, steps * trajectories)  # 0 where not taken
        mean = mean.view(num_tasks, steps, trajectories, -1).movedim(0, 1)
        old = (mean, log_std.unsqueeze(-2))
        return MetaGradient(post.rho.sum(), gradient, kl_hessian_vector_product, old)

    def meta_step(self, batch: MetaBatch) -> MetaStepInfo:
        """One TRPO step on the meta-parameters, through the inner step(s).

        Raises :class:`NonFiniteError` (the meta-parameters unchanged) at the first stage that
        meets a NaN or an Inf."""
        cfg = self.config
        episodes = [*batch.train, batch.valid]
        check_finite("returns", *(e.rewards for e in episodes))
        check_finite("advantages", *(e.advantages for e in episodes if e.advantages is not None))
        with self.timer("meta_gradient"):
            if cfg.hessian_method == "jacobian":
                meta = self.meta_gradient(batch)
            else:
                meta = self.meta_gradient_by_double_backprop(batch)
        check_finite("loss", meta.surrogate, *meta.old)  # the old policies: the KL's reference
        check_finite("gradient", meta.gradient)

        with self.timer("conjugate_gradient"):
            solved = conjugate_gradient(
                meta.kl_hessian_vector_product, -meta.gradient, cfg.cg_iterations
            )
            direction, half_dHd = solved.solution, 0.5 * solved.quadratic_form()
        check_finite("cg_direction", direction, half_dHd)

        surrogate_before = float(meta.surrogate.item())
        if half_dHd <= 0:  # no descent direction (finiteness was checked above)
            return MetaStepInfo(False, surrogate_before, surrogate_before, 0.0, 0, 0.0)
        with self.timer("line_search"):
            full_step = direction * math.sqrt(cfg.max_kl / half_dHd.item())  # ½ sᵀHs = δ
            search = self._line_search(batch, meta, full_step, surrogate_before)
        return MetaStepInfo(
            accepted=search.accepted,
            surrogate_before=surrogate_before,
            surrogate_after=search.loss if search.accepted else surrogate_before,
            kl=search.kl if search.accepted else 0.0,
            line_search_steps=search.num_steps,
            step_fraction=search.step_fraction,
        )

    def _line_search(
        self, batch: MetaBatch, meta: MetaGradient, full_step: Tensor, surrogate_before: float
    ) -> LineSearchResult:
        """Backtrack along ``full_step`` until the surrogate improves within the trust region;
        the meta-parameters are set to the accepted point (left as they are if none is)."""
        cfg = self.config
        tensors = list(self.policy.parameters())
        names = list(self.policy.meta_parameters())

        def evaluate(candidate: Tensor) -> tuple[float, float]:
            adapted = self.adapt(dict(zip(names, unflatten(candidate, tensors))), batch)
            with torch.no_grad():
                loss, divergence = self.surrogate_and_kl(adapted, batch, meta.old)
            return float(loss.item()), float(divergence.item())

        new_params, search = backtracking_line_search(
            evaluate,
            flatten([t.detach() for t in tensors]),
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
        return search

    # ------------------------------------------------------------------ the reference
    # Double backpropagation through the inner update (as pytorch-maml-rl does): the
    # straightforward definition of the same quantities, slower; the tests compare both.
    def inner_step_with_graph(self, params: Params, episodes: Episodes) -> Params:
        """:meth:`inner_step` as an autograd expression, differentiable to second order (in
        first-order mode the inner gradient is treated as a constant)."""
        per_task = self._per_task(params, episodes.num_tasks)
        assert episodes.advantages is not None, "prepare() attaches advantages"
        log_prob = self.policy.log_prob(episodes.observations, episodes.actions, per_task)
        inner_loss = -masked_mean_per_task(log_prob * episodes.advantages, episodes.mask)
        grads = torch.autograd.grad(
            inner_loss.sum(), list(per_task.values()), create_graph=not self.config.first_order
        )
        alpha = self.config.inner_lr
        updates = zip(per_task.items(), grads, self.adapted)
        return {name: p - alpha * g if adapted else p for (name, p), g, adapted in updates}

    def old_distribution(self, batch: MetaBatch) -> tuple[Tensor, Tensor]:
        """Mean and log σ of the adapted policies at the current meta-parameters, as constants
        (copies: with no inner step, log σ would otherwise be the live parameter itself)."""
        adapted = self.adapt(self.policy.meta_parameters(), batch)
        with torch.no_grad():
            mean, log_std = self.policy.mean_and_log_std(batch.valid.observations, adapted)
        return mean.detach().clone(), log_std.detach().clone()

    def adapt_with_graph(self, params: Params, batch: MetaBatch) -> Params:
        """:meth:`adapt` as an autograd expression of ``params``."""
        for episodes in batch.train:
            params = self.inner_step_with_graph(params, episodes)
        return params

    def meta_objective(self, params: Params, batch: MetaBatch) -> tuple[Tensor, Tensor]:
        """Surrogate and KL as differentiable functions of the meta-parameters ``params``."""
        old = self.old_distribution(batch)
        return self.surrogate_and_kl(self.adapt_with_graph(params, batch), batch, old)

    def meta_gradient_by_double_backprop(self, batch: MetaBatch) -> MetaGradient:
        """:meth:`meta_gradient` by double backpropagation of the surrogate and the KL."""
        params = self.policy.meta_parameters()
        tensors = list(params.values())
        old = self.old_distribution(batch)
        surrogate, kl = self.surrogate_and_kl(self.adapt_with_graph(params, batch), batch, old)
        gradient = flatten(torch.autograd.grad(surrogate, tensors, retain_graph=True))
        product = hessian_vector_product(kl, tensors, self.config.cg_damping)
        return MetaGradient(surrogate.detach(), gradient, product, old)


__all__ = [
    "AdaptationConfig",
    "MAMLTRPO",
    "MAMLTRPOConfig",
    "MetaBatch",
    "MetaGradient",
    "MetaStepInfo",
    "PolicyGradientAdaptation",
]
