"""Wall-clock time of an agent's phases, read by the training loop once per meta-iteration."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator


class PhaseTimer:
    """Seconds spent in each named phase since the last :meth:`pop`.

    Usage::

        with timer("conjugate_gradient"):
            ...
        timer.pop()  # {"conjugate_gradient": 0.42}
    """

    def __init__(self) -> None:
        self._seconds: defaultdict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[phase] += time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        """The seconds per phase so far, then start again from zero."""
        seconds, self._seconds = dict(self._seconds), defaultdict(float)
        return seconds
