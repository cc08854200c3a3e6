"""Sampler throughput (policy included) against raw physics throughput, locomotion families.

For each family and physics preset, one run times in interleaved rounds (medians reported):

* raw: the bare XML model (the preset's timestep and frame skip, no sensors) with
  B = tasks x trajectories slots, started from the family's reset states and stepped by
  ``mujoco.rollout`` on the simulator's thread pool for an episode (the preset's horizon, or
  ``--steps``) under random controls (standard normal, clipped to [-1, 1]); no policy,
  observations, rewards or probe;
* raw-replay: the same bare model and rollout, replaying exactly the sampler's previous batch:
  the same initial states, the same controls, the same live slots.  This is the physics work of
  the sampled batch itself (the initial policy saturates its actions more often than random
  controls do, which changes the contact dynamics and so the cost of physics);
* replay+probe (presets that measure after each step, Ant ``original``): the same replay plus
  the probe pass after each step (one forward pass at the new state, as rllab's
  ``model.forward()``): all the physics the preset's observations require.  With RK4 (four
  forward passes per step) and one probe pass, raw physics can be at most about 4/5 of it;
* env: ``BatchedEnv.step`` of the family under random actions (physics, probe pass where the
  preset needs one, observations, rewards, masking), no policy;
* sampler: ``metarl.sampling.BatchSampler.sample`` with a GaussianMLPPolicy (100-100 ReLU)
  and one adapted parameter set per task, as in post-update sampling, over episodes of
  ``--steps`` steps (reset and batch assembly included), torch on 1 thread while sampling
  (the sampler's default);
* no-sharing: the same sampler, its lanes keeping their own share of the cores to the end
  (``BatchSampler.share_idle_cores = False``) instead of spreading their physics over the cores
  of lanes that have ended;
* one-lane: the same sampler with the batch in one lane (one environment stepped by a thread
  pool, the policy called between steps while the pool idles) instead of one lane per core;
* torch-default: the sampler with torch's threads left as they are (one per core);
* policy: the policy's actions alone, on one thread, for the observations of the sampler's
  previous batch (every step of every slot, in lane-sized calls, as the lanes make them).

No sampler can beat the physics its batch requires plus the policy's own arithmetic: with C
cores, the ceiling is ``1 / (1/required + 1/(C x policy))`` slot-steps/s, ``required`` being
replay+probe where the preset has a probe pass and raw-replay otherwise; it is reported as a row
and as the last ratio column.  (The policy alone runs with warm caches; inside the sampler
every call follows a physics step, so the ceiling is a little optimistic; on the other hand the
sampler's lanes step on the calling threads, which can be faster than raw's thread pool.)

Rates are slot control steps per second; raw-replay, env and sampler count live slots only
(terminated slots are not simulated).  Reported: the median and best rate over the rounds, and
the medians of the per-round ratios to raw, to raw-replay, to the physics the preset requires
(replay+probe where there is a probe pass, raw-replay otherwise) and to the ceiling.

    python benchmarks/bench_sampler.py --tasks 40 --trajectories 20 --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import default_num_threads, make_family  # noqa: E402
from envs.mujoco_core import (  # noqa: E402
    PRESETS,
    BatchedLocomotionEnv,
    BatchedSimulation,
    LocomotionFamily,
    load_model,
    mujoco,
)
from metarl.episodes import Episodes  # noqa: E402
from metarl.policies import GaussianMLPPolicy, Params  # noqa: E402
from metarl.sampling import BatchSampler  # noqa: E402

FAMILY_NAMES = ["HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntGoal"]


def random_actions(
    rng: np.random.Generator, num_steps: int, num_envs: int, action_dim: int
) -> np.ndarray:
    """Actions like those of the initial policy (mean about 0, std 1), clipped to [-1, 1]."""
    return np.clip(rng.standard_normal((num_steps, num_envs, action_dim)), -1.0, 1.0)


class Case:
    """The three timed workloads of one family and preset, built once."""

    def __init__(self, name: str, preset: str, args: argparse.Namespace) -> None:
        self.family = make_family(name, seed=0, physics=preset, horizon=args.steps)
        assert isinstance(self.family, LocomotionFamily)
        self.num_envs = args.tasks * args.trajectories
        self.num_steps = self.family.horizon
        self.rng = np.random.default_rng(0)
        self.env = self.family.make_batched_env(self.num_envs)
        assert isinstance(self.env, BatchedLocomotionEnv)
        model = load_model(self.family.xml_file)  # the bare shipped model, no sensors
        model.opt.timestep = self.env.sim.model.opt.timestep
        self.raw = BatchedSimulation(
            model, self.num_envs, self.env.sim.frame_skip, self.env.sim.probe_model
        )
        self.tasks = self.family.sample_tasks(args.tasks)
        self.samplers = {
            lanes: BatchSampler(self.family, args.trajectories, seed=0, num_lanes=lanes)
            for lanes in (None, 1)
        }
        torch.manual_seed(0)
        self.policy = GaussianMLPPolicy(self.env.observation_dim, self.env.action_dim)
        self.params = adapted_parameters(self.policy, args.tasks)
        self.env.set_tasks([task for task in self.tasks for _ in range(args.trajectories)])
        self.last_sampled: tuple[np.random.Generator, Episodes, np.ndarray] | None = None

    def step_raw(self, actions: np.ndarray, live: np.ndarray, probe: bool = False) -> float:
        """Seconds for the bare model to take ``actions`` ``[T, B, nu]`` (in [-1, 1], mapped to
        the actuator range as the environments do) in the ``live`` ``[T, B]`` slots, from the
        state of ``self.env``; with ``probe``, the probe pass after each step too."""
        self.raw.state[:] = self.env.sim.state
        low, high = self.raw.model.actuator_ctrlrange.T
        controls = (high + low) / 2 + (high - low) / 2 * np.clip(actions, -1.0, 1.0)
        start = time.perf_counter()
        for ctrl, active in zip(controls, live):
            self.raw.step(ctrl, active)
            if probe:
                self.raw.probe(ctrl, active)
        return time.perf_counter() - start

    def time_raw(self) -> float:
        self.env.reset(self.rng)
        actions = random_actions(self.rng, self.num_steps, self.num_envs, self.raw.model.nu)
        live = np.ones((self.num_steps, self.num_envs), dtype=bool)
        return self.num_envs * self.num_steps / self.step_raw(actions, live)

    def time_env(self) -> float:
        self.env.reset(self.rng)
        actions = random_actions(self.rng, self.num_steps, self.num_envs, self.env.action_dim)
        live = 0
        start = time.perf_counter()
        for action in actions:
            live += int(self.env.alive.sum())
            self.env.step(action)
        return live / (time.perf_counter() - start)

    def time_sampler(
        self, policy_threads: int | None, lanes: int | None = None, share: bool = True
    ) -> float:
        sampler = self.samplers[lanes]
        sampler.policy_threads, sampler.share_idle_cores = policy_threads, share
        reset_stream = copy.deepcopy(sampler.env_rng)
        start = time.perf_counter()
        episodes = sampler.sample(self.tasks, self.policy, self.params)
        elapsed = time.perf_counter() - start
        self.last_sampled = (reset_stream, episodes, final_qpos(sampler))
        return float(episodes.mask.sum()) / elapsed

    def time_policy(self) -> float:
        """Slot-steps per second of the policy alone, on one thread, over the observations of
        the sampler's last batch, called lane by lane as the sampler calls it."""
        assert self.last_sampled is not None, "time_sampler runs first"
        observations = self.last_sampled[1].observations
        per_lane = [env.num_envs // observations.shape[2] for env in self.samplers[None].last_envs]
        bounds = np.cumsum([0, *per_lane])
        noise = torch.zeros(observations.shape[:-1] + (self.env.action_dim,))
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            start = time.perf_counter()
            for first, last in zip(bounds[:-1], bounds[1:]):
                params = {name: p[first:last] for name, p in self.params.items()}
                for step in range(len(observations)):
                    self.policy.act(observations[step, first:last], params, noise[step, first:last])
            elapsed = time.perf_counter() - start
        finally:
            torch.set_num_threads(previous)
        return observations.shape[0] * observations.shape[1] * observations.shape[2] / elapsed

    def time_replay(self, probe: bool = False) -> float:
        """Raw physics of exactly the sampler's last batch (see :meth:`replay`)."""
        assert self.last_sampled is not None, "time_sampler runs first"
        seconds = self.replay(*self.last_sampled, probe)
        return float(self.last_sampled[1].mask.sum()) / seconds

    def replay(
        self,
        reset_stream: np.random.Generator,
        episodes: Episodes,
        final_qpos: np.ndarray,
        probe: bool = False,
    ) -> float:
        """Seconds for the bare model to redo a sampled batch: the same initial states (drawn
        from a copy of the sampler's reset stream as it was), the same controls, live slots
        only (and with ``probe`` the probe pass after each step).  That is the batch's own
        physics work: the final positions must be the sampled batch's ``final_qpos`` (a
        warning otherwise)."""
        self.env.reset(copy.deepcopy(reset_stream))
        actions = episodes.actions.numpy().reshape(len(episodes.actions), self.num_envs, -1)
        live = episodes.mask.numpy().reshape(len(episodes.mask), self.num_envs) > 0
        seconds = self.step_raw(actions.astype(np.float64), live, probe)
        if not np.array_equal(self.raw.qpos, final_qpos):
            print("warning: the replay did not reproduce the sampled trajectories")
        return seconds


def final_qpos(sampler: BatchSampler) -> np.ndarray:
    """Joint positions ``[K * M, nq]`` of every slot at the end of the sampler's last batch."""
    return np.concatenate([env.sim.qpos for env in sampler.last_envs])  # type: ignore[attr-defined]


def adapted_parameters(policy: GaussianMLPPolicy, num_tasks: int) -> Params:
    """One parameter set per task near the policy's, like the inner loop's adapted ones."""
    generator = torch.Generator().manual_seed(1)
    return {
        name: (p.detach() + 0.01 * torch.randn((num_tasks, *p.shape), generator=generator))
        for name, p in policy.meta_parameters().items()
    }


def required_physics(rates: dict[str, float]) -> str:
    """The workload that is all the physics the preset's batch requires."""
    return "replay+probe" if "replay+probe" in rates else "raw-replay"


def summary(rounds: list[dict[str, float]], key: str) -> tuple[float, float, list[float]]:
    """Median and best rate of ``key``, and the medians of its per-round ratios to raw, to
    raw-replay, to the physics the preset requires and to the ceiling."""
    rates = [r[key] for r in rounds]
    references = ["raw", "raw-replay", required_physics(rounds[0]), "ceiling"]
    ratios = [statistics.median(r[key] / r[ref] for r in rounds) for ref in references]
    return statistics.median(rates), max(rates), ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=40, help="tasks per batch (K)")
    parser.add_argument("--trajectories", type=int, default=20, help="trajectories per task (M)")
    parser.add_argument(
        "--steps", type=int, help="control steps per episode (default: the preset's horizon)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument(
        "--families", nargs="+", default=["HalfCheetahVel", "AntVel"], choices=FAMILY_NAMES
    )
    parser.add_argument("--physics", nargs="+", default=sorted(PRESETS), choices=sorted(PRESETS))
    parser.add_argument(
        "--no-thread-comparison",
        action="store_true",
        help="skip the sampler run with torch's threads left at torch's default",
    )
    args = parser.parse_args()
    print(
        f"B = {args.tasks} tasks x {args.trajectories} trajectories, "
        f"{args.steps or 'horizon'} steps, "
        f"{args.rounds} rounds, {default_num_threads()} simulator threads, "
        f"torch default threads {torch.get_num_threads()}, mujoco {mujoco.__version__}"
    )
    print(
        f"{'family':<16}{'physics':<11}{'workload':<15}{'median steps/s':>16}{'best steps/s':>14}"
        f"{'/raw':>8}{'/replay':>9}{'/required':>11}{'/ceiling':>10}"
    )
    for name in args.families:
        for preset in args.physics:
            case = Case(name, preset, args)
            columns = ["raw", "raw-replay"]
            columns += ["replay+probe"] if case.raw.probe_model is not None else []
            columns += ["env", "sampler", "no-sharing", "one-lane"]
            columns += [] if args.no_thread_comparison else ["torch-default"]
            columns += ["policy"]
            workloads: dict[str, Callable[[], float]] = {
                "raw": case.time_raw,
                "raw-replay": case.time_replay,
                "replay+probe": functools.partial(case.time_replay, True),
                "env": case.time_env,
                "sampler": functools.partial(case.time_sampler, 1),
                "no-sharing": functools.partial(case.time_sampler, 1, None, False),
                "one-lane": functools.partial(case.time_sampler, 1, 1),
                "torch-default": functools.partial(case.time_sampler, None),
                "policy": case.time_policy,
            }
            case.time_sampler(1, 1)  # warm up: thread pools, allocations
            case.time_sampler(1)
            rounds = []
            for index in range(args.rounds):  # interleaved, in rotating order
                shift = index % len(columns)
                order = columns[shift:] + columns[:shift]
                rates = {key: workloads[key]() for key in order}
                cores, required = default_num_threads(), rates[required_physics(rates)]
                rates["ceiling"] = 1 / (1 / required + 1 / (cores * rates["policy"]))
                rounds.append(rates)
            for key in [*columns, "ceiling"]:
                median, best, ratios = summary(rounds, key)
                print(
                    f"{name:<16}{preset:<11}{key:<15}{median:>16,.0f}{best:>14,.0f}"
                    + "".join(f"{ratio:>{w}.3f}" for ratio, w in zip(ratios, (8, 9, 11, 10))),
                    flush=True,
                )


if __name__ == "__main__":
    main()
