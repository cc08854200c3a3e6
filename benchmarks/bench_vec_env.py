"""Stable-baselines3 on metarl's batched VecEnv against SB3 on a SubprocVecEnv of the gymnasium
environments: the same family, learner, policy, batch per update and cores.

    python benchmarks/bench_vec_env.py --family HalfCheetahVel --updates 3

Prints, per VecEnv, the environment steps per second of whole updates (rollout and learner
update) and of the rollouts alone, and their ratio in one run.
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv

from metarl import envs
from metarl.agents.common.vec_env import TaskVecEnv
from metarl.agents.sb3_baselines import make_model


def gymnasium_env(family: str):  # noqa: ANN201 - SubprocVecEnv's env factory
    return lambda: gym.make(envs.env_id(family))


def steps_per_second(env: VecEnv, updates: int, algorithm: str) -> tuple[float, float]:
    """Steps per second of whole updates (SB3's rollout and learner update), then of rollouts
    alone (the policy's actions for every slot, then one VecEnv step)."""
    steps_per_slot = max(1, 20_000 // env.num_envs)
    model = make_model(algorithm, env, [100, 100], "relu", 1.0, 0.99, 0.01, 0, steps_per_slot)
    batch = env.num_envs * steps_per_slot
    model.learn(batch)  # warm-up: the first update, process start-up
    start = time.perf_counter()
    model.learn(updates * batch, reset_num_timesteps=False)
    whole = updates * batch / (time.perf_counter() - start)
    observation = env.reset()
    start = time.perf_counter()
    for _ in range(updates * steps_per_slot):
        actions, _ = model.predict(observation)
        observation, *_ = env.step(actions)
    rollout = updates * batch / (time.perf_counter() - start)
    return whole, rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="HalfCheetahVel")
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--algorithm", choices=["trpo", "ppo"], default="trpo")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    family = envs.make_family(args.family, seed=0)
    horizon = family.make_batched_env(1).horizon
    batched = TaskVecEnv(family, max(1, 20_000 // horizon), seed=0)
    subprocess = SubprocVecEnv([gymnasium_env(args.family)] * args.processes)
    results = {}
    for name, env in (("TaskVecEnv", batched), (f"SubprocVecEnv x{args.processes}", subprocess)):
        results[name] = steps_per_second(env, args.updates, args.algorithm)
        whole, rollout = results[name]
        print(
            f"{name:>18}: {whole:8.0f} steps/s whole {args.algorithm} updates, "
            f"{rollout:8.0f} steps/s rollouts alone ({env.num_envs} envs)"
        )
        env.close()
    (batched_whole, batched_rollout), (sub_whole, sub_rollout) = results.values()
    print(
        f"ratio TaskVecEnv / SubprocVecEnv: whole updates {batched_whole / sub_whole:.2f}, "
        f"rollouts {batched_rollout / sub_rollout:.2f}"
    )


if __name__ == "__main__":
    main()
