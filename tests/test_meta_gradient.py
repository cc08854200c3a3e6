"""The meta-gradient and the meta-KL curvature through one and two inner steps.

References: finite differences of the post-adaptation loss, and the straightforward double
backpropagation through the inner update(s).  Everything in float64 on real (masked) episodes.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metarl.agents.common.curvature import (
    AdaptationJacobian,
    GaussianFisher,
    meta_kl_hessian_product,
    split_parameters,
)
from metarl.agents.common.episodes import Episodes, live_samples, samples_by_task
from metarl.agents.common.optim import flatten, unflatten
from metarl.agents.maml_trpo import MAMLTRPO, MetaBatch
from tests.conftest import make_agent

CASES = {
    "no-step": dict(num_inner_steps=0),  # plain TRPO on all tasks (the "pretrained" baseline)
    "one-step": dict(num_inner_steps=1),
    "negative-step": dict(num_inner_steps=1, inner_lr=-0.3),  # the negative inner step
    "anil": dict(num_inner_steps=1, inner_parameters="head"),  # only the head adapts
    "anil-two-steps": dict(num_inner_steps=2, inner_parameters="head"),
    "two-steps": dict(num_inner_steps=2),
    "relu": dict(num_inner_steps=1, nonlinearity="relu"),
    "first-order": dict(num_inner_steps=1, first_order=True),
    "first-order-two-steps": dict(num_inner_steps=2, first_order=True),
}


def _shifted(agent: MAMLTRPO, vector: torch.Tensor) -> dict[str, torch.Tensor]:
    tensors = [p.detach() for p in agent.policy.parameters()]
    base = flatten(tensors)
    names = list(agent.policy.meta_parameters())
    return {n: t.clone().requires_grad_() for n, t in zip(names, unflatten(base + vector, tensors))}


def test_fixture_has_variable_length_episodes(tiny_agent) -> None:
    _, batch = tiny_agent
    assert (batch.valid.mask == 0).any() and (batch.valid.mask == 1).any()
    assert (batch.train[0].mask == 0).any()


# ReLU makes the inner gradient, hence θ'(θ), discontinuous: finite differences need tanh.
@pytest.mark.parametrize(
    "case", ["no-step", "one-step", "negative-step", "two-steps", "anil", "anil-two-steps"]
)
def test_meta_gradient_matches_finite_differences(case: str) -> None:
    agent, batch = make_agent(**CASES[case])
    gradient = agent.meta_gradient(batch).gradient
    generator = torch.Generator().manual_seed(1)
    eps = 1e-6
    for _ in range(3):
        v = torch.randn(gradient.shape, generator=generator, dtype=torch.float64)
        plus = agent.meta_objective(_shifted(agent, eps * v), batch)[0]
        minus = agent.meta_objective(_shifted(agent, -eps * v), batch)[0]
        finite = (plus - minus) / (2 * eps)
        torch.testing.assert_close(gradient @ v, finite.detach(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("case", list(CASES))
def test_fast_curvature_equals_double_backpropagation(case: str) -> None:
    agent, batch = make_agent(**CASES[case])
    fast, reference = agent.meta_gradient(batch), agent.meta_gradient_by_double_backprop(batch)
    gradient, product, reference_product = (
        fast.gradient,
        fast.kl_hessian_vector_product,
        reference.kl_hessian_vector_product,
    )
    torch.testing.assert_close(gradient, reference.gradient, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(fast.surrogate, reference.surrogate)
    live = batch.valid.mask.bool()  # the old distribution matters where steps were taken
    torch.testing.assert_close(fast.old[0][live], reference.old[0][live])
    torch.testing.assert_close(*torch.broadcast_tensors(fast.old[1], reference.old[1]))
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = torch.randn(gradient.shape, generator=generator, dtype=torch.float64)
        fast, reference = product(v), reference_product(v)
        assert (fast - reference).norm() <= 1e-5 * reference.norm()


@pytest.mark.parametrize("case", ["one-step", "two-steps"])
def test_kl_hessian_matches_finite_differences_of_kl_gradient(case: str) -> None:
    agent, batch = make_agent(**CASES[case])
    product = agent.meta_gradient(batch).kl_hessian_vector_product
    v = torch.randn(sum(p.numel() for p in agent.policy.parameters()), dtype=torch.float64)
    eps = 1e-5

    def kl_gradient(vector: torch.Tensor) -> torch.Tensor:
        params = _shifted(agent, vector)
        kl = agent.meta_objective(params, batch)[1]
        return flatten(torch.autograd.grad(kl, list(params.values())))

    finite = (kl_gradient(eps * v) - kl_gradient(-eps * v)) / (2 * eps)
    damping = agent.config.cg_damping
    torch.testing.assert_close(product(v) - damping * v, finite, rtol=1e-4, atol=1e-8)


def test_first_order_gradient_is_the_post_adaptation_gradient_at_adapted_params() -> None:
    """First-order MAML: ∇θ ≈ Σ_k ∇_{θ'_k} L_k(θ'_k), i.e. the adaptation Jacobian is I."""
    agent, batch = make_agent(first_order=True)
    gradient = agent.meta_gradient(batch).gradient
    adapted = {
        k: v.detach().requires_grad_()
        for k, v in agent.adapt(agent.policy.meta_parameters(), batch).items()
    }
    surrogate, _ = agent.surrogate_and_kl(adapted, batch, agent.old_distribution(batch))
    per_task = torch.autograd.grad(surrogate, list(adapted.values()))
    torch.testing.assert_close(gradient, flatten([g.sum(0) for g in per_task]))
    exact_agent, exact_batch = make_agent(first_order=False)
    exact_gradient = exact_agent.meta_gradient(exact_batch).gradient
    assert not torch.allclose(gradient, exact_gradient)  # the second-order terms matter


# Not "no-step": without adaptation this tiny policy's Fisher is near singular (condition ~2e6),
# and 10 CG iterations amplify round-off to ~1e-3 of the direction.
@pytest.mark.parametrize("case", ["one-step", "two-steps", "first-order"])
def test_meta_step_is_the_same_with_both_hessian_methods(case: str) -> None:
    fast_agent, batch = make_agent(**CASES[case])
    slow_agent, _ = make_agent(**CASES[case])
    slow_agent.config.hessian_method = "double_backprop"
    before = flatten([p.detach().clone() for p in fast_agent.policy.parameters()])
    fast, slow = fast_agent.meta_step(batch), slow_agent.meta_step(batch)
    assert fast.accepted and slow.accepted
    assert fast.line_search_steps == slow.line_search_steps
    # Equal up to round-off: the products agree to 1e-15, but 10 CG iterations at damping 1e-5
    # amplify round-off to ~1e-5 of the direction.
    assert fast.surrogate_after == pytest.approx(slow.surrogate_after, rel=1e-4)
    fast_step = flatten(list(fast_agent.policy.parameters())).detach() - before
    slow_step = flatten(list(slow_agent.policy.parameters())).detach() - before
    assert (fast_step - slow_step).norm() <= 1e-4 * slow_step.norm()


@pytest.mark.parametrize("case", ["no-step", "one-step", "two-steps", "first-order", "anil"])
def test_meta_step_improves_surrogate_within_trust_region(case: str) -> None:
    agent, batch = make_agent(**CASES[case])
    before = [p.detach().clone() for p in agent.policy.parameters()]
    info = agent.meta_step(batch)
    assert info.accepted
    assert info.kl <= agent.config.max_kl
    assert info.surrogate_after < info.surrogate_before
    surrogate, kl = agent.meta_objective(
        {
            n: p.detach().clone().requires_grad_()
            for n, p in zip(agent.policy.meta_parameters(), before)
        },
        batch,
    )
    new_params = agent.policy.meta_parameters()
    new_surrogate, new_kl = (
        x.item()
        for x in agent.surrogate_and_kl(
            agent.adapt(new_params, batch), batch, _old_at(agent, batch, before)
        )
    )
    assert new_surrogate == pytest.approx(info.surrogate_after, rel=1e-9)
    assert new_kl == pytest.approx(info.kl, rel=1e-9)


def _old_at(agent: MAMLTRPO, batch: MetaBatch, params: list[torch.Tensor]):
    names = list(agent.policy.meta_parameters())
    adapted = agent.adapt({n: p.clone().requires_grad_() for n, p in zip(names, params)}, batch)
    with torch.no_grad():
        return agent.policy.mean_and_log_std(batch.valid.observations, adapted)


def test_meta_step_that_finds_no_step_leaves_parameters_unchanged() -> None:
    agent, batch = make_agent()
    # Steps so far outside the quadratic model that every importance ratio underflows to 0, so
    # every trial's surrogate is about 0; advantages raised by 10 put the surrogate before the
    # step near -10, so that no trial lowers it whatever the rounding.
    assert batch.valid.advantages is not None
    batch.valid.advantages = batch.valid.advantages + 10.0
    agent.config.max_kl = 1e8
    agent.config.line_search_max_steps = 3
    before = [p.detach().clone() for p in agent.policy.parameters()]
    info = agent.meta_step(batch)
    assert info.surrogate_before < -5.0
    assert not info.accepted and info.line_search_steps == 3
    assert info.surrogate_after == info.surrogate_before and info.kl == 0.0
    for old, new in zip(before, agent.policy.parameters()):
        assert torch.equal(old, new)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", ["one-step", "two-steps", "first-order"])
def test_meta_step_on_cuda_matches_the_cpu(case: str) -> None:
    """Learning on the GPU (sampling stays on the CPU) takes the CPU path's meta-step."""
    cpu_agent, batch = make_agent(**CASES[case])
    gpu_agent, _ = make_agent(**CASES[case])
    gpu_agent.policy.to("cuda")
    gpu_train = [gpu_agent.prepare(episodes) for episodes in batch.train]
    gpu_adapted = {name: p.cuda() for name, p in batch.adapted.items()}
    gpu_batch = MetaBatch(gpu_train, gpu_agent.prepare(batch.valid), gpu_adapted)
    cpu, gpu = cpu_agent.meta_gradient(batch), gpu_agent.meta_gradient(gpu_batch)
    torch.testing.assert_close(gpu.gradient.cpu(), cpu.gradient, rtol=1e-9, atol=1e-12)
    v = torch.randn_like(cpu.gradient)
    torch.testing.assert_close(
        gpu.kl_hessian_vector_product(v.cuda()).cpu(),
        cpu.kl_hessian_vector_product(v),
        rtol=1e-9,
        atol=1e-12,
    )
    cpu_info, gpu_info = cpu_agent.meta_step(batch), gpu_agent.meta_step(gpu_batch)
    assert gpu_info.accepted == cpu_info.accepted
    assert gpu_info.surrogate_after == pytest.approx(cpu_info.surrogate_after, rel=1e-4)


def test_anil_adapts_only_the_head() -> None:
    agent, batch = make_agent(inner_parameters="head")
    theta = agent.policy.meta_parameters()
    adapted = agent.adapt(theta, batch)
    last = len(agent.policy.layers) - 1
    for name, value in adapted.items():
        moved = not torch.allclose(value, theta[name].expand_as(value))
        assert moved == (name == "log_std" or name.startswith(f"layers.{last}.")), name


def _kept_steps(episodes: Episodes, fraction: float) -> Episodes:
    """``episodes`` with only the steps a curvature subsample keeps: a task's r-th live step
    (in time-major order) where ``frac(r φ) < fraction``."""
    samples = live_samples(episodes)
    rows = torch.arange(samples.positions.shape[1], dtype=torch.float64)
    keep = ((rows * (5**0.5 - 1) / 2) % 1 < fraction).to(episodes.mask.dtype)
    mask = samples_by_task(episodes.mask)
    kept = torch.zeros_like(mask).scatter_(1, samples.positions, keep.expand_as(samples.positions))
    steps, tasks, trajectories = episodes.mask.shape
    kept = (kept * mask).view(tasks, steps, trajectories).movedim(0, 1)
    return dataclasses.replace(episodes, mask=kept)


def test_subsampled_curvature_without_inner_step_is_the_kl_hessian_of_the_kept_steps() -> None:
    agent, batch = make_agent(num_inner_steps=0, cg_subsample=0.4)
    product = agent.meta_gradient(batch).kl_hessian_vector_product
    kept = MetaBatch([], _kept_steps(batch.valid, 0.4), batch.adapted)
    assert 0 < kept.valid.mask.sum() < 0.6 * batch.valid.mask.sum()
    exact = dict(cg_subsample=1.0, hessian_method="double_backprop")
    reference = MAMLTRPO(agent.policy, agent.config.model_copy(update=exact))
    reference_product = reference.meta_gradient_by_double_backprop(kept).kl_hessian_vector_product
    size = sum(p.numel() for p in agent.policy.parameters())
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(size, generator=generator, dtype=torch.float64)
        torch.testing.assert_close(product(v), reference_product(v))


def test_subsampled_curvature_is_the_fisher_of_the_kept_steps_at_the_adapted_point() -> None:
    agent, batch = make_agent(num_inner_steps=1, cg_subsample=0.4)
    exact = MAMLTRPO(agent.policy, agent.config.model_copy(update=dict(cg_subsample=1.0)))
    meta, exact_meta = agent.meta_gradient(batch), exact.meta_gradient(batch)
    torch.testing.assert_close(meta.gradient, exact_meta.gradient)  # the gradient stays exact
    # the reference: the inner loss's Hessian at θ on every step, the Fisher at θ' (adapted on
    # every step) on the kept post-update steps only
    num_tasks, config = batch.valid.num_tasks, agent.config
    like = list(agent.policy.parameters())
    params = [p.detach().expand(num_tasks, *p.shape) for p in like]
    inner = exact.log_likelihood(params, live_samples(batch.train[0]), -1, True)
    adapted = list(agent.adapt(agent.policy.meta_parameters(), batch).values())
    valid = live_samples(_kept_steps(batch.valid, 0.4))
    log_std = split_parameters(adapted)[2]
    fisher = GaussianFisher(exact.mean_network(adapted, valid), log_std, valid.weights / num_tasks)
    jacobian = AdaptationJacobian([inner], config.inner_lr, first_order=False)
    product = meta_kl_hessian_product(jacobian, fisher, num_tasks, config.cg_damping)
    generator = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(exact_meta.gradient.shape, generator=generator, dtype=torch.float64)
        reference = flatten(product(unflatten(v, like)))
        torch.testing.assert_close(meta.kl_hessian_vector_product(v), reference)
        exact_product = exact_meta.kl_hessian_vector_product(v)
        assert (exact_product - reference).norm() > 1e-3 * reference.norm()  # not the exact one
