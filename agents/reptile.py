"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms") with
MAML-TRPO's inner policy-gradient steps.

Algorithm 2 of the paper (the batched version), and the method of each line::

    randomly initialise θ                                  (the policy's meta-parameters)
    for iteration = 1, 2, ...:
        sample tasks T_1..T_n ~ p(T)                           TaskFamily.sample_tasks
        for every T_k: θ'_k = gradient steps on L_{T_k}        collect (MAML-TRPO's inner
                       from θ, fresh trajectories each step      step, α = inner_lr)
        θ ← θ + ε (1/n) Σ_k (θ'_k − θ)                         meta_step (ε = outer_lr)

The inner step is :meth:`PolicyGradientAdaptation.inner_step`, the one MAML-TRPO adapts with:
REINFORCE with the per-task linear feature baseline, ``num_inner_steps`` steps of size α, each on
trajectories sampled with the parameters it starts from.  The outer update needs no derivative
through the inner steps and has no trust region.  With one inner step it is a policy-gradient
step on all tasks jointly (the paper's "joint training"); with more, it also raises the inner
product of a task's gradients on different batches (the paper's AvgGradInner, section 5), the
term that meta-learns.

The step is measured, not constrained: ``kl`` and ``surrogate_*`` are MAML-TRPO's, the mean KL
of the adapted policies across the step and the post-adaptation surrogate before and after it.
"""

from __future__ import annotations

import torch
from pydantic import Field

from metarl.agents.common.numerics import check_finite
from metarl.agents.maml_trpo import (
    AdaptationConfig,
    MetaBatch,
    MetaStepInfo,
    PolicyGradientAdaptation,
)


class ReptileConfig(AdaptationConfig):
    """Reptile's hyperparameters: the inner loop's, and the outer step size."""

    # ε, the outer step size: θ moves this fraction of the way to the mean adapted parameters.
    # 0.1: the authors' code's default (openai/supervised-reptile, --meta-step), constant; the
    # paper's classification runs anneal it from 1 to 0, and held at 1 on 2D navigation the KL
    # of the adapted policies across a step grew without bound
    outer_lr: float = Field(0.1, gt=0.0, allow_inf_nan=False)


class Reptile(PolicyGradientAdaptation[ReptileConfig]):
    """The Reptile agent: adapts ``policy`` per task and moves it towards the adapted parameters
    in place (the outer update is timed as ``meta_gradient``)."""

    @torch.no_grad()
    def meta_step(self, batch: MetaBatch) -> MetaStepInfo:
        """``θ ← θ + ε mean_k(θ'_k − θ)``, θ'_k the parameters that sampled ``batch``'s D'_k.

        Raises :class:`NonFiniteError` (the meta-parameters unchanged) at the first stage that
        meets a NaN or an Inf: returns, advantages, the update (``gradient``), the KL."""
        episodes = [*batch.train, batch.valid]
        check_finite("returns", *(e.rewards for e in episodes))
        check_finite("advantages", *(e.advantages for e in episodes if e.advantages is not None))
        with self.timer("meta_gradient"):
            theta = {name: p.detach().clone() for name, p in self.policy.meta_parameters().items()}
            adapted = batch.adapted
            eps = self.config.outer_lr
            step = {name: eps * (adapted[name] - theta[name]).mean(0) for name in theta}
            check_finite("gradient", *step.values())
            new_theta = {name: theta[name] + step[name] for name in theta}
            old = self.policy.mean_and_log_std(batch.valid.observations, adapted)
            before, _ = self.surrogate_and_kl(adapted, batch, old)
            after, kl = self.surrogate_and_kl(self.adapt(new_theta, batch), batch, old)
            check_finite("kl", kl)
            for name, tensor in self.policy.meta_parameters().items():
                tensor.copy_(new_theta[name])
        changed = any(bool(s.any()) for s in step.values())
        return MetaStepInfo(changed, before.item(), after.item(), kl.item(), 0, 1.0)


__all__ = ["Reptile", "ReptileConfig"]
