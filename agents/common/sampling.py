"""Lock-stepped sampling of all tasks × all trajectories of a meta-batch, in lanes.

One policy call per time step serves a whole lane, whether its tasks share the meta-parameters
(pre-update) or each has its own adapted parameters (post-update).  For families whose
environments step outside the GIL (MuJoCo), the tasks are split into one lane per core: each
lane is a batched environment stepped on its own thread, running its policy calls and physics
back to back without waiting for the others, so that the cores never idle between a policy
call and a physics step; once a lane has ended, the lanes still stepping spread their physics
over the cores it leaves idle (cores need not run equally fast, nor lanes end together).
Other families (numpy-only) run as one lane on the calling thread.

Splitting into lanes changes nothing but speed: initial states are drawn slot by slot from one
stream, the action noise of the whole batch is drawn up front, and each slot's trajectory
depends only on its own state and noise.  (Only to the last bit: a matrix product's rounding
may depend on where its rows lie in memory, and contact dynamics amplify such differences.
For a given number of lanes, sampling is bitwise reproducible.)

The lanes can as well be stepped on the workers of a Ray cluster
(:mod:`metarl.agents.common.ray_sampling`), from the same streams: the same batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt

from metarl.agents.common.episodes import Episodes
from metarl.agents.common.policies import GaussianMLPPolicy, Params
from metarl.agents.common.runtime import keep_freed_memory, torch_threads
from metarl.envs import BatchedEnv, Task, TaskFamily, default_num_threads


@dataclass
class _Lane:
    """One batched environment and the contiguous tasks ``first:last`` it runs."""

    env: BatchedEnv
    first: int
    last: int


_LaneJob = tuple[_Lane, np.ndarray, Params, torch.Tensor]  # lane, first observations, θ, noise

# With fill_steps, a batch has at most this many times the trajectory slots of its first round:
# its tensors are padded to the longest episode, so very short episodes would grow it unbounded.
FILL_LIMIT = 4


class SamplerConfig(BaseModel):
    """Where trajectories are sampled: in this process, or on the workers of a Ray cluster
    (:mod:`metarl.agents.common.ray_sampling`); the same batch either way."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backend: Literal["local", "ray"] = "local"
    # lanes a meta-batch is split into (contiguous tasks each); null: one per core (Ray: per
    # worker CPU) for MuJoCo families, else one (Ray: one per worker)
    num_lanes: PositiveInt | None = None
    # Ray: long-lived workers; null: as many as the cluster's free CPUs hold
    num_workers: PositiveInt | None = None
    cpus_per_worker: PositiveInt = 1  # Ray: cores of each worker, its lanes stepped on them
    # Ray: seconds a worker may take to answer a sampling call (to start: this, at least 60)
    # before it is treated as lost and replaced
    worker_timeout: PositiveFloat = 600.0
    # a step budget per task, as the MAML authors' sampler: a task whose episodes ended early
    # (an Ant that fell) gets further episodes until it has num_trajectories × horizon steps;
    # returns then average over every episode taken, short ones included (as the authors')
    fill_steps: bool = False


def lane_bounds(num_tasks: int, num_lanes: int) -> list[tuple[int, int]]:
    """The task ranges ``first:last`` of ``min(num_lanes, num_tasks)`` contiguous lanes of
    near-equal size, in task order."""
    count = min(num_lanes, num_tasks)
    bounds = np.linspace(0, num_tasks, count + 1).round().astype(int)
    return [(int(first), int(last)) for first, last in zip(bounds[:-1], bounds[1:])]


def cpu_parameters(params: Params) -> Params:
    """``params`` as the lanes' policy calls take them: detached float32 CPU tensors."""
    return {name: p.detach().cpu().float() for name, p in params.items()}


def task_parameters(params: Params, first: int, last: int) -> Params:
    """The parameter sets of tasks ``first:last`` when there is one per task (shared ones as
    they are)."""
    if params["log_std"].dim() == 1:
        return params
    return {name: p[first:last] for name, p in params.items()}


def tasks_of(params: Params, indices: torch.Tensor) -> Params:
    """The parameter sets of the tasks at ``indices`` when there is one per task (shared ones
    as they are)."""
    if params["log_std"].dim() == 1:
        return params
    return {name: p[indices.to(p.device)] for name, p in params.items()}


class LaneRunner:
    """Steps lanes (batched environments of one family, made on first use and kept: the lane
    sets of the last ``max_lane_sets`` task ranges, ``None``: all) each on a thread of its own,
    on ``num_cores`` cores (``None``: this process's).

    While sampling, torch runs on ``policy_threads`` threads (restored afterwards; ``None``
    leaves torch's setting): the simulator's threads use the cores, and idle torch threads that
    spin-wait after each policy call would take CPU from them.
    """

    policy_threads: int | None = 1

    def __init__(
        self,
        family: TaskFamily,
        num_trajectories: int,
        num_cores: int | None = None,
        max_lane_sets: int | None = None,
    ) -> None:
        self.family = family
        self.num_trajectories = num_trajectories
        self.num_cores = num_cores
        self.max_lane_sets = max_lane_sets
        self._lanes: dict[tuple[tuple[int, int], ...], list[_Lane]] = {}
        self._executor: ThreadPoolExecutor | None = None  # runs all lanes but the first
        self._executor_size = 0
        keep_freed_memory()  # the per-step policy buffers are reused, not page-faulted anew

    def lanes(self, bounds: Sequence[tuple[int, int]]) -> list[_Lane]:
        """The lanes of the task ranges ``bounds`` (``first:last`` each, in task order)."""
        key = tuple(bounds)
        if key not in self._lanes:  # each run of a lane sets its threads (_step_lane)
            while self.max_lane_sets is not None and len(self._lanes) >= self.max_lane_sets:
                for lane in self._lanes.pop(next(iter(self._lanes))):  # the oldest
                    lane.env.close()
            cores = max(1, (self.num_cores or default_num_threads()) // len(key))
            self._lanes[key] = [
                _Lane(
                    self.family.make_batched_env((last - first) * self.num_trajectories, cores),
                    first,
                    last,
                )
                for first, last in key
            ]
        return self._lanes[key]

    def close(self) -> None:
        """Release the lanes' environments (worker processes, renderers) and threads."""
        for lanes in self._lanes.values():
            for lane in lanes:
                lane.env.close()
        self._lanes.clear()
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def reset(
        self,
        lanes: Sequence[_Lane],
        tasks: Sequence[Task],
        rng: np.random.Generator,
        wanted: Sequence[int] | None = None,
    ) -> list[np.ndarray]:
        """Each lane's first observations: its slots set to its tasks (``num_trajectories``
        slots each) and reset, lane after lane, from ``rng`` (drawn slot by slot).  With
        ``wanted`` (episodes of each task), a task's slots past its count end at once: never
        simulated, masked whole, every other slot as without."""
        per_task, starts = self.num_trajectories, []
        for lane in lanes:
            lane.env.set_tasks([t for t in tasks[lane.first : lane.last] for _ in range(per_task)])
            starts.append(lane.env.reset(rng))
            if wanted is not None:
                counts = np.asarray(wanted[lane.first : lane.last])
                lane.env.end_slots((np.arange(per_task) >= counts[:, None]).ravel())
        return starts

    def run(
        self,
        policy: GaussianMLPPolicy,
        lanes: Sequence[_Lane],
        starts: Sequence[np.ndarray],
        params: Params,
        noise: torch.Tensor,
    ) -> list[Episodes]:
        """Each of the reset ``lanes``' episodes under ``params`` (CPU, shared or one set per
        task) and the action ``noise`` ``[horizon, tasks, trajectories, action_dim]``, for
        :func:`join_episodes`."""
        jobs: list[_LaneJob] = [
            (
                lane,
                start,
                task_parameters(params, lane.first, lane.last),
                noise[:, lane.first : lane.last],
            )
            for lane, start in zip(lanes, starts)
        ]
        with torch_threads(self.policy_threads):
            return self._run_lanes(policy, jobs)

    def _run_lanes(self, policy: GaussianMLPPolicy, jobs: list[_LaneJob]) -> list[Episodes]:
        """Every lane's episodes: the first lane on this thread, the others on the executor's."""
        running = _RunningLanes(len(jobs), self.num_cores or default_num_threads())
        if len(jobs) == 1:
            return [_run_lane(policy, *jobs[0], self.policy_threads, running)]
        if self._executor is None or self._executor_size < len(jobs) - 1:
            if self._executor is not None:
                self._executor.shutdown()
            self._executor_size = len(jobs) - 1
            self._executor = ThreadPoolExecutor(self._executor_size, "metarl-lane")
        others = [
            self._executor.submit(_run_lane, policy, *job, self.policy_threads, running)
            for job in jobs[1:]
        ]
        try:
            first = _run_lane(policy, *jobs[0], self.policy_threads, running)
        finally:  # no lane may still be stepping when sampling returns or raises
            wait(others)
        return [first, *(job.result() for job in others)]


class BatchSampler:
    """Collects ``num_trajectories`` episodes for each of K tasks in lock-stepped lanes.

    Randomness comes from two seeded streams owned by the sampler: a numpy generator for
    environment resets and a torch generator for action noise (see :meth:`state_dict`).

    A batch is split into at most ``num_lanes`` lanes (``None``: one per core for families
    whose environments step outside the GIL, else one); a lane holds whole tasks, and its
    simulator uses its share of the cores (and more once other lanes have ended).  The lanes
    are stepped by :class:`LaneRunner`.

    With ``fill_steps``, a task whose episodes ended early gets further rounds of episodes until
    it has taken ``num_trajectories × horizon`` steps (:meth:`sample`).
    """

    def __init__(
        self,
        family: TaskFamily,
        num_trajectories: int,
        seed: int,
        num_lanes: int | None = None,
        fill_steps: bool = False,
    ) -> None:
        if num_lanes is not None and num_lanes < 1:
            raise ValueError(f"num_lanes must be >= 1, got {num_lanes}")
        self.family = family
        self.num_trajectories = num_trajectories
        self.num_lanes = num_lanes
        self.fill_steps = fill_steps
        seeds = np.random.SeedSequence(seed).spawn(2)
        self.env_rng = np.random.default_rng(seeds[0])
        self.action_generator = torch.Generator().manual_seed(
            int(seeds[1].generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        )
        self.runner = LaneRunner(family, num_trajectories)
        self._fill_runner: LaneRunner | None = None

    def fill_runner(self, num_trajectories: int) -> LaneRunner:
        """The lane runner of a fill round of ``num_trajectories`` episodes per task: one at a
        time, keeping the lanes of its latest round only (rounds differ in size)."""
        if self._fill_runner is None or self._fill_runner.num_trajectories != num_trajectories:
            if self._fill_runner is not None:
                self._fill_runner.close()
            self._fill_runner = LaneRunner(self.family, num_trajectories, max_lane_sets=1)
        return self._fill_runner

    def lanes_for(self, num_tasks: int, runner: LaneRunner | None = None) -> list[_Lane]:
        """The lanes of ``runner`` (default: the sampler's own) a batch of ``num_tasks`` tasks is
        split into (made on first use)."""
        cores = default_num_threads()
        wanted = self.num_lanes or (cores if self.family.steps_without_gil else 1)
        return (runner or self.runner).lanes(lane_bounds(num_tasks, wanted))

    def sample(self, tasks: Sequence[Task], policy: GaussianMLPPolicy, params: Params) -> Episodes:
        """Roll out ``policy`` under ``params`` (shared, or one set per task) on every task:
        ``num_trajectories`` episodes each, then, with ``fill_steps``, rounds of further
        episodes (at most ``num_trajectories`` per task and round) for the tasks short of
        ``num_trajectories × horizon`` steps, as many as their mean episode length says they
        lack, each kept only while the task is short; until none is, or the batch has
        ``FILL_LIMIT`` times its first round's trajectory slots.  A task's unused slots of a
        round are masked whole."""
        episodes = self.sample_round(tasks, policy, params, self.runner)
        if not self.fill_steps:
            return episodes
        budget = self.num_trajectories * self.lanes_for(len(tasks))[0].env.horizon
        slots, limit = self.num_trajectories, FILL_LIMIT * self.num_trajectories
        rounds, steps = [episodes], episodes.mask.sum((0, 2))
        counts = episodes.episodes_per_task()
        while slots < limit and (short := torch.nonzero(steps < budget).squeeze(1)).numel():
            lacking = (budget - steps[short]) / (steps[short] / counts[short])
            wanted = lacking.ceil().clamp(1, min(self.num_trajectories, limit - slots))
            size = int(wanted.max())
            part = self.sample_round(
                [tasks[int(i)] for i in short],
                policy,
                tasks_of(params, short),
                self.fill_runner(size),
                [int(count) for count in wanted],
            )
            part = on_tasks(until_reached(part, wanted, budget - steps[short]), short, len(tasks))
            rounds.append(part)
            steps, counts = steps + part.mask.sum((0, 2)), counts + part.episodes_per_task()
            slots += size
        return join_episodes(rounds, dim=2)

    def sample_round(
        self,
        tasks: Sequence[Task],
        policy: GaussianMLPPolicy,
        params: Params,
        runner: LaneRunner,
        wanted: Sequence[int] | None = None,
    ) -> Episodes:
        """``runner.num_trajectories`` episodes of ``policy`` on every task, on ``runner``'s
        lanes (with ``wanted``, ``wanted[k]`` of task ``k``, its other slots masked whole)."""
        lanes = self.lanes_for(len(tasks), runner)
        starts = runner.reset(lanes, tasks, self.env_rng, wanted)  # the stream, slot by slot
        noise = self.action_noise(len(tasks), lanes[0].env, runner.num_trajectories)
        return join_episodes(runner.run(policy, lanes, starts, cpu_parameters(params), noise))

    def action_noise(self, num_tasks: int, env: BatchedEnv, num_trajectories: int) -> torch.Tensor:
        """The standard normal noise of every action of a batch of ``num_tasks`` tasks,
        ``[horizon, num_tasks, num_trajectories, action_dim]``, drawn up front."""
        shape = (env.horizon, num_tasks, num_trajectories, env.action_dim)
        return torch.randn(shape, generator=self.action_generator)

    def close(self) -> None:
        """Release the environments' resources (Meta-World's worker processes)."""
        for runner in (self.runner, self._fill_runner):
            if runner is not None:
                runner.close()

    def state_dict(self) -> dict[str, Any]:
        """The sampler's random streams, for exact resume."""
        return {
            "env_rng": self.env_rng.bit_generator.state,
            "action_generator": self.action_generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env_rng.bit_generator.state = state["env_rng"]
        self.action_generator.set_state(state["action_generator"])


class _RunningLanes:
    """How many lanes of a batch are still stepping, and so how many of the ``cores`` each
    may use."""

    def __init__(self, count: int, cores: int) -> None:
        self.count = count
        self.cores = cores
        self._lock = threading.Lock()

    def cores_each(self) -> int:
        return max(1, self.cores // self.count)

    def finished(self) -> None:
        with self._lock:
            self.count -= 1


def _run_lane(
    policy: GaussianMLPPolicy,
    lane: _Lane,
    observation: np.ndarray,
    params: Params,
    noise: torch.Tensor,
    torch_threads: int | None,
    running: _RunningLanes,
) -> Episodes:
    """Step one lane's environment until its horizon or until every slot has ended; once other
    lanes have ended, its simulator also steps on the cores they leave idle."""
    if torch_threads is not None and torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)  # OpenMP's setting is per thread: set it here too
    try:
        return _step_lane(policy, lane, observation, params, noise, running)
    finally:
        running.finished()


def _step_lane(
    policy: GaussianMLPPolicy,
    lane: _Lane,
    observation: np.ndarray,
    params: Params,
    noise: torch.Tensor,
    running: _RunningLanes,
) -> Episodes:
    """The steps of :func:`_run_lane`, on as many cores as the running lanes leave each."""
    env, num_tasks = lane.env, lane.last - lane.first
    cores = running.cores_each()
    env.use_threads(cores)
    observations, actions, rewards, masks = [], [], [], []
    successes: list[np.ndarray] = []  # families that report success: info["success"] per step
    for step in range(env.horizon):
        alive = env.alive.copy()
        if not alive.any():
            break
        if (now := running.cores_each()) != cores:
            cores = now
            env.use_threads(cores)
        obs = torch.from_numpy(observation).float().view(num_tasks, -1, observation.shape[-1])
        action = policy.act(obs, params, noise[step])
        result = env.step(action.view(-1, env.action_dim).numpy().astype(np.float64))
        observations.append(obs)
        actions.append(action)
        rewards.append(result.reward)
        masks.append(alive)
        if "success" in result.info:
            successes.append(result.info["success"])
        observation = result.observation
    shape = (len(rewards), num_tasks, -1)
    return Episodes(
        observations=torch.stack(observations),
        actions=torch.stack(actions),
        rewards=torch.from_numpy(np.stack(rewards)).float().view(shape),
        mask=torch.from_numpy(np.stack(masks)).float().view(shape),
        success=torch.from_numpy(np.stack(successes)).float().view(shape) if successes else None,
    )


def join_episodes(parts: list[Episodes], dim: int = 1) -> Episodes:
    """Episodes side by side along the task axis (``dim`` 1: lanes) or the trajectory axis
    (``dim`` 2: rounds), padded in time to the longest part; observations and actions are set to
    zero wherever the mask is, so that padded and unpadded steps after an episode's end look
    alike whatever the parts."""
    steps = max(len(part.mask) for part in parts)

    def joined(tensors: list[torch.Tensor]) -> torch.Tensor:
        padded = [torch.cat([t, t.new_zeros((steps - len(t), *t.shape[1:]))]) for t in tensors]
        return torch.cat(padded, dim=dim)

    mask = joined([part.mask for part in parts])
    live = mask.unsqueeze(-1) > 0
    success = None
    if all(part.success is not None for part in parts):
        success = joined([part.success for part in parts])  # type: ignore[misc]
    return Episodes(
        observations=joined([part.observations for part in parts]).where(live, 0.0),
        actions=joined([part.actions for part in parts]).where(live, 0.0),
        rewards=joined([part.rewards for part in parts]),
        mask=mask,
        success=success,
    )


def until_reached(episodes: Episodes, counts: torch.Tensor, lacking: torch.Tensor) -> Episodes:
    """``episodes`` with, of task ``k``'s first ``counts[k]`` trajectories, those up to the one
    that brings its steps to ``lacking[k]`` kept (the others masked whole, rewards zero)."""
    lengths = episodes.mask.sum(0)  # [K, M]
    before = lengths.cumsum(1) - lengths  # steps of the task's earlier trajectories
    first = torch.arange(lengths.shape[1]) < counts.unsqueeze(1)
    kept = first & (before < lacking.unsqueeze(1))
    mask = episodes.mask * kept
    return replace(
        episodes,
        rewards=episodes.rewards * mask,
        mask=mask,
        success=None if episodes.success is None else episodes.success * mask,
    )


def on_tasks(episodes: Episodes, indices: torch.Tensor, num_tasks: int) -> Episodes:
    """Episodes of the tasks at ``indices`` placed among ``num_tasks`` tasks (the others with
    no step taken)."""

    def placed(tensor: torch.Tensor) -> torch.Tensor:
        shape = (tensor.shape[0], num_tasks, *tensor.shape[2:])
        return tensor.new_zeros(shape).index_copy_(1, indices, tensor)

    return Episodes(
        observations=placed(episodes.observations),
        actions=placed(episodes.actions),
        rewards=placed(episodes.rewards),
        mask=placed(episodes.mask),
        success=None if episodes.success is None else placed(episodes.success),
    )
