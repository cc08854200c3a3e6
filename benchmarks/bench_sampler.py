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
* sampler: ``BatchSampler.sample`` with a GaussianMLPPolicy (100-100 ReLU) and one adapted
  parameter set per task, as in post-update sampling, over episodes of ``--steps`` steps
  (reset and batch assembly included);
* sampler+fill: the same with ``fill_steps`` (rounds of further episodes for the tasks whose
  episodes ended early, up to trajectories x steps per task, as the MAML authors' sampler);
  its rate counts the steps of every round.  Where no episode ends early it is the plain
  sampler's batch.  Also printed: its steps per batch against the plain sampler's;
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
import functools
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from helpers import LOCOMOTION_FAMILIES, RawPhysics, Recorded, adapted_parameters, record_batches

from metarl.agents.common.policies import GaussianMLPPolicy
from metarl.agents.common.sampling import BatchSampler
from metarl.envs import default_num_threads, make_family
from metarl.envs.mujoco_core import PRESETS, mujoco


class Case:
    """The timed workloads of one family and preset, built once."""

    def __init__(self, name: str, preset: str, args: argparse.Namespace) -> None:
        self.family = make_family(name, seed=0, physics=preset, horizon=args.steps)
        self.num_envs = args.tasks * args.trajectories
        self.num_steps = self.family.horizon
        self.raw = RawPhysics(self.family, self.num_envs)
        self.env = self.raw.env
        self.tasks = self.family.sample_tasks(args.tasks)
        self.sampler = BatchSampler(self.family, args.trajectories, seed=0)
        self.fill_sampler = BatchSampler(self.family, args.trajectories, seed=0, fill_steps=True)
        self.batch_steps: dict[str, list[float]] = {"sampler": [], "sampler+fill": []}
        self.recorded: list[Recorded] = []
        record_batches(self.sampler, self.recorded)
        torch.manual_seed(0)
        self.policy = GaussianMLPPolicy(self.env.observation_dim, self.env.action_dim)
        self.params = adapted_parameters(self.policy, args.tasks)

    def time_raw(self) -> float:
        return self.raw.random_rate(self.num_steps)

    def time_env(self) -> float:
        self.env.reset(self.raw.rng)
        shape = (self.num_steps, self.num_envs, self.env.action_dim)
        actions = np.clip(self.raw.rng.standard_normal(shape), -1.0, 1.0)
        live = 0
        start = time.perf_counter()
        for action in actions:
            live += int(self.env.alive.sum())
            self.env.step(action)
        return live / (time.perf_counter() - start)

    def time_sampler(self, fill: bool = False) -> float:
        sampler, key = (self.fill_sampler, "sampler+fill") if fill else (self.sampler, "sampler")
        if not fill:
            self.recorded.clear()  # the plain sampler's batches are kept for the replays
        start = time.perf_counter()
        episodes = sampler.sample(self.tasks, self.policy, self.params)
        steps = float(episodes.mask.sum())
        self.batch_steps[key].append(steps)
        return steps / (time.perf_counter() - start)

    def time_policy(self) -> float:
        """Slot-steps per second of the policy alone, on one thread, over the observations of
        the sampler's last batch, called lane by lane as the sampler calls it."""
        observations = self.recorded[-1][1].observations
        lanes = self.sampler.lanes_for(len(self.tasks))
        noise = torch.zeros(observations.shape[:-1] + (self.env.action_dim,))
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            start = time.perf_counter()
            for lane in lanes:
                params = {name: p[lane.first : lane.last] for name, p in self.params.items()}
                for step in range(len(observations)):
                    tasks = slice(lane.first, lane.last)
                    self.policy.act(observations[step, tasks], params, noise[step, tasks])
            elapsed = time.perf_counter() - start
        finally:
            torch.set_num_threads(previous)
        return observations.shape[0] * observations.shape[1] * observations.shape[2] / elapsed

    def time_replay(self, probe: bool = False) -> float:
        """Raw physics of exactly the sampler's last batch (:meth:`RawPhysics.replay`)."""
        batch = self.recorded[-1]
        return float(batch[1].mask.sum()) / self.raw.replay(batch, probe)


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
        "--families", nargs="+", default=["HalfCheetahVel", "AntVel"], choices=LOCOMOTION_FAMILIES
    )
    parser.add_argument("--physics", nargs="+", default=sorted(PRESETS), choices=sorted(PRESETS))
    args = parser.parse_args()
    print(
        f"B = {args.tasks} tasks x {args.trajectories} trajectories, "
        f"{args.steps or 'horizon'} steps, "
        f"{args.rounds} rounds, {default_num_threads()} simulator threads, "
        f"mujoco {mujoco.__version__}"
    )
    print(
        f"{'family':<16}{'physics':<11}{'workload':<15}{'median steps/s':>16}{'best steps/s':>14}"
        f"{'/raw':>8}{'/replay':>9}{'/required':>11}{'/ceiling':>10}"
    )
    for name in args.families:
        for preset in args.physics:
            case = Case(name, preset, args)
            columns = ["raw", "raw-replay"]
            columns += ["replay+probe"] if case.raw.has_probe else []
            columns += ["env", "sampler", "sampler+fill", "policy"]
            workloads: dict[str, Callable[[], float]] = {
                "raw": case.time_raw,
                "raw-replay": case.time_replay,
                "replay+probe": functools.partial(case.time_replay, True),
                "env": case.time_env,
                "sampler": case.time_sampler,
                "sampler+fill": functools.partial(case.time_sampler, True),
                "policy": case.time_policy,
            }
            case.time_sampler()  # warm up: thread pools, allocations
            case.time_sampler(fill=True)
            rounds = []
            for index in range(args.rounds):  # interleaved, in rotating order
                shift = index % len(columns)
                order = columns[shift:] + columns[:shift]
                order.remove("sampler")  # the replays and the policy reuse its last batch
                order.insert(0, "sampler")
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
            steps = {key: statistics.median(values) for key, values in case.batch_steps.items()}
            print(
                f"{name:<16}{preset:<11}steps per batch: sampler {steps['sampler']:,.0f}, "
                f"sampler+fill {steps['sampler+fill']:,.0f} "
                f"({steps['sampler+fill'] / steps['sampler']:.2f}x)"
            )


if __name__ == "__main__":
    main()
