"""The long-lived Ray actors that sample shares of meta-batches, and the pool that survives them.

A *share* is the contiguous lanes of a meta-batch that one worker steps, with everything its
episodes depend on: its tasks, its lanes' task ranges, the reset stream's state at its first lane,
its action noise (and, passed beside it, the policy and its parameters).  Any worker returns the
same episodes for the same share, so a share whose worker is lost is simply sampled again.

:class:`SamplingWorker` steps a share's lanes with :class:`LaneRunner`, on its own cores, as the
local sampler steps its lanes.  :class:`WorkerPool` sends each share to a worker and waits; a
worker whose process dies, whose node is lost, or that does not answer a call within
``timeout`` seconds is killed and its shares sent again with the same inputs: to a new worker
where the cluster has room for one, else to a surviving worker.  When no worker can be had, or
a share has lost :data:`MAX_ATTEMPTS` workers in one call, :class:`WorkersLostError` (one line).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import (
    GetTimeoutError,
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    WorkerCrashedError,
)

from metarl.agents.common.episodes import Episodes
from metarl.agents.common.policies import GaussianMLPPolicy, Params
from metarl.agents.common.sampling import LaneRunner, task_parameters
from metarl.envs import Task

LOST = (RayActorError, ObjectLostError, NodeDiedError, WorkerCrashedError)
"""What Ray raises for a call whose worker (process or node) is gone: the worker is lost.  An
exception raised by the sampling code itself is not among them: it propagates."""
MIN_START_TIMEOUT_S = 60.0  # a new worker may take this long to start, at least
MAX_ATTEMPTS = 3  # workers a share may lose in one sampling call before the pool gives up
RUNNERS_KEPT = 6  # runners of samplers (training, its evaluations; with fill_steps, 2 each)

log = logging.getLogger(__name__)


class WorkersLostError(ConnectionError):
    """No Ray worker can be had to sample (one-line message)."""


@dataclass
class Share:
    """What one worker samples, and all its episodes depend on besides the policy and its
    parameters."""

    sampler: str  # the sampler it is for: a worker keeps each sampler's lanes
    family: ray.ObjectRef  # the task family, fetched by a worker that has no lanes for it yet
    num_trajectories: int
    first: int  # its first task in the meta-batch
    tasks: list[Task]
    bounds: list[tuple[int, int]]  # its lanes' task ranges, counted from ``first``
    reset_state: Mapping[str, Any]  # the reset stream's state at its first lane
    noise: torch.Tensor  # [horizon, len(tasks), num_trajectories, action_dim]
    fill_round: bool = False  # a fill round's (fill_steps): its lanes are kept until the next
    wanted: list[int] | None = None  # episodes of each of its tasks (fill rounds; None: all)

    @property
    def last(self) -> int:
        return self.first + len(self.tasks)

    def describe(self) -> str:
        return f"tasks {self.first}-{self.last - 1}"


class SamplingWorker:
    """A Ray actor that samples shares on ``num_cores`` cores, keeping the lanes (batched
    environments) of the last :data:`RUNNERS_KEPT` samplers it served."""

    def __init__(self, num_cores: int) -> None:
        self.num_cores = num_cores
        self._runners: OrderedDict[str, LaneRunner] = OrderedDict()

    def pid(self) -> int:
        """Its process id: it answers once started."""
        return os.getpid()

    def sample(self, share: Share, policy: GaussianMLPPolicy, params: Params) -> list[Episodes]:
        """Each lane's episodes of ``share`` under ``params`` (shared, or one set per task of
        the meta-batch): its lanes reset from the share's stream state and stepped."""
        runner = self._runner(share)
        lanes = runner.lanes(share.bounds)
        rng = np.random.default_rng()
        rng.bit_generator.state = share.reset_state
        starts = runner.reset(lanes, share.tasks, rng, share.wanted)
        own = task_parameters(params, share.first, share.last)
        return runner.run(policy, lanes, starts, own, share.noise)

    def _runner(self, share: Share) -> LaneRunner:
        """The runner of the share's sampler (of its fill rounds: with the lanes of the latest
        one only, as they differ in size); a replaced or evicted runner is closed."""
        runner = self._runners.pop(share.sampler, None)
        if runner is not None and runner.num_trajectories != share.num_trajectories:
            runner.close()
            runner = None
        if runner is None:
            family = ray.get(share.family)
            kept = 1 if share.fill_round else None
            runner = LaneRunner(family, share.num_trajectories, self.num_cores, kept)
        self._runners[share.sampler] = runner  # the most recently used last
        while len(self._runners) > RUNNERS_KEPT:
            self._runners.popitem(last=False)[1].close()
        return runner


_RemoteWorker = ray.remote(SamplingWorker)


@dataclass(eq=False)
class _Worker:
    """A started worker: its actor and process id."""

    actor: Any
    pid: int


@dataclass
class _Call:
    """A share sent to a worker, due by ``deadline`` (``time.monotonic``)."""

    share: int
    worker: _Worker
    deadline: float


class WorkerPool:
    """``size`` workers of ``cpus_per_worker`` cores, started at once (a
    :class:`WorkersLostError` if the cluster cannot hold them or they do not start) and
    replaced as they are lost."""

    def __init__(self, num_workers: int | None, cpus_per_worker: int, timeout: float) -> None:
        self.cpus = cpus_per_worker
        free, largest = _capacity()
        if largest < cpus_per_worker:
            raise WorkersLostError(
                f"sampler.cpus_per_worker: {cpus_per_worker} CPUs per worker, but the largest "
                f"node of the Ray cluster has {largest:g}"
            )
        self.size = num_workers or int(free // cpus_per_worker)
        if self.size < 1 or self.size * cpus_per_worker > free:
            raise WorkersLostError(
                f"sampler.num_workers: {self.size} workers of {cpus_per_worker} CPUs need "
                f"{self.size * cpus_per_worker} free CPUs; the Ray cluster has {free:g}"
            )
        self.workers = self._start(self.size, timeout)

    def sample(
        self, shares: list[Share], policy: ray.ObjectRef, params: ray.ObjectRef, timeout: float
    ) -> list[list[Episodes]]:
        """Each share's episodes (a part per lane), in order, every share sampled by some
        worker (again by another if its worker is lost); first, the pool grows back to
        ``size`` workers where the cluster has room."""
        self._top_up(timeout)
        return _Round(self, shares, policy, params, timeout).run()

    def lose(self, worker: _Worker, reason: str) -> None:
        """Kill ``worker`` (it may be hung) and drop it from the pool."""
        log.warning("sampler: lost the Ray worker with pid %d (%s)", worker.pid, reason)
        ray.kill(worker.actor, no_restart=True)
        self.workers.remove(worker)

    def replacement(self, timeout: float) -> _Worker | None:
        """A new worker where the cluster has room for one now (or where none survives and a
        node could ever hold one), else None; a :class:`WorkersLostError` when no worker
        can be had."""
        free, largest = _capacity()
        if free < self.cpus and self.workers:
            return None
        if largest < self.cpus:
            raise WorkersLostError(
                f"sampler: every Ray worker was lost and no node of the cluster has "
                f"{self.cpus} CPUs for a new one"
            )
        started = self._try_start(1, timeout)
        return started[0] if started else None

    def _top_up(self, timeout: float) -> None:
        if len(self.workers) < self.size:
            missing = min(self.size - len(self.workers), int(_capacity()[0] // self.cpus))
            if missing > 0:
                self._try_start(missing, timeout)
        if not self.workers:
            raise WorkersLostError("sampler: no Ray worker left and no room for a new one")

    def _try_start(self, count: int, timeout: float) -> list[_Worker]:
        """``count`` new workers, added to the pool; none (a warning) if they do not start while
        others survive, a :class:`WorkersLostError` if none survives."""
        try:
            started = self._start(count, timeout)
        except WorkersLostError as error:
            if not self.workers:
                raise
            log.warning("%s; the surviving workers sample", error)
            return []
        self.workers += started
        return started

    def _start(self, count: int, timeout: float) -> list[_Worker]:
        """``count`` new workers, once each has answered."""
        remote = _RemoteWorker.options(num_cpus=self.cpus)
        actors: list[Any] = [remote.remote(self.cpus) for _ in range(count)]
        limit = max(timeout, MIN_START_TIMEOUT_S)
        try:
            pids = ray.get([actor.pid.remote() for actor in actors], timeout=limit)
        except (GetTimeoutError, *LOST) as error:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            timed_out = isinstance(error, GetTimeoutError)
            reason = f"not within {limit:g} s" if timed_out else first_line(error)
            raise WorkersLostError(f"sampler: Ray workers did not start ({reason})") from None
        return [_Worker(actor, pid) for actor, pid in zip(actors, pids)]


class _Round:
    """One sampling call of the pool: every share sent, each lost worker's shares sent again."""

    def __init__(
        self,
        pool: WorkerPool,
        shares: list[Share],
        policy: ray.ObjectRef,
        params: ray.ObjectRef,
        timeout: float,
    ) -> None:
        self.pool, self.shares, self.policy, self.params = pool, shares, policy, params
        self.timeout = timeout
        self.calls: dict[ray.ObjectRef, _Call] = {}
        self.results: dict[int, list[Episodes]] = {}
        self.attempts: Counter[int] = Counter()

    def run(self) -> list[list[Episodes]]:
        workers = self.pool.workers
        for index in range(len(self.shares)):
            self.submit(index, workers[index % len(workers)])
        while self.calls:
            lost = self.wait()  # all of them out of the pool before any share is sent again
            orphans = [call.share for call in self.calls.values() if call.worker in lost]
            self.calls = {r: c for r, c in self.calls.items() if c.worker not in lost}
            for worker, reason in lost.items():
                self.pool.lose(worker, reason)
            for index in orphans:
                self.submit(index, self.stand_in())
        return [self.results[index] for index in range(len(self.shares))]

    def submit(self, index: int, worker: _Worker) -> None:
        share = self.shares[index]
        self.attempts[index] += 1
        if self.attempts[index] > MAX_ATTEMPTS:
            raise WorkersLostError(
                f"sampler: {share.describe()} lost {MAX_ATTEMPTS} Ray workers in a row; giving up"
            )
        queued = 1 + sum(call.worker is worker for call in self.calls.values())
        ref = worker.actor.sample.remote(share, self.policy, self.params)
        self.calls[ref] = _Call(index, worker, time.monotonic() + queued * self.timeout)

    def wait(self) -> dict[_Worker, str]:
        """Collect the first call to answer before the earliest deadline; the workers lost
        meanwhile (their call failed, or is overdue), with why."""
        left = min(call.deadline for call in self.calls.values()) - time.monotonic()
        ready, _ = ray.wait(list(self.calls), num_returns=1, timeout=max(left, 0.0))
        lost: dict[_Worker, str] = {}
        for ref in ready:
            call = self.calls[ref]
            try:
                self.results[call.share] = ray.get(ref)
            except LOST as error:  # the call stays, to be sent again
                lost[call.worker] = first_line(error)
            else:
                del self.calls[ref]
        now = time.monotonic()
        for call in self.calls.values():
            if call.deadline <= now and call.worker not in lost:
                lost[call.worker] = f"no answer within {self.timeout:g} s"
        return lost

    def stand_in(self) -> _Worker:
        """Who samples a lost worker's share: a new worker, else the least busy survivor."""
        new = self.pool.replacement(self.timeout)
        if new is not None:
            return new
        busy = Counter(call.worker for call in self.calls.values())
        return min(self.pool.workers, key=lambda worker: busy[worker])


def _capacity() -> tuple[float, float]:
    """The cluster's free CPUs now, and the CPUs of its largest live node."""
    free = ray.available_resources().get("CPU", 0.0)
    nodes = [node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]]
    return free, max(nodes, default=0.0)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
