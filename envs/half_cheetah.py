"""HalfCheetah goal-velocity and goal-direction task families (Finn et al. 2017, section 5.3)."""

from __future__ import annotations

import numpy as np

from metarl.envs.mujoco_core import (
    BatchedSimulation,
    DirectionTask,
    LocomotionFamily,
    Measurements,
    VelocityTask,
)


class HalfCheetah(LocomotionFamily):
    """A planar cheetah must run at a target velocity or in a direction it does not observe.

    ## Description
    The 2D cheetah of HalfCheetah (9 joints, 6 actuated) of two task families:
    ``HalfCheetahVel`` matches its forward velocity ``v_x`` to a target velocity,
    ``HalfCheetahDir`` runs forward or backward.

    Physics presets (``physics``): ``"original"`` is the paper's rllab setup (timestep 0.01 s,
    one physics step per control step, ``v_x`` = velocity of the whole robot's centre of mass
    at the new state, from the cheetah's planar kinematics); ``"gymnasium"`` is HalfCheetah-v5
    as shipped (5 physics steps, dt 0.05 s, ``v_x`` = finite difference of the torso's x
    position).

    ## Task distribution
    | family | task | distribution |
    |---|---|---|
    | HalfCheetahVel | ``{"velocity": v}`` | ``v ~ U[velocity_range]`` (default ``U[0, 2]`` m/s) |
    | HalfCheetahDir | ``{"direction": d}`` | ``d = +1.0`` or ``-1.0``, each with probability 1/2 |

    ## Action space
    ``Box(-1, 1, (6,), float32)``: torques, clipped to [-1, 1] and mapped onto the actuators'
    control range (gears 120/90/60/120/60/30 N·m).

    | index | meaning                 | range   | MuJoCo name | unit |
    |-------|-------------------------|---------|-------------|------|
    | 0     | back thigh torque       | [-1, 1] | bthigh      | N·m  |
    | 1     | back shin torque        | [-1, 1] | bshin       | N·m  |
    | 2     | back foot torque        | [-1, 1] | bfoot       | N·m  |
    | 3     | front thigh torque      | [-1, 1] | fthigh      | N·m  |
    | 4     | front shin torque       | [-1, 1] | fshin       | N·m  |
    | 5     | front foot torque       | [-1, 1] | ffoot       | N·m  |

    ## Observation space
    ``Box(-inf, inf, (20,) original | (17,) gymnasium, float64)``.

    | index (original / gymnasium) | meaning | range | MuJoCo name | unit |
    |---|---|---|---|---|
    | 0-7 / 0-7 | torso z, torso angle, 6 joint angles | (-inf, inf) | qpos[1:] | m, rad |
    | 8-16 / 8-16 | torso x, z, angle velocities, 6 joints | (-inf, inf) | qvel | m/s, rad/s |
    | 17-19 / — | centre of mass of the torso subtree | (-inf, inf) | subtree_com[torso] | m |
    | 20 / 17 | the task's ``v`` or ``d`` (``oracle=True`` only) | | | m/s, — |

    ## Rewards
    ``reward = reward_forward + reward_ctrl``:

    * HalfCheetahVel, ``reward_forward = -|v_x - v|``;
    * HalfCheetahDir, ``reward_forward = d · v_x``;
    * ``reward_ctrl = -ctrl_cost_weight · ‖a‖²`` (``ctrl_cost_weight`` = 0.05).

    ``info`` carries both terms and ``x_velocity``.

    ## Starting state
    ``original``: ``qpos = qpos0 + 0.01·N(0, 1)``, ``qvel = 0.1·N(0, 1)``.
    ``gymnasium``: ``qpos = qpos0 + U(-0.1, 0.1)``, ``qvel = 0.1·N(0, 1)`` (as HalfCheetah-v5).

    ## Episode end
    Never terminates; truncation after ``horizon`` steps (200 original, 100 gymnasium).

    ## Arguments
    | name | type | default | meaning |
    |---|---|---|---|
    | seed | int \\| None | None | seed of the task generator |
    | physics | str | "original" | physics preset: "original" or "gymnasium" |
    | velocity_range | tuple[float, float] \\| None | None | HalfCheetahVel: speeds, m/s (1) |
    | ctrl_cost_weight | float | 0.05 | weight of the control cost |
    | horizon | int \\| None | None | episode length; None: 200 original, 100 gymnasium |
    | oracle | bool | False | append the task to the observation (the paper's oracle) |

    (1) None: (0.0, 2.0); an error for HalfCheetahDir.

    ## Version history
    * v0: initial version, rewards as in the MAML paper's code, two physics presets.
    """

    xml_file = "half_cheetah.xml"
    planar = True

    def __init__(
        self,
        seed: int | None = None,
        physics: str = "original",
        velocity_range: tuple[float, float] | None = None,
        ctrl_cost_weight: float = 0.05,
        horizon: int | None = None,
        oracle: bool = False,
    ) -> None:
        super().__init__(seed, physics, horizon, oracle)
        self.set_velocity_range(velocity_range)
        self.ctrl_cost_weight = ctrl_cost_weight

    def reward_ctrl(self, action: np.ndarray) -> np.ndarray:
        """``-ctrl_cost_weight * ‖a‖²`` with ``a`` the clipped action in [-1, 1]."""
        return -self.ctrl_cost_weight * np.sum(np.square(action), axis=1)

    def reward_terms(
        self, measured: Measurements, action: np.ndarray, parameters: np.ndarray
    ) -> dict[str, np.ndarray]:
        return {
            "reward_forward": self.reward_task(measured, parameters),
            "reward_ctrl": self.reward_ctrl(action),
        }

    def observe(self, sim: BatchedSimulation, measured: Measurements) -> np.ndarray:
        parts = [sim.qpos[:, 1:], sim.qvel]
        if measured.com is not None:
            parts.append(measured.com)
        return np.concatenate(parts, axis=1)


class HalfCheetahVel(VelocityTask, HalfCheetah):
    """``HalfCheetahVel``, goal velocity: match the forward velocity ``v_x`` to
    ``v ~ U[velocity_range]`` (default ``U[0, 2]`` m/s), unobserved; see :class:`HalfCheetah`."""

    name = "HalfCheetahVel"
    default_velocity_range = (0.0, 2.0)


class HalfCheetahDir(DirectionTask, HalfCheetah):
    """``HalfCheetahDir``, goal direction: run forward or backward (``d = ±1``, probability
    1/2 each), the direction unobserved; see :class:`HalfCheetah`."""

    name = "HalfCheetahDir"
