"""Raw physics throughput vs batched-environment throughput of the locomotion families.

Rates are control steps of one slot per second, best of ``--rounds`` interleaved runs.
Raw physics: gymnasium's XML model (with the preset's timestep), all slots stepped by
``mujoco.rollout`` one control step (``frame_skip`` physics steps) per call, random actions,
no sensors, observations or rewards.  Env: ``BatchedEnv.step`` of the family (physics, the
probe pass where the preset needs one, observations, rewards, masking), random actions.
``benchmarks/bench_sampler.py`` adds the policy (the whole sampler).

    python benchmarks/bench_physics.py --envs 800 --steps 100
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import default_num_threads, make_family  # noqa: E402
from envs.mujoco_core import (  # noqa: E402
    ASSETS,
    PRESETS,
    BatchedSimulation,
    LocomotionFamily,
    mujoco,
)

FAMILY_NAMES = ["HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntGoal"]


def raw_physics_rate(
    family: LocomotionFamily, num_envs: int, num_steps: int, rng: np.random.Generator
) -> float:
    """Control steps per second of the bare model (no sensors) stepped by rollout."""
    logging.getLogger("envs.mujoco").disabled = True  # the XML's 'settotalmass' notice
    model = mujoco.MjModel.from_xml_path(os.path.join(ASSETS, family.xml_file))
    logging.getLogger("envs.mujoco").disabled = False
    model.opt.timestep = family.timestep.get(family.preset, model.opt.timestep)
    sim = BatchedSimulation(model, num_envs, family.physics.frame_skip)
    active = np.ones(num_envs, dtype=bool)
    actions = rng.uniform(-1, 1, size=(num_steps, num_envs, model.nu))
    sim.step(actions[0], active)  # warm the thread pool
    start = time.perf_counter()
    for action in actions:
        sim.step(action, active)
    return num_envs * num_steps / (time.perf_counter() - start)


def env_rate(
    family: LocomotionFamily, num_envs: int, num_steps: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Live slot-steps per second of ``BatchedEnv.step`` (terminated slots are not simulated,
    so they are not counted), and the fraction of slots alive at the end."""
    env = family.make_batched_env(num_envs)
    env.set_tasks(family.sample_tasks(num_envs))
    env.reset(rng)
    actions = rng.uniform(-1, 1, size=(num_steps, num_envs, env.action_dim))
    live_steps = 0
    start = time.perf_counter()
    for action in actions:
        live_steps += int(env.alive.sum())
        env.step(action)
    return live_steps / (time.perf_counter() - start), float(env.alive.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", type=int, default=800, help="batch size (slots)")
    parser.add_argument("--steps", type=int, default=100, help="control steps timed")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved repetitions; the best rate of each is kept",
    )
    parser.add_argument("--families", nargs="+", default=FAMILY_NAMES, choices=FAMILY_NAMES)
    parser.add_argument("--physics", nargs="+", default=sorted(PRESETS), choices=sorted(PRESETS))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        f"batch {args.envs} slots, {args.steps} control steps, "
        f"{default_num_threads()} threads, mujoco {mujoco.__version__}"
    )
    print(
        f"{'family':<16}{'physics':<11}{'raw steps/s':>13}{'env steps/s':>13}"
        f"{'env/raw':>9}{'alive':>7}"
    )
    for name in args.families:
        for preset in args.physics:
            family = make_family(name, seed=0, physics=preset)
            assert isinstance(family, LocomotionFamily)
            raw, rate, alive = 0.0, 0.0, 1.0
            for _ in range(args.rounds):  # interleaved: load changes hit both alike
                raw = max(raw, raw_physics_rate(family, args.envs, args.steps, rng))
                env, alive = env_rate(family, args.envs, args.steps, rng)
                rate = max(rate, env)
            print(
                f"{name:<16}{preset:<11}{raw:>13,.0f}{rate:>13,.0f}{rate / raw:>9.2f}{alive:>7.2f}"
            )


if __name__ == "__main__":
    main()
