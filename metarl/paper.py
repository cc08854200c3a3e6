"""The MAML paper's returns (Finn et al. 2017, original physics, 40 test tasks, after 0, 1, 2
and 3 gradient steps), by task family: data to compare with, never results of ours.  Its
published numbers, but for the random rows of HalfCheetah velocity and Ant velocity, which are
read off its figure."""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("maml", "pretrained", "random", "oracle")


@dataclass(frozen=True)
class PaperRow:
    """The paper's returns for one task family (the oracle: one number, no adaptation)."""

    maml: tuple[float, ...]
    pretrained: tuple[float, ...]
    random: tuple[float, ...]
    oracle: float
    # the test's step size after the first step, as a fraction of the first's (the authors'
    # test scripts: 0.5; Ant direction 0.01)
    later_ratio: float = 0.5

    def returns(self, method: str) -> tuple[float, ...]:
        """The returns of ``method`` (one of :data:`METHODS`)."""
        return (self.oracle,) if method == "oracle" else getattr(self, method)

    @property
    def one_step_criterion(self) -> float:
        """MAML's return after one step less 10% of the range from random (after one step,
        as MAML) to oracle."""
        return self.maml[1] - 0.1 * (self.oracle - self.random[1])


PAPER = {
    "Navigation2D": PaperRow(
        (-40.4, -11.7, -3.3, -3.2), (-40.8, -19.7, -11.7, -8.5), (-82.7, -58.0, -53.8, -46.8), -2.3
    ),
    "HalfCheetahVel": PaperRow(
        (-129.5, -78.6, -66.6, -60.8),
        (-158.0, -135.4, -128.5, -133.6),
        (-255.0, -254.0, -247.0, -231.0),  # read off the paper's figure ("about")
        -54.5,
    ),
    "HalfCheetahDir": PaperRow(
        (-50.7, 293.2, 313.5, 315.7), (-43.0, -24.8, -12.9, 19.6), (-35.7, 21.8, 62.3, 86.2), 442.7
    ),
    "AntVel": PaperRow(
        (30.6, 96.7, 100.1, 101.4),
        (-1.8, 6.1, 8.5, 9.5),
        (-79.0, -63.0, -49.0, -36.0),  # read off the paper's figure
        107.9,
    ),
    "AntDir": PaperRow(
        (8.7, 499.2, 500.7, 499.1), (3.2, 1.3, 6.5, 6.9), (3.1, 9.3, 16.0, 26.1), 524.8, 0.01
    ),
}
"""By family; the paper has no row for AntGoal."""


def later_ratio(family: str) -> float:
    """The step size of the paper's test after the first step, as a fraction of the first's,
    for ``family`` (one half where the paper has no row)."""
    row = PAPER.get(family)
    return 0.5 if row is None else row.later_ratio


def later_steps(family: str) -> str:
    """:func:`later_ratio` in words: "α/2", "α/100"."""
    return f"α/{1 / later_ratio(family):g}"
