"""Guards against NaN and Inf: a meta-step that meets a non-finite value is rejected, not taken.

The agent calls :func:`check_finite` after each stage of a meta-step (returns, advantages, loss,
gradient, CG direction, KL of the line search); the first stage holding a NaN or an Inf raises
:class:`NonFiniteError` naming it, before the meta-parameters are touched.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

STAGES = ("returns", "advantages", "loss", "gradient", "cg_direction", "kl")


class NonFiniteError(ArithmeticError):
    """A NaN or Inf met at ``stage`` (one of :data:`STAGES`) of a meta-step."""

    def __init__(self, stage: str) -> None:
        assert stage in STAGES, stage
        super().__init__(f"non-finite {stage}")
        self.stage = stage


class RejectionLimitError(RuntimeError):
    """Too many consecutive meta-steps were rejected for non-finite values: the run stops."""


def all_finite(tensors: Iterable[Tensor | float]) -> bool:
    """True when every element of every tensor (or float) is neither NaN nor ±Inf."""
    return all(bool(torch.isfinite(torch.as_tensor(t)).all()) for t in tensors)


def check_finite(stage: str, *tensors: Tensor | float) -> None:
    """Raise :class:`NonFiniteError` for ``stage`` unless every value of ``tensors`` is finite."""
    if not all_finite(tensors):
        raise NonFiniteError(stage)
