"""gymnasium.make_vec of a registered id: the batched simulator (its ``vector_entry_point``)
against gymnasium's ``SyncVectorEnv`` and ``AsyncVectorEnv`` of the single-task environments.

    python benchmarks/bench_gym_vector.py --family HalfCheetahVel --num-envs 8 --steps 2000

The same uniform random actions for every mode (generated beforehand, not timed), next-step
autoresets included; prints each mode's environment steps per second and the batched one's
ratio to the others, from one run.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

from metarl import envs  # registers the gymnasium ids

MODES = ("vector_entry_point", "sync", "async")


def steps_per_second(env_id: str, mode: str, num_envs: int, actions: np.ndarray) -> float:
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    env.reset(seed=0)
    env.step(actions[0])  # warm-up: async workers, first calls
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    elapsed = time.perf_counter() - start
    env.close()
    return len(actions) * num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="HalfCheetahVel")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000, help="vector steps per mode")
    args = parser.parse_args()
    env_id = envs.env_id(args.family)
    probe = gym.make_vec(env_id, num_envs=args.num_envs)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(args.steps, *probe.action_space.shape))
    probe.close()
    results = {mode: steps_per_second(env_id, mode, args.num_envs, actions) for mode in MODES}
    for mode, rate in results.items():
        print(f"{mode:>18}: {rate:10.0f} env steps/s ({args.num_envs} envs)")
    batched = results["vector_entry_point"]
    print(
        f"ratio vector_entry_point / sync {batched / results['sync']:.1f}, "
        f"/ async {batched / results['async']:.1f}"
    )


if __name__ == "__main__":
    main()
