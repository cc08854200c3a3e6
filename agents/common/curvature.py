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

No autograd graph is built: a product costs a few batched matmuls per layer.  The tests compare
every product with double backpropagation through the whole meta-objective.

Parameter lists follow ``GaussianMLPPolicy.parameters()``: ``[log σ, W_0, b_0, …, W_{L-1},
b_{L-1}]``, each with a leading task dimension ``K`` (``W_l``: ``[K, out, in]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Vectors = list[Tensor]
Tangents = list[tuple[Tensor, Tensor]]  # (ż_l, ȧ_l) of the hidden layers


def split_parameters(vectors: Vectors) -> tuple[Vectors, Vectors, Tensor]:
    """``[log σ, W_0, b_0, …]`` -> (weights, biases, log σ)."""
    return vectors[1::2], vectors[2::2], vectors[0]


def join_parameters(weights: Vectors, biases: Vectors, log_std: Tensor) -> Vectors:
    """The inverse of :func:`split_parameters`."""
    return [log_std, *(t for pair in zip(weights, biases) for t in pair)]


def _activate(pre: Tensor, nonlinearity: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """Activation, its first derivative, and its second derivative (None where it is zero)."""
    if nonlinearity == "tanh":
        hidden = torch.tanh(pre)
        slope = 1 - hidden * hidden
        return hidden, slope, -2 * hidden * slope
    if nonlinearity == "relu":
        return torch.relu(pre), (pre > 0).to(pre.dtype), None
    raise ValueError(f"nonlinearity must be 'relu' or 'tanh', got {nonlinearity!r}")


FIRST_LAYER_MOMENTS_MAX_INPUTS = 8
"""Observation sizes below which :meth:`MeanNetwork.vjp` precomputes the first-layer moments:
``in + 1`` batched matmuls once per meta-step, to replace two per Hessian product (about 21
products per meta-step) by small contractions.  Measured: a clear gain for 2D navigation, none
left for HalfCheetah's 17 inputs."""


class MeanNetwork:
    """The policy's mean MLP at per-task parameters on fixed per-task inputs ``[K, N, in]``,
    with its forward pass kept for products with its first and second derivatives."""

    def __init__(self, weights: Vectors, biases: Vectors, inputs: Tensor, nonlinearity: str):
        self.weights = weights
        self.layer_inputs = [inputs]  # a_0 = x, a_1, …, a_{L-1}
        self.slopes: Vectors = []  # σ'(z_l) of the hidden layers
        self.curvatures: list[Tensor | None] = []  # σ''(z_l)
        self.deltas: Vectors = []  # kept by vjp(keep=True): ∂/∂z_l, output layer first,
        self.bends: Vectors = []  # and σ''(z_l) ∂/∂a_l where σ'' is not zero,
        self.moments: Tensor | None = None  # and the first-layer moments (_first_layer_moments)
        hidden = inputs
        for weight, bias in zip(weights[:-1], biases[:-1]):
            pre = torch.baddbmm(bias.unsqueeze(1), hidden, weight.transpose(1, 2))
            hidden, slope, curvature = _activate(pre, nonlinearity)
            self.layer_inputs.append(hidden)
            self.slopes.append(slope)
            self.curvatures.append(curvature)
        self.output = torch.baddbmm(biases[-1].unsqueeze(1), hidden, weights[-1].transpose(1, 2))

    def jvp(self, weight_tangents: Vectors, bias_tangents: Vectors) -> tuple[Tensor, Tangents]:
        """``J_μ u``: the output's tangent, and the tangents of the hidden pre-activations and
        activations (for :meth:`vjp_tangent`)."""
        hidden_tangents: Tangents = []
        tangent = None  # of the current layer's input; the network's input is constant
        for i, (weight, dw, db) in enumerate(zip(self.weights, weight_tangents, bias_tangents)):
            out = torch.bmm(self.layer_inputs[i], dw.transpose(1, 2))
            if tangent is not None:
                out.baddbmm_(tangent, weight.transpose(1, 2))
            out += db.unsqueeze(1)  # cheaper than baddbmm's broadcast copy of the bias
            if i == len(self.weights) - 1:
                return out, hidden_tangents
            tangent = out * self.slopes[i]
            hidden_tangents.append((out, tangent))
        raise AssertionError("unreachable: the network has at least one layer")

    def vjp(self, cotangent: Tensor, keep: bool = False) -> tuple[Vectors, Vectors]:
        """``J_μᵀ z`` for an output cotangent ``z`` ``[K, N, out]``: weight and bias cotangents.
        With ``keep`` what :meth:`vjp_tangent` needs is kept."""
        weight_grads, bias_grads = [], []
        delta = cotangent
        for i in reversed(range(len(self.weights))):
            if keep:
                self.deltas.append(delta)
                if i == 1 and self.layer_inputs[0].shape[2] < FIRST_LAYER_MOMENTS_MAX_INPUTS:
                    self.moments = self._first_layer_moments(delta)
            weight_grads.append(torch.bmm(delta.transpose(1, 2), self.layer_inputs[i]))
            bias_grads.append(delta.sum(1))
            if i > 0:
                backprop = torch.bmm(delta, self.weights[i])
                curvature = self.curvatures[i - 1]
                if keep and curvature is not None:
                    self.bends.append(backprop * curvature)
                delta = backprop.mul_(self.slopes[i - 1])
        return weight_grads[::-1], bias_grads[::-1]

    def _first_layer_moments(self, delta: Tensor) -> Tensor:
        """``M[k, j, p, m] = Σ_n δ_1[n, p] σ'(z_0)[n, j] x̃[n, m]`` with ``x̃ = [x, 1]``.

        The first layer's tangent ``σ'(z_0) ⊙ (x̃ Ũ_0ᵀ)`` is linear in the few first-layer
        parameters ``Ũ_0 = [U_0, u_b0]``, so the two reductions of a Hessian product that meet
        it with the kept ``δ_1`` (``δ_1ᵀ ȧ_1`` and the ``δ_1 U_1`` part of the first layer's
        gradient) are small contractions of ``M`` instead of batch-sized matmuls.
        """
        inputs, slope = self.layer_inputs[0], self.slopes[0]
        columns = [slope * inputs[:, :, m : m + 1] for m in range(inputs.shape[2])] + [slope]
        return torch.stack([torch.bmm(c.transpose(1, 2), delta) for c in columns], dim=-1)

    def vjp_tangent(
        self,
        cotangent_tangent: Tensor,
        weight_tangents: Vectors,
        bias_tangents: Vectors,
        hidden_tangents: Tangents,
    ) -> tuple[Vectors, Vectors]:
        """The directional derivative of the kept ``vjp(z)`` when the parameters move along
        ``u`` (whose :meth:`jvp` gave ``hidden_tangents``) and the cotangent along ``ż``."""
        weight_out, bias_out = [], []
        bends = iter(self.bends)
        first_layer = None  # from the moments: the δ_1 U_1 part of the first layer's result
        r_delta = cotangent_tangent
        for delta, i in zip(self.deltas, reversed(range(len(self.weights)))):
            r_weight = torch.bmm(r_delta.transpose(1, 2), self.layer_inputs[i])
            r_bias = r_delta.sum(1)
            if i > 0:
                pre_tangent, hidden_tangent = hidden_tangents[i - 1]
                r_back = torch.bmm(r_delta, self.weights[i])
                if i == 1 and self.moments is not None:
                    first = torch.cat([weight_tangents[0], bias_tangents[0].unsqueeze(-1)], -1)
                    r_weight += torch.einsum("kjpm,kjm->kpj", self.moments, first)
                    first_layer = torch.einsum("kpj,kjpm->kjm", weight_tangents[1], self.moments)
                else:
                    r_weight.baddbmm_(delta.transpose(1, 2), hidden_tangent)
                    r_back.baddbmm_(delta, weight_tangents[i])
                r_delta = r_back.mul_(self.slopes[i - 1])
                if self.curvatures[i - 1] is not None:
                    r_delta.addcmul_(next(bends), pre_tangent)
            elif first_layer is not None:
                r_weight += first_layer[..., :-1]
                r_bias += first_layer[..., -1]
            weight_out.append(r_weight)
            bias_out.append(r_bias)
        return weight_out[::-1], bias_out[::-1]


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
        self.precision = torch.exp(-2 * log_std).unsqueeze(1)  # 1/σ², [K, 1, A]
        self.residual = actions - network.output  # a - μ
        self.scaled = self.residual * self.precision  # ∂ log π / ∂μ
        weights, biases = network.vjp(self.rho * self.scaled, keep=second_order)
        log_std_grad = (self.rho * (self.residual * self.scaled - 1)).sum(1)
        self.gradient = join_parameters(weights, biases, log_std_grad)

    def hessian_product(self, vectors: Vectors) -> Vectors:
        """``∇²ℓ_k u_k`` for every task."""
        dw, db, ds = split_parameters(vectors)
        ds = ds.unsqueeze(1)
        mean_tangent, hidden_tangents = self.network.jvp(dw, db)
        cotangent_tangent = -self.rho * self.precision * (mean_tangent + 2 * self.residual * ds)
        weights, biases = self.network.vjp_tangent(cotangent_tangent, dw, db, hidden_tangents)
        log_std = -2 * (self.rho * self.scaled * (mean_tangent + self.residual * ds)).sum(1)
        return join_parameters(weights, biases, log_std)


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

    def product(self, vectors: Vectors) -> Vectors:
        """``F_k u_k`` for every task."""
        dw, db, ds = split_parameters(vectors)
        mean_tangent, _ = self.network.jvp(dw, db)
        weights, biases = self.network.vjp(self.mean_precision * mean_tangent)
        return join_parameters(weights, biases, self.log_std_weight * ds)


def meta_kl_hessian_product(
    jacobian: AdaptationJacobian, fisher: GaussianFisher, num_tasks: int, damping: float
) -> Callable[[Vectors], Vectors]:
    """``v ↦ (mean_k J_kᵀ F_k J_k + damping·I) v`` for meta-parameter vectors ``v``.

    ``v`` has the meta-parameters' shapes; it is broadcast to every task and the per-task results
    are summed (the transpose of the broadcast).  The 1/K of the mean is in the Fisher weights.
    """

    def product(vectors: Vectors) -> Vectors:
        per_task = [v.expand(num_tasks, *v.shape) for v in vectors]
        pulled = jacobian.vjp(fisher.product(jacobian.jvp(per_task)))
        return [p.sum(0) + damping * v for p, v in zip(pulled, vectors)]

    return product
