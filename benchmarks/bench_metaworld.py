"""Meta-World sampling: metarl's sampler (one batch of a meta-iteration, its environments in
worker processes) against one Meta-World gymnasium environment stepped in a loop.

    python benchmarks/bench_metaworld.py --env-name reach-v3 --tasks 10 --trajectories 4

The sampler rolls out a freshly initialised policy of the config (MetaWorldML1, 500-step
episodes) on all cores, and again in this process only (its lane runner on one core); the single
environment takes uniform random actions (drawn beforehand, not timed) and resets every 500
steps.  Prints environment steps per second of each and their ratios, from one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from helpers import bench_config

from metarl.agents.common.sampling import BatchSampler, LaneRunner
from metarl.components import build_policy, make_family
from metarl.envs import default_num_threads
from metarl.envs.metaworld import ALL_V3_ENVIRONMENTS, metaworld_task


def single_environment(env_name: str, task: dict, steps: int) -> float:
    """Steps per second of one Meta-World environment (its gymnasium ``step``) in a loop."""
    env = ALL_V3_ENVIRONMENTS[env_name]()
    env.set_task(metaworld_task(task))
    actions = np.random.default_rng(0).uniform(-1, 1, size=(steps, 4))
    env.reset()
    start = time.perf_counter()
    for step, action in enumerate(actions):
        if step % env.max_path_length == 0 and step:
            env.reset()
        env.step(action)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def sampler(args: argparse.Namespace, num_cores: int | None) -> float:
    """Steps per second of one sampled batch (after a warm-up batch that starts the workers)."""
    config = bench_config("metaworld_ml1_reach", [f"env.kwargs.env_name={args.env_name}"])
    family = make_family(config, seed=0)
    policy = build_policy(config, family)
    batch = BatchSampler(family, args.trajectories, seed=0)
    batch.runner = LaneRunner(family, args.trajectories, num_cores)  # its environments' cores
    tasks = family.sample_tasks(args.tasks)
    batch.sample(tasks, policy, policy.meta_parameters())
    start = time.perf_counter()
    episodes = batch.sample(tasks, policy, policy.meta_parameters())
    elapsed = time.perf_counter() - start
    return episodes.env_steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-name", default="reach-v3")
    parser.add_argument("--tasks", type=int, default=10, help="tasks of the sampled batch")
    parser.add_argument("--trajectories", type=int, default=4, help="trajectories per task")
    parser.add_argument("--steps", type=int, default=5000, help="steps of the single env")
    args = parser.parse_args()
    family = make_family(bench_config("metaworld_ml1_reach", []), seed=0)
    single = single_environment(args.env_name, family.sample_tasks(1)[0], args.steps)
    local = sampler(args, num_cores=1)
    workers = sampler(args, num_cores=None)
    cores = default_num_threads()
    print(f"single Meta-World env    : {single:8.0f} env steps/s")
    print(f"metarl sampler, 1 process: {local:8.0f} env steps/s (policy calls included)")
    print(f"metarl sampler, {cores} workers: {workers:8.0f} env steps/s")
    print(f"ratio workers / single env {workers / single:.2f}, / 1 process {workers / local:.2f}")


if __name__ == "__main__":
    main()
