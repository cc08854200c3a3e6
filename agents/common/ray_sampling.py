"""Sampling on the workers of a Ray cluster, the learner left in the calling (driver) process.

:class:`RaySampler` is a :class:`BatchSampler` whose lanes are stepped by long-lived Ray actors
(:mod:`metarl.agents.common.ray_workers`), each stepping its share of the lanes on its own cores
as the local sampler steps its lanes.  The driver decides everything random, from the sampler's
own streams: it draws the batch's action noise, and advances the reset stream through its own
copy of the lanes' environments exactly as the local sampler does, handing each share the
stream's state at its first lane.  For the same seed and the same lanes, the batch is the local
sampler's, and its state (:meth:`BatchSampler.state_dict`) is the same: a checkpoint resumes
on either.  The policy's parameters go to the object store once per sampling call; episodes
come back as tensors, a part per lane, joined as the local sampler joins its lanes.

The workers are shared by every sampler of the process with the same settings (training, its
videos and its evaluation), started with the first.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Sequence

import ray

from metarl.agents.common.episodes import Episodes
from metarl.agents.common.policies import GaussianMLPPolicy, Params
from metarl.agents.common.ray_workers import Share, WorkerPool, first_line
from metarl.agents.common.sampling import (
    BatchSampler,
    LaneRunner,
    SamplerConfig,
    cpu_parameters,
    join_episodes,
    lane_bounds,
)
from metarl.envs import Task, TaskFamily

_POOLS: dict[tuple[str, str, int | None, int], WorkerPool] = {}


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (``"auto"``: the one this machine belongs to;
    ``None``: ``RAY_ADDRESS``, else one started on this machine, else a new local one) unless
    this process has joined one; a one-line :class:`ConnectionError` where it cannot."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = "" if address is None else f" at {address}"
        raise ConnectionError(f"cannot join a Ray cluster{where}: {first_line(error)}") from None


def worker_pool(config: SamplerConfig) -> WorkerPool:
    """The process's pool of workers of ``config``'s number and size, started on first use."""
    context = ray.get_runtime_context()
    key = (context.get_job_id(), context.get_node_id(), config.num_workers, config.cpus_per_worker)
    if key not in _POOLS:
        _POOLS[key] = WorkerPool(config.num_workers, config.cpus_per_worker, config.worker_timeout)
    return _POOLS[key]


class RaySampler(BatchSampler):
    """A :class:`BatchSampler` whose lanes Ray workers step (see the module's docstring).

    By default a batch has one lane per worker CPU for families whose environments step
    outside the GIL, else one per worker; ``config.num_lanes`` sets it (as the local
    sampler's ``num_lanes``, for the same batch).  A worker that does not answer a call within
    ``config.worker_timeout`` seconds is treated as lost.
    """

    def __init__(
        self, family: TaskFamily, num_trajectories: int, seed: int, config: SamplerConfig
    ) -> None:
        connect()
        self.pool = worker_pool(config)
        per_worker = config.cpus_per_worker if family.steps_without_gil else 1
        lanes = config.num_lanes or self.pool.size * per_worker
        super().__init__(family, num_trajectories, seed, lanes, config.fill_steps)
        self.timeout = config.worker_timeout
        self.name = uuid.uuid4().hex  # the workers keep this sampler's lanes under it
        self._family = ray.put(family)
        self._policy: tuple[GaussianMLPPolicy, ray.ObjectRef] | None = None

    def sample_round(
        self,
        tasks: Sequence[Task],
        policy: GaussianMLPPolicy,
        params: Params,
        runner: LaneRunner,
        wanted: Sequence[int] | None = None,
    ) -> Episodes:
        """``runner.num_trajectories`` episodes of ``policy`` on every task (``wanted[k]`` of
        task ``k`` where given), stepped by the workers (``runner``'s lanes here only advance
        the reset stream)."""
        lanes = self.lanes_for(len(tasks), runner)
        noise = self.action_noise(len(tasks), lanes[0].env, runner.num_trajectories)
        fill_round = runner is not self.runner
        name = f"{self.name}/fill" if fill_round else self.name  # the lanes a worker keeps
        shares = []
        for first_lane, last_lane in lane_bounds(len(lanes), self.pool.size):
            own = lanes[first_lane:last_lane]
            first, last = own[0].first, own[-1].last
            reset_state = self.env_rng.bit_generator.state
            runner.reset(own, tasks, self.env_rng)  # here only to advance the stream
            shares.append(
                Share(
                    sampler=name,
                    family=self._family,
                    num_trajectories=runner.num_trajectories,
                    first=first,
                    tasks=list(tasks[first:last]),
                    bounds=[(lane.first - first, lane.last - first) for lane in own],
                    reset_state=reset_state,
                    noise=noise[:, first:last].clone(),  # a slice would carry all the noise
                    fill_round=fill_round,
                    wanted=None if wanted is None else list(wanted[first:last]),
                )
            )
        params_ref = ray.put(cpu_parameters(params))
        parts = self.pool.sample(shares, self._policy_ref(policy), params_ref, self.timeout)
        return join_episodes([lane for share in parts for lane in share])  # as the local sampler

    def _policy_ref(self, policy: GaussianMLPPolicy) -> ray.ObjectRef:
        """``policy`` in the object store, on the CPU (its architecture: the parameters of
        each call are sent apart), put once."""
        if self._policy is None or self._policy[0] is not policy:
            self._policy = (policy, ray.put(copy.deepcopy(policy).cpu()))
        return self._policy[1]
