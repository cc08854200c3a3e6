"""What Ant original's observations cost in physics, by every way of stepping measured.

The original preset observes ``cfrc_ext`` at the new state under the control just applied
(rllab's ``model.forward()`` after each step), so every control step needs an RK4 step (four
forward passes) and one more forward pass.  This benchmark times, on one thread and the
family's own model, reset states and the same random controls (uniform over [-1, 1], mapped to
the actuators' range), ``--envs`` slots for ``--steps`` control steps:

* ``raw``: ``mujoco.rollout`` of the step alone, one data for all slots (the raw physics of
  ``bench_sampler.py``);
* ``rollout+probe``: what the environments do: that step, then the probe rollout (a forward
  pass at the new state, sensors included);
* ``fused``: one compiled loop over the slots on one data: set the slot's state and solver
  warm start, ``mj_step``, ``mj_forward`` and ``mj_rnePostConstraint``, read ``cfrc_ext`` and
  the state back: the step and the pass with the data hot in cache;
* ``per-slot``: one data per slot, kept between steps, ``mj_step`` only: what keeping a data
  per slot costs before any forward pass;
* ``per-slot reuse``: one data per slot, the pass at the new state reused by the next step:
  ``mj_forwardSkip`` from the acceleration stage (the only one that depends on the control),
  ``mj_RungeKutta``, then the pass and ``mj_rnePostConstraint``: the least work of any exact
  method, four RK4 stages and one pass whose position and velocity stages the next step shares.

The compiled loops call ``libmujoco`` through ctypes from numba, outside the GIL.  Reported:
the median rate over ``--rounds`` interleaved rounds, the median of per-round ratios to raw,
and how far each method's final states lie from raw's (the same physics up to the solver's
tolerance, which contact dynamics amplify: the warm starts differ); the compiled loops that read
``cfrc_ext`` are checked against ``mj_rnePostConstraint`` at their final state (a warning
otherwise).

    python benchmarks/bench_probe.py --family AntVel --envs 400 --steps 100 --rounds 9
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import statistics
import sys
import time
from collections.abc import Callable

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import make_family  # noqa: E402
from envs.mujoco_core import BatchedLocomotionEnv, BatchedSimulation, load_model, mujoco  # noqa: E402

_LIBRARY = ctypes.CDLL(
    sorted(glob.glob(os.path.join(os.path.dirname(mujoco.__file__), "libmujoco.so*")))[0]
)
_ADDRESS = ctypes.c_int64  # pointers passed as integers (the same registers on x86-64)


def _function(name: str, *arguments: type) -> Callable[..., None]:
    function = getattr(_LIBRARY, name)
    function.argtypes, function.restype = [_ADDRESS, _ADDRESS, *arguments], None
    return function


mj_step = _function("mj_step")
mj_forward = _function("mj_forward")
mj_forward_skip = _function("mj_forwardSkip", ctypes.c_int, ctypes.c_int)
mj_runge_kutta = _function("mj_RungeKutta", ctypes.c_int)
mj_check_acc = _function("mj_checkAcc")
mj_rne_post_constraint = _function("mj_rnePostConstraint")
mj_set_state = _function("mj_setState", _ADDRESS, ctypes.c_int)
mj_get_state = _function("mj_getState", _ADDRESS, ctypes.c_int)
mju_copy = _LIBRARY.mju_copy
mju_copy.argtypes, mju_copy.restype = [_ADDRESS, _ADDRESS, ctypes.c_int], None
FULL = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
WARMSTART = int(mujoco.mjtState.mjSTATE_WARMSTART)
ACCELERATION_STAGE = int(mujoco.mjtStage.mjSTAGE_VEL)  # skip up to the velocity stage


@numba.njit(nogil=True)
def _fused_step(model, data, ctrl_at, cfrc_at, states, warmstarts, ctrl, forces):  # type: ignore[no-untyped-def]
    for slot in range(states.shape[0]):
        mj_set_state(model, data, states[slot].ctypes.data, FULL)
        mj_set_state(model, data, warmstarts[slot].ctypes.data, WARMSTART)
        mju_copy(ctrl_at, ctrl[slot].ctypes.data, ctrl.shape[1])
        mj_step(model, data)
        mj_forward(model, data)
        mj_rne_post_constraint(model, data)
        mju_copy(forces[slot].ctypes.data, cfrc_at, forces.shape[1])
        mj_get_state(model, data, states[slot].ctypes.data, FULL)
        mj_get_state(model, data, warmstarts[slot].ctypes.data, WARMSTART)


@numba.njit(nogil=True)
def _per_slot_step(model, datas, ctrl_at, cfrc_at, ctrl, forces, reuse):  # type: ignore[no-untyped-def]
    for slot in range(datas.shape[0]):
        mju_copy(ctrl_at[slot], ctrl[slot].ctypes.data, ctrl.shape[1])
        if reuse:  # the data holds the pass at its state: redo what depends on the control
            mj_forward_skip(model, datas[slot], ACCELERATION_STAGE, 1)
            mj_check_acc(model, datas[slot])
            mj_runge_kutta(model, datas[slot], 4)
            mj_forward(model, datas[slot])
            mj_rne_post_constraint(model, datas[slot])
            mju_copy(forces[slot].ctypes.data, cfrc_at[slot], forces.shape[1])
        else:
            mj_step(model, datas[slot])


class Case:
    """The family's model, reset states and controls, and one runner per method."""

    def __init__(self, args: argparse.Namespace) -> None:
        family = make_family(args.family, seed=0, physics="original")
        self.env = family.make_batched_env(args.envs, num_threads=1)
        assert isinstance(self.env, BatchedLocomotionEnv) and self.env.sim.probe_model
        self.env.set_tasks(family.sample_tasks(args.envs))
        rng = np.random.default_rng(0)
        self.env.reset(rng)
        self.model = self.env.sim.model
        self.initial = self.env.sim.state.copy()
        low, high = self.model.actuator_ctrlrange.T
        actions = rng.uniform(-1.0, 1.0, (args.steps, args.envs, self.model.nu))
        self.controls = (high + low) / 2 + (high - low) / 2 * actions
        bare = load_model(family.xml_file)
        bare.opt.timestep = self.model.opt.timestep
        self.raw = BatchedSimulation(bare, args.envs, 1, None, 1)
        self.data = mujoco.MjData(self.model)
        self.datas = [mujoco.MjData(self.model) for _ in range(args.envs)]
        self.forces = np.zeros((args.envs, self.model.nbody * 6))
        self.final: dict[str, np.ndarray] = {}

    def run(self, name: str) -> float:
        """Seconds for ``name`` to take every control step; its final states kept."""
        alive = np.ones(len(self.initial), dtype=bool)
        states = self.initial.copy()
        warmstarts = np.zeros((len(states), self.model.nv))
        model = self.model._address
        if name.startswith("per-slot"):
            for data, state in zip(self.datas, states):
                mujoco.mj_setState(self.model, data, state, FULL)
                data.qacc_warmstart[:] = 0.0
                mujoco.mj_forward(self.model, data)
            datas = np.array([data._address for data in self.datas], dtype=np.int64)
            ctrl_at = np.array([data.ctrl.ctypes.data for data in self.datas], dtype=np.int64)
            cfrc_at = np.array([data.cfrc_ext.ctypes.data for data in self.datas], dtype=np.int64)
        sim = self.raw if name == "raw" else self.env.sim
        sim.state[:] = states
        start = time.perf_counter()
        for ctrl in self.controls:
            if name in ("raw", "rollout+probe"):
                sim.step(ctrl, alive)
                if name == "rollout+probe":
                    sim.probe(ctrl, alive)
            elif name == "fused":
                data = self.data
                _fused_step(
                    model, data._address, data.ctrl.ctypes.data, data.cfrc_ext.ctypes.data,
                    states, warmstarts, ctrl, self.forces,
                )
            else:
                _per_slot_step(
                    model, datas, ctrl_at, cfrc_at, ctrl, self.forces, name == "per-slot reuse"
                )
        seconds = time.perf_counter() - start
        if name in ("raw", "rollout+probe"):
            states = sim.state.copy()
        elif name.startswith("per-slot"):
            for data, state in zip(self.datas, states):
                mujoco.mj_getState(self.model, data, state, FULL)
        self.final[name] = states
        return seconds

    def gap(self, name: str) -> float:
        """Largest state difference between where ``name`` and raw ended."""
        return float(np.abs(self.final[name] - self.final["raw"]).max())

    def check_forces(self, name: str) -> None:
        """Warn unless ``name`` read ``mj_rnePostConstraint``'s ``cfrc_ext`` at its final
        state."""
        slot, data = 0, mujoco.MjData(self.model)
        mujoco.mj_setState(self.model, data, self.final[name][slot], FULL)
        data.ctrl[:] = self.controls[-1][slot]
        mujoco.mj_forward(self.model, data)
        mujoco.mj_rnePostConstraint(self.model, data)
        if not np.allclose(data.cfrc_ext.ravel(), self.forces[slot], rtol=1e-6, atol=1e-8):
            print(f"warning: {name} read other contact forces than mj_rnePostConstraint")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--family", default="AntVel", choices=["AntVel", "AntDir", "AntGoal"])
    parser.add_argument("--envs", type=int, default=400, help="slots (one lane's share)")
    parser.add_argument("--steps", type=int, default=100, help="control steps")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median)")
    args = parser.parse_args()
    case = Case(args)
    names = ["raw", "rollout+probe", "fused", "per-slot", "per-slot reuse"]
    for name in names:  # warm up (compilation) and check
        case.run(name)
    gaps = {name: case.gap(name) for name in names}
    for name in ("fused", "per-slot reuse"):
        case.run(name)
        case.check_forces(name)
    rounds = []
    for index in range(args.rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        rounds.append({name: args.envs * args.steps / case.run(name) for name in order})
    print(
        f"{args.family} original, {args.envs} slots x {args.steps} steps, one thread, "
        f"{args.rounds} rounds, mujoco {mujoco.__version__}"
    )
    print(f"{'method':<16}{'median steps/s':>16}{'/raw':>8}{'state gap to raw':>18}")
    for name in names:
        rate = statistics.median(r[name] for r in rounds)
        ratio = statistics.median(r[name] / r["raw"] for r in rounds)
        print(f"{name:<16}{rate:>16,.0f}{ratio:>8.3f}{gaps[name]:>18.1e}")


if __name__ == "__main__":
    main()
