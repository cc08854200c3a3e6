"""Ways of stepping a batch in C, and the batched environment, for the locomotion families.

Rates are control steps of one slot per second, best of ``--rounds`` interleaved runs, all
slots starting from the model's reference pose under the same random controls (uniform over
the actuators' range).  Bare physics is gymnasium's XML model (with the preset's timestep),
``frame_skip`` physics steps per control step, no sensors, observations or rewards, stepped by:

* ``rollout pool``: ``mujoco.rollout``, all slots per call, on its pool of one thread per core
  (the "raw physics" of ``bench_sampler.py``);
* ``rollout lanes``: ``mujoco.rollout`` on the calling thread, one lane per core, each lane a
  thread stepping its share of the slots through every control step (as the sampler does);
* ``batch pool`` / ``batch lanes``: the same with ``mujoco.batch.Batch`` (MuJoCo >= 4), which
  keeps each slot's solver warm start between calls where a rollout starts it from zero.

For presets that read the state after each step (Ant ``original``), the physics the
observations require is also timed in lanes: ``rollout+probe`` (the step, then the probe
rollout: one forward pass at the new state, as the environments do) and ``batch step+forward``
(``Batch.step`` with ``stage=mjSTAGE_ACC``: the step and that forward pass in one call).
``env`` is ``BatchedEnv.step`` of the family (physics, probe, observations, rewards, masking) on
the simulator's pool.  ``benchmarks/bench_sampler.py`` adds the policy (the whole sampler).

    python benchmarks/bench_physics.py --envs 800 --steps 30 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import default_num_threads, make_family  # noqa: E402
from envs.mujoco_core import (  # noqa: E402
    PRESETS,
    BatchedSimulation,
    LocomotionFamily,
    load_model,
    mujoco,
)

try:
    from mujoco.batch import Batch
except ImportError:  # MuJoCo < 4
    Batch = None

FAMILY_NAMES = ["HalfCheetahVel", "HalfCheetahDir", "AntVel", "AntDir", "AntGoal"]
Stepper = Callable[[np.ndarray], None]  # advances its slots by one control step
StepperMaker = Callable[[int, int], Stepper]  # (slots, threads) -> stepper


def preset_model(family: LocomotionFamily, sensors: str = "none") -> mujoco.MjModel:
    """Gymnasium's XML model of the family with the preset's timestep."""
    model = load_model(family.xml_file, sensors)
    model.opt.timestep = family.timestep.get(family.preset, model.opt.timestep)
    return model


def rollout_stepper(family: LocomotionFamily, probe: bool) -> StepperMaker:
    """Steppers on :class:`BatchedSimulation` (``mujoco.rollout``), with the probe pass or not."""

    def make(num_envs: int, threads: int) -> Stepper:
        if probe:
            sim = family.build_simulation(num_envs, threads)
        else:
            sim = BatchedSimulation(
                preset_model(family), num_envs, family.physics.frame_skip, num_threads=threads
            )
        active = np.ones(num_envs, dtype=bool)

        def step(ctrl: np.ndarray) -> None:
            sim.step(ctrl, active)
            if probe:
                sim.probe(ctrl, active)

        return step

    return make


def batch_stepper(family: LocomotionFamily, forward: bool) -> StepperMaker:
    """Steppers on ``mujoco.batch.Batch``; with ``forward``, the sensor model is stepped and a
    forward pass follows each step (``stage=mjSTAGE_ACC``)."""
    model = preset_model(family, "all" if forward else "none")
    stage = mujoco.mjtStage.mjSTAGE_ACC if forward else mujoco.mjtStage.mjSTAGE_NONE

    def make(num_envs: int, threads: int) -> Stepper:
        assert Batch is not None
        batch = Batch(model, num_envs, nthread=threads)
        batch.reset()  # the model's reference pose, as a new BatchedSimulation
        controls = batch.bind("ctrl")
        sensors = batch.bind("sensordata") if forward else None

        def step(ctrl: np.ndarray) -> None:
            controls[:] = ctrl
            batch.step(nstep=family.physics.frame_skip, stage=int(stage))
            if sensors is not None:
                sensors.copy()  # what the observations read

        return step

    return make


def pool_rate(make: StepperMaker, controls: np.ndarray) -> float:
    """Slot-steps per second of one stepper over all slots on one thread per core."""
    step = make(controls.shape[1], default_num_threads())
    step(controls[0])  # start the pool
    start = time.perf_counter()
    for ctrl in controls:
        step(ctrl)
    return controls.shape[0] * controls.shape[1] / (time.perf_counter() - start)


def lanes_rate(make: StepperMaker, controls: np.ndarray, executor: ThreadPoolExecutor) -> float:
    """Slot-steps per second of one lane per core, each a one-thread stepper of its slots."""
    lanes = np.array_split(np.arange(controls.shape[1]), default_num_threads())
    steppers = [make(len(lane), 1) for lane in lanes]

    def run(index: int) -> None:
        slots, step = lanes[index], steppers[index]
        for ctrl in controls:
            step(ctrl[slots])

    start = time.perf_counter()
    list(executor.map(run, range(len(lanes))))
    return controls.shape[0] * controls.shape[1] / (time.perf_counter() - start)


def env_rate(
    family: LocomotionFamily, num_envs: int, num_steps: int, rng: np.random.Generator
) -> float:
    """Live slot-steps per second of ``BatchedEnv.step`` (terminated slots are not simulated,
    so they are not counted)."""
    env = family.make_batched_env(num_envs)
    env.set_tasks(family.sample_tasks(num_envs))
    env.reset(rng)
    actions = rng.uniform(-1, 1, size=(num_steps, num_envs, env.action_dim))
    live_steps = 0
    start = time.perf_counter()
    for action in actions:
        live_steps += int(env.alive.sum())
        env.step(action)
    return live_steps / (time.perf_counter() - start)


def workloads(
    family: LocomotionFamily, args: argparse.Namespace, executor: ThreadPoolExecutor
) -> dict[str, Callable[[np.ndarray], float]]:
    """The timed workloads of one family and preset, each a function of the controls."""
    runs: dict[str, Callable[[np.ndarray], float]] = {
        "rollout pool": lambda c: pool_rate(rollout_stepper(family, False), c),
        "rollout lanes": lambda c: lanes_rate(rollout_stepper(family, False), c, executor),
    }
    if Batch is not None:
        runs["batch pool"] = lambda c: pool_rate(batch_stepper(family, False), c)
        runs["batch lanes"] = lambda c: lanes_rate(batch_stepper(family, False), c, executor)
    if family.needs_probe:
        runs["rollout+probe lanes"] = lambda c: lanes_rate(
            rollout_stepper(family, True), c, executor
        )
        if Batch is not None:
            runs["batch step+forward lanes"] = lambda c: lanes_rate(
                batch_stepper(family, True), c, executor
            )
    runs["env"] = lambda c: env_rate(family, args.envs, args.steps, np.random.default_rng(0))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--envs", type=int, default=800, help="batch size (slots)")
    parser.add_argument("--steps", type=int, default=30, help="control steps timed")
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
        + ("" if Batch is not None else " (no mujoco.batch: MuJoCo < 4)")
    )
    print(f"{'family':<16}{'physics':<11}{'workload':<26}{'steps/s':>11}{'/rollout pool':>15}")
    with ThreadPoolExecutor(default_num_threads()) as executor:
        for name in args.families:
            for preset in args.physics:
                family = make_family(name, seed=0, physics=preset)
                assert isinstance(family, LocomotionFamily)
                runs = workloads(family, args, executor)
                model = preset_model(family)
                low, high = model.actuator_ctrlrange.T
                best = dict.fromkeys(runs, 0.0)
                for _ in range(args.rounds):  # interleaved: load changes hit all alike
                    controls = rng.uniform(low, high, size=(args.steps, args.envs, model.nu))
                    for key, run in runs.items():
                        best[key] = max(best[key], run(controls))
                for key, rate in best.items():
                    ratio = rate / best["rollout pool"]
                    print(f"{name:<16}{preset:<11}{key:<26}{rate:>11,.0f}{ratio:>15.2f}")


if __name__ == "__main__":
    main()
