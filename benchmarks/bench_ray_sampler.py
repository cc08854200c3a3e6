"""The Ray sampling backend against the local sampler on this machine: what going through Ray costs.

For each family and physics preset, one run samples the same meta-batch (tasks x trajectories,
a 100-100 ReLU policy with one adapted parameter set per task, as in post-update sampling) in
interleaved rounds (rotating order) with:

* local: ``BatchSampler``, one lane per core;
* ray WxC: ``RaySampler`` on W warm workers of C CPUs each, on a Ray instance started on this
  machine before the rounds (its start-up, the workers' and their first batch are not timed),
  with as many lanes as the local sampler.

Every sampler starts from the same seed and so samples the same batch each round (checked: the
same physics work).  The Ray instance counts ``cores x layouts`` logical CPUs so that every
layout's workers exist at once; they sample in turn, never together, on the machine's cores.
Reported: the median slot-steps/s (live slots) of each, and the median of the per-round ratios
to local (1.00: going through Ray costs nothing).

    python benchmarks/bench_ray_sampler.py --tasks 40 --trajectories 20 --rounds 5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import ray
import torch
from helpers import LOCOMOTION_FAMILIES, adapted_parameters

from metarl.agents.common.episodes import Episodes
from metarl.agents.common.policies import GaussianMLPPolicy
from metarl.agents.common.ray_sampling import RaySampler
from metarl.agents.common.sampling import BatchSampler, SamplerConfig
from metarl.envs import default_num_threads, make_family


def layout(text: str) -> tuple[int, int]:
    """``WxC``: W workers of C CPUs."""
    workers, _, cpus = text.partition("x")
    return int(workers), int(cpus)


def same_batch(a: Episodes, b: Episodes) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("observations", "mask"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=40, help="tasks per batch (K)")
    parser.add_argument("--trajectories", type=int, default=20, help="trajectories per task (M)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["HalfCheetahVel:original", "AntVel:gymnasium"],
        metavar="FAMILY:PRESET",
        help=f"families ({', '.join(LOCOMOTION_FAMILIES)}) and physics presets",
    )
    parser.add_argument(
        "--layouts", nargs="+", type=layout, default=[(2, 1), (1, 2)], metavar="WxC"
    )
    args = parser.parse_args()
    cores = default_num_threads()
    ray.init(num_cpus=cores * len(args.layouts), log_to_driver=False, logging_level=logging.ERROR)
    print(
        f"B = {args.tasks} tasks x {args.trajectories} trajectories, {args.rounds} rounds, "
        f"{cores} cores, ray {ray.__version__}"
    )
    print(f"{'family':<16}{'physics':<11}{'sampler':<10}{'median steps/s':>16}{'/local':>8}")
    for case in args.cases:
        name, _, preset = case.partition(":")
        family = make_family(name, seed=0, physics=preset)
        tasks = family.sample_tasks(args.tasks)
        probe = family.make_batched_env(1)
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(probe.observation_dim, probe.action_dim)
        params = adapted_parameters(policy, args.tasks)
        samplers: dict[str, BatchSampler] = {"local": BatchSampler(family, args.trajectories, 0)}
        for workers, cpus in args.layouts:
            config = SamplerConfig(
                backend="ray", num_workers=workers, cpus_per_worker=cpus, num_lanes=cores
            )
            samplers[f"ray {workers}x{cpus}"] = RaySampler(family, args.trajectories, 0, config)
        for sampler in samplers.values():  # warm up: workers' lanes, thread pools
            sampler.sample(tasks, policy, params)
        names = list(samplers)
        rounds: list[dict[str, float]] = []
        for index in range(args.rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            rates, batches = {}, {}
            for key in order:
                start = time.perf_counter()
                batches[key] = samplers[key].sample(tasks, policy, params)
                rates[key] = float(batches[key].mask.sum()) / (time.perf_counter() - start)
            assert all(same_batch(batches["local"], b) for b in batches.values()), "batches differ"
            rounds.append(rates)
        for key in names:
            median = statistics.median(r[key] for r in rounds)
            ratio = statistics.median(r[key] / r["local"] for r in rounds)
            print(f"{name:<16}{preset:<11}{key:<10}{median:>16,.0f}{ratio:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
