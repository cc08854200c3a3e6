"""Exact first and second derivatives of the meta-objective, from hand-derived products.

The trust-region constraint is ``KL(θ) = mean_k KL(π_{θ'_k,old} ‖ π_{θ'_k(θ)})``.  At the current
meta-parameters its gradient is zero, so its Hessian there is exactly

    ∇²KL = mean_k  J_kᵀ F_k J_k,        J_k = ∂θ'_k/∂θ = Π_i (I - α H_k^{(i)})

with ``F_k`` the Fisher matrix of the adapted Gaussian policy on task k's post-update states and
``H_k^{(i)}`` the Hessian of task k's inner loss at inner step i (first-order MAML: ``J_k = I``).

Every product is made of passes through the policy's mean network (:class:`MeanNetwork`) whose
forward activations and backward deltas are computed once per meta-step, for all tasks at once:

* ``J_μ u`` — a forward tangent pass (Pearlmutter's R-operator);
* ``J_μᵀ z`` — a reverse pass;
* ``H u`` — the R-operator applied to the reverse pass of the inner gradient, plus the Gaussian
  log-likelihood's closed-form second derivatives in μ and log σ (:class:`GaussianLogLikelihood`);
* ``F u = J_μᵀ diag(w/σ²) J_μ u`` and ``2 w u`` for log σ (:class:`GaussianFisher`).

No autograd graph is built: a product costs a few matmuls per layer, four of them of the
hidden-to-hidden size per Hessian or Fisher product (the first layer's share of the Hessian
products is contracted from moments kept per meta-step).  On the CPU a conjugate-gradient
product runs one task at a time, all its passes on that task's live rows, the tasks shared among
torch's threads (:func:`meta_kl_hessian_product`).  The tests compare every product with double
backpropagation through the whole meta-objective.

Parameter lists follow ``GaussianMLPPolicy.parameters()``: ``[log σ, W_0, b_0, …, W_{L-1},
b_{L-1}]``, each with a leading task dimension ``K`` (``W_l``: ``[K, out, in]``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

from metarl.agents.common.gemm import matmul, outer, uses_onednn
from metarl.agents.common.runtime import run_shared

Vectors = list[Tensor]
Part = TypeVar("Part")


def split_parameters(vectors: Vectors) -> tuple[Vectors, Vectors, Tensor]:
    """``[log σ, W_0, b_0, …]`` -> (weights, biases, log σ)."""
    return vectors[1::2], vectors[2::2], vectors[0]


def join_parameters(weights: Vectors, biases: Vectors, log_std: Tensor) -> Vectors:
    """The inverse of :func:`split_parameters`."""
    return [log_std, *(t for pair in zip(weights, biases) for t in pair)]


def live_rows(weights: Tensor) -> list[int]:
    """Per task, the number of rows up to its last non-zero weight (``weights`` ``[K, N]``):
    the padding after it adds nothing to any product."""
    index = torch.arange(1, weights.shape[1] + 1, device=weights.device)
    return ((weights != 0) * index).amax(1).tolist()


def augment(vectors: Vectors) -> tuple[Vectors, Tensor]:
    """``[log σ, W_0, b_0, …]`` -> (``[Ŵ_0, …]`` with ``Ŵ_l = [W_l, b_l]`` ``[K, out, in + 1]``,
    log σ): a layer's weights and bias as one matrix, for inputs ``â = [a, 1]``."""
    weights, biases, log_std = split_parameters(vectors)
    return [torch.cat([w, b.unsqueeze(-1)], -1) for w, b in zip(weights, biases)], log_std


def join_augmented(augmented: Vectors, log_std: Tensor) -> Vectors:
    """The inverse of :func:`augment` (views, no copy)."""
    return join_parameters(
        [a[..., :-1] for a in augmented], [a[..., -1] for a in augmented], log_std
    )


def _with_ones(values: Tensor) -> Tensor:
    """``[a, 1]``: a column of ones appended (the bias's input)."""
    return torch.cat([values, values.new_ones(*values.shape[:-1], 1)], -1)


def _activate(pre: Tensor, nonlinearity: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """Activation ``σ(z)``, its slope ``σ'(z)``, and ``σ''(z) / σ'(z)`` (None where ``σ''`` is
    zero; ``-2 tanh z`` for tanh)."""
    if nonlinearity == "tanh":
        hidden = torch.tanh(pre)
        return hidden, 1 - hidden * hidden, -2 * hidden
    if nonlinearity == "relu":
        return torch.relu(pre), (pre > 0).to(pre.dtype), None
    raise ValueError(f"nonlinearity must be 'relu' or 'tanh', got {nonlinearity!r}")


FIRST_LAYER_MOMENTS_MAX_INPUTS = 32
"""Observation sizes below which :meth:`MeanNetwork.vjp` precomputes the first-layer moments:
``in + 1`` matmuls per task once per meta-step replace two per Hessian product (21 per meta-step
with 10 CG iterations).  Measured (one thread, HalfCheetah's 20 inputs, a meta-gradient and 10
products): 5.7 s of CPU time against 6.2 s without; Ant's 105 or more inputs would cost more
than they save."""


class MeanNetwork:
    """The policy's mean MLP at per-task parameters on fixed per-task inputs ``[K, N, in]``,
    with its forward pass kept for products with its first and second derivatives.

    Tangents and cotangents of the parameters are augmented (:func:`augment`): each layer's
    input is kept as ``â = [a, 1]``, so that one matmul gives a weight's and a bias's part.
    """

    def __init__(self, weights: Vectors, biases: Vectors, inputs: Tensor, nonlinearity: str):
        self.weights = weights
        self.layer_inputs = [_with_ones(inputs)]  # â_0 = [x, 1], â_1, …, â_{L-1}
        self.slopes: Vectors = []  # σ'(z_l) of the hidden layers
        self.bend_ratios: list[Tensor | None] = []  # σ''(z_l) / σ'(z_l)
        self.deltas: Vectors = []  # kept by vjp(keep=True): ∂/∂z_l, output layer first,
        self.bends: Vectors = []  # (∂/∂a_l) ⊙ σ''(z_l) / σ'(z_l) where σ'' is not zero,
        self.moments: Tensor | None = None  # and the first-layer moments (_first_layer_moments)
        # in a part for oneDNN (one task on the CPU), â_l and the kept δ transposed (contiguous),
        # the operand a reduction over the rows wants: oneDNN copies a transposed one each time
        self.input_columns: Vectors | None = None
        self.delta_columns: Vectors | None = None
        hidden = inputs
        for weight, bias in zip(weights[:-1], biases[:-1]):
            pre = torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
            hidden, slope, bend_ratio = _activate(pre, nonlinearity)
            self.layer_inputs.append(_with_ones(hidden))
            self.slopes.append(slope)
            self.bend_ratios.append(bend_ratio)
        self.output = torch.baddbmm(biases[-1].unsqueeze(1), hidden, weights[-1].transpose(1, 2))

    def part(self, tasks: slice, num_rows: int) -> MeanNetwork:
        """A view of the tasks ``tasks`` on their first ``num_rows`` samples (no copy)."""
        view = copy.copy(self)
        rows = (tasks, slice(0, num_rows))
        view.weights = [w[tasks] for w in self.weights]
        view.layer_inputs = [a[rows] for a in self.layer_inputs]
        view.slopes = [s[rows] for s in self.slopes]
        view.bend_ratios = [None if r is None else r[rows] for r in self.bend_ratios]
        view.deltas = [d[rows] for d in self.deltas]
        view.bends = [b[rows] for b in self.bends]
        view.moments = None if self.moments is None else self.moments[tasks]
        view.output = self.output[rows]
        if uses_onednn(view.layer_inputs[0], view.weights[0]):
            view.input_columns = [a.transpose(1, 2).contiguous() for a in view.layer_inputs]
            view.delta_columns = [d.transpose(1, 2).contiguous() for d in view.deltas]
        return view

    def _input_outer(self, delta: Tensor, layer: int) -> Tensor:
        """``δᵀ â_l``: the augmented weight gradient of layer ``l`` for its output's ``δ``."""
        if self.input_columns is None:
            return outer(delta, self.layer_inputs[layer])
        return matmul(self.input_columns[layer], delta).transpose(1, 2)

    def _delta_outer(self, index: int, values: Tensor) -> Tensor:
        """``δᵀ v`` for the ``index``-th kept ``δ`` (output layer first)."""
        if self.delta_columns is None:
            return outer(self.deltas[index], values)
        return matmul(self.delta_columns[index], values)

    def jvp(self, tangents: Vectors) -> tuple[Tensor, Vectors]:
        """``J_μ u`` for augmented tangents ``u``: the output's tangent, and the tangents
        ``ȧ_l = σ'(z_{l-1}) ⊙ ż_{l-1}`` of the hidden activations (for :meth:`vjp_tangent`)."""
        hidden_tangents: Vectors = []
        for i, (weight, augmented) in enumerate(zip(self.weights, tangents)):
            out = matmul(self.layer_inputs[i], augmented.transpose(1, 2))
            if i > 0:  # the network's input is constant
                out += matmul(hidden_tangents[-1], weight.transpose(1, 2))
            if i == len(self.weights) - 1:
                return out, hidden_tangents
            hidden_tangents.append(out.mul_(self.slopes[i]))
        raise AssertionError("unreachable: the network has at least one layer")

    def vjp(self, cotangent: Tensor, keep: bool = False) -> Vectors:
        """``J_μᵀ z`` for an output cotangent ``z`` ``[K, N, out]``: the augmented parameters'
        cotangents.  With ``keep`` what :meth:`vjp_tangent` needs is kept."""
        grads = []
        delta = cotangent
        for i in reversed(range(len(self.weights))):
            if keep:
                self.deltas.append(delta)
                num_observations = self.layer_inputs[0].shape[2] - 1  # x̂ = [x, 1]
                if i == 1 and num_observations < FIRST_LAYER_MOMENTS_MAX_INPUTS:
                    self.moments = self._first_layer_moments(delta)
            grads.append(self._input_outer(delta, i))
            if i > 0:
                backprop = matmul(delta, self.weights[i])
                bend_ratio = self.bend_ratios[i - 1]
                if keep and bend_ratio is not None:
                    self.bends.append(backprop * bend_ratio)
                delta = backprop.mul_(self.slopes[i - 1])
        return grads[::-1]

    def _first_layer_moments(self, delta: Tensor) -> Tensor:
        """``M[k, j, p, m] = Σ_n δ_1[n, p] σ'(z_0)[n, j] x̂[n, m]`` with ``x̂ = [x, 1]``.

        The first layer's tangent ``σ'(z_0) ⊙ (x̂ Û_0ᵀ)`` is linear in the few first-layer
        parameters ``Û_0 = [U_0, u_b0]``, so the two reductions of a Hessian product that meet
        it with the kept ``δ_1`` (``δ_1ᵀ ȧ_1`` and the ``δ_1 U_1`` part of the first layer's
        gradient) are small contractions of ``M`` instead of batch-sized matmuls.
        """
        inputs, slope = self.layer_inputs[0], self.slopes[0]
        num_tasks, _, num_inputs = inputs.shape
        moments = inputs.new_empty(num_tasks, slope.shape[2], delta.shape[2], num_inputs)

        def fill(parts: list[slice]) -> None:
            for tasks in parts:  # on the CPU one task: its columns stay in the caches
                delta_columns = delta[tasks].transpose(1, 2).contiguous()  # (see input_columns)
                for m in range(num_inputs):
                    column = slope[tasks] * inputs[tasks, :, m : m + 1]
                    moments[tasks, :, :, m] = matmul(delta_columns, column).transpose(1, 2)

        run_shared(fill, _task_parts(num_tasks, delta, None), num_threads(delta))
        return moments

    def vjp_tangent(
        self, cotangent_tangent: Tensor, tangents: Vectors, hidden_tangents: Vectors
    ) -> Vectors:
        """The directional derivative of the kept ``vjp(z)`` when the parameters move along
        the augmented ``u`` (whose :meth:`jvp` gave ``hidden_tangents``) and the cotangent
        along ``ż``: ``δ̇_{l-1} = (δ̇_l W_l + δ_l U_l) ⊙ σ' + bend ⊙ ȧ_l``."""
        grads = []
        bends = iter(self.bends)
        first_layer = None  # from the moments: the δ_1 U_1 part of the first layer's result
        r_delta = cotangent_tangent
        for index, (delta, i) in enumerate(zip(self.deltas, reversed(range(len(self.weights))))):
            r_grad = self._input_outer(r_delta, i)
            if i > 0:
                hidden_tangent = hidden_tangents[i - 1]
                r_back = matmul(r_delta, self.weights[i])
                if i == 1 and self.moments is not None:
                    r_grad[..., :-1] += torch.einsum("kjpm,kjm->kpj", self.moments, tangents[0])
                    through = tangents[1][..., :-1].transpose(1, 2).unsqueeze(-1)
                    first_layer = (self.moments * through).sum(2)
                else:
                    r_grad[..., :-1] += self._delta_outer(index, hidden_tangent)
                    r_back += matmul(delta, tangents[i][..., :-1])
                r_delta = r_back.mul_(self.slopes[i - 1])
                if self.bend_ratios[i - 1] is not None:
                    r_delta.addcmul_(next(bends), hidden_tangent)
            elif first_layer is not None:
                r_grad += first_layer
            grads.append(r_grad)
        return grads[::-1]


class GaussianLogLikelihood:
    """``ℓ_k = Σ_i ρ_i log π_k(a_i|s_i)`` for every task k of a Gaussian policy with mean
    ``network`` and state-independent ``log_std`` ``[K, A]``, with its gradient (computed at
    construction) and, with ``second_order``, exact Hessian-vector products.

    ``ρ`` ``[K, N]`` are per-sample weights: ``-mask·A / count`` makes ℓ the REINFORCE loss.
    """

    def __init__(
        self,
        network: MeanNetwork,
        log_std: Tensor,
        actions: Tensor,
        rho: Tensor,
        second_order: bool = True,
    ) -> None:
        self.network = network
        self.rho = rho.unsqueeze(-1)
        precision = torch.exp(-2 * log_std).unsqueeze(1)  # 1/σ², [K, 1, A]
        self.residual = actions - network.output  # a - μ
        scaled = self.residual * precision  # ∂ log π / ∂μ
        self.cotangent = self.rho * scaled
        self.weighted_precision = self.rho * precision
        grads = network.vjp(self.cotangent, keep=second_order)
        log_std_grad = (self.rho * (self.residual * scaled - 1)).sum(1)
        self.gradient = join_augmented(grads, log_std_grad)
        self.live_rows = live_rows(rho)

    def part(self, tasks: slice) -> GaussianLogLikelihood:
        """The tasks ``tasks`` on their live rows, for Hessian products (views, no copy)."""
        view = copy.copy(self)
        rows = (tasks, slice(0, max(self.live_rows[tasks], default=0)))
        view.network = self.network.part(tasks, rows[1].stop)
        view.rho, view.residual = self.rho[rows], self.residual[rows]
        view.cotangent, view.weighted_precision = (
            self.cotangent[rows],
            self.weighted_precision[rows],
        )
        return view

    def hessian_product(self, vectors: Vectors) -> Vectors:
        """``∇²ℓ_k u_k`` for every task."""
        tangents, log_std_tangent = augment(vectors)
        mean_tangent, hidden_tangents = self.network.jvp(tangents)
        shift = self.residual * log_std_tangent.unsqueeze(1)  # (a - μ) ⊙ u_logσ
        cotangent_tangent = -self.weighted_precision * (mean_tangent + 2 * shift)
        grads = self.network.vjp_tangent(cotangent_tangent, tangents, hidden_tangents)
        log_std = -2 * (self.cotangent * (mean_tangent + shift)).sum(1)
        return join_augmented(grads, log_std)


class AdaptationJacobian:
    """Products with ``J_k = Π_i (I - α P H_k^{(i)})`` for all tasks at once, ``H_k^{(i)}`` the
    Hessian of inner step i's loss and ``P`` the selection of the parameters the inner step
    adapts (``adapted``: a flag per parameter; None: all of them, MAML; the head: ANIL).  The
    cross terms ``P H (I - P)`` stay: the body shapes the head's inner gradient."""

    def __init__(
        self,
        losses: list[GaussianLogLikelihood],
        inner_lr: float,
        first_order: bool,
        adapted: Sequence[bool] | None = None,
    ) -> None:
        self.losses = losses
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.adapted = adapted

    def part(self, tasks: slice) -> AdaptationJacobian:
        """The Jacobians of the tasks ``tasks``."""
        losses = [loss.part(tasks) for loss in self.losses]
        return AdaptationJacobian(losses, self.inner_lr, self.first_order, self.adapted)

    def _select(self, vectors: Vectors) -> Vectors:
        """``P v``: the adapted parameters' parts of ``vectors``, zero elsewhere."""
        if self.adapted is None:
            return vectors
        return [v if a else torch.zeros_like(v) for v, a in zip(vectors, self.adapted)]

    def jvp(self, vectors: Vectors) -> Vectors:
        """``J u``: tangents of θ (per task) pushed through the inner steps in order."""
        if self.first_order:
            return vectors
        for loss in self.losses:
            products = self._select(loss.hessian_product(vectors))
            vectors = [v - self.inner_lr * hv for v, hv in zip(vectors, products)]
        return vectors

    def vjp(self, vectors: Vectors) -> Vectors:
        """``Jᵀ z``: cotangents of θ' pulled back through the inner steps in reverse."""
        if self.first_order:
            return vectors
        for loss in reversed(self.losses):
            products = loss.hessian_product(self._select(vectors))
            vectors = [v - self.inner_lr * hv for v, hv in zip(vectors, products)]
        return vectors


class GaussianFisher:
    """Products with the Fisher matrices of a Gaussian policy with mean ``network`` and
    state-independent ``log_std`` ``[K, A]``, weighted per state by ``weights`` ``[K, N]`` (so
    that they are the Hessians of the weighted mean KL)."""

    def __init__(self, network: MeanNetwork, log_std: Tensor, weights: Tensor) -> None:
        self.network = network
        self.mean_precision = weights.unsqueeze(-1) * torch.exp(-2 * log_std).unsqueeze(1)
        self.log_std_weight = 2 * weights.sum(1, keepdim=True)
        self.live_rows = live_rows(weights)

    @property
    def num_tasks(self) -> int:
        return self.log_std_weight.shape[0]

    def part(self, tasks: slice) -> GaussianFisher:
        """The Fisher matrices of the tasks ``tasks``, on their live rows (views, no copy)."""
        view = copy.copy(self)
        num_rows = max(self.live_rows[tasks], default=0)
        view.network = self.network.part(tasks, num_rows)
        view.mean_precision = self.mean_precision[tasks, :num_rows]
        view.log_std_weight = self.log_std_weight[tasks]
        return view

    def product(self, vectors: Vectors) -> Vectors:
        """``F_k u_k`` for every task."""
        tangents, log_std_tangent = augment(vectors)
        mean_tangent, _ = self.network.jvp(tangents)
        grads = self.network.vjp(self.mean_precision * mean_tangent)
        return join_augmented(grads, self.log_std_weight * log_std_tangent)


def num_threads(like: Tensor) -> int:
    """Threads to share independent tasks among: torch's on the CPU, else one."""
    return torch.get_num_threads() if like.device.type == "cpu" else 1


def _task_parts(num_tasks: int, like: Tensor, tasks_per_part: int | None) -> list[slice]:
    """The tasks in parts of ``tasks_per_part`` (None: one on the CPU, where a task's passes stay
    in the caches and its matrices go to oneDNN; all of them elsewhere)."""
    if tasks_per_part is None:
        tasks_per_part = 1 if like.device.type == "cpu" else num_tasks
    return [slice(k, k + tasks_per_part) for k in range(0, num_tasks, tasks_per_part)]


def _summed(function: Callable[[Part], Vectors], parts: Sequence[Part], like: Vectors) -> Vectors:
    """``Σ_k function(part)_k`` over the tasks of all ``parts``, the parts shared among torch's
    threads (:func:`~metarl.agents.common.runtime.run_shared`); shaped like ``like``."""

    def share_total(share: list[Part]) -> Vectors:
        total = [torch.zeros_like(v) for v in like]
        for part in share:
            for t, p in zip(total, function(part)):
                t += p.sum(0)
        return total

    total, *others = run_shared(share_total, parts, num_threads(like[0]))
    for other in others:
        for t, o in zip(total, other):
            t += o
    return total


def summed_vjp(
    jacobian: AdaptationJacobian, cotangents: Vectors, tasks_per_part: int | None = None
) -> Vectors:
    """``Σ_k J_kᵀ z_k`` for per-task cotangents ``z`` (the meta-gradient, from the adapted
    policies' gradients), the tasks in parts as in :func:`meta_kl_hessian_product`."""
    num_tasks = cotangents[0].shape[0]
    parts = _task_parts(num_tasks, cotangents[0], tasks_per_part)
    like = [z[0] for z in cotangents]
    return _summed(
        lambda tasks: jacobian.part(tasks).vjp([z[tasks] for z in cotangents]), parts, like
    )


def meta_kl_hessian_product(
    jacobian: AdaptationJacobian,
    fisher: GaussianFisher,
    num_tasks: int,
    damping: float,
    tasks_per_part: int | None = None,
) -> Callable[[Vectors], Vectors]:
    """``v ↦ (mean_k J_kᵀ F_k J_k + damping·I) v`` for meta-parameter vectors ``v``.

    ``v`` has the meta-parameters' shapes; it is broadcast to every task and the per-task results
    are summed (the transpose of the broadcast).  The 1/K of the mean is in the Fisher weights.
    Each task's product is independent of the others': the tasks go in parts of
    ``tasks_per_part`` (:func:`_task_parts`), each part on its own live rows, the parts shared
    among torch's threads.
    """
    slices = _task_parts(num_tasks, fisher.mean_precision, tasks_per_part)
    parts = [(jacobian.part(tasks), fisher.part(tasks)) for tasks in slices]

    def product(vectors: Vectors) -> Vectors:
        def pulled(part: tuple[AdaptationJacobian, GaussianFisher]) -> Vectors:
            part_jacobian, part_fisher = part
            per_task = [v.expand(part_fisher.num_tasks, *v.shape) for v in vectors]
            return part_jacobian.vjp(part_fisher.product(part_jacobian.jvp(per_task)))

        summed = _summed(pulled, parts, vectors)
        return [p + damping * v for p, v in zip(summed, vectors)]

    return product
