"""Ant goal-velocity, goal-direction and goal-position task families (Finn et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from metarl.envs.base import Task, uniform_goals
from metarl.envs.mujoco_core import (
    BatchedSimulation,
    DirectionTask,
    LocomotionFamily,
    Measurements,
    VelocityTask,
    check_range,
)

if TYPE_CHECKING:
    import mujoco


class Ant(LocomotionFamily):
    """A quadruped must reach a target velocity, direction or position that it does not observe.

    ## Description
    The 3D Ant (a torso with four two-joint legs, 8 actuators) of three task families:
    ``AntVel`` matches its forward velocity ``v_x`` to a target velocity, ``AntDir`` walks
    forward or backward along x, ``AntGoal`` walks to a goal position in the plane.

    Physics presets (``physics``): ``"original"`` is the paper's rllab setup (timestep 0.02 s
    with RK4, one physics step per control step, the rllab model's softer contacts, solimp
    0.8 0.8 0.01; velocity and position of the whole robot's centre of mass and contact forces
    from a forward pass at the new state);
    ``"gymnasium"`` is Ant-v5 as shipped (timestep 0.01 s, 5 physics steps, dt 0.05 s;
    finite-difference torso velocity, torso position, contact forces of the last substep).

    ## Task distribution
    | family | task | distribution |
    |---|---|---|
    | AntVel | ``{"velocity": v}`` | ``v ~ U[velocity_range]`` (default ``U[0, 3]`` m/s) |
    | AntDir | ``{"direction": d}`` | ``d = +1.0`` or ``-1.0``, each with probability 1/2 |
    | AntGoal | ``{"goal": [g_x, g_y]}`` | ``g ~ U[-goal_range, goal_range]^2`` (default 3 m) |

    ## Action space
    ``Box(-1, 1, (8,), float32)``: torques, clipped to [-1, 1] and mapped onto the actuators'
    range (±150 N·m: gymnasium's gear 150 with control ±1, the original's gear 1 with ±150).

    | index | meaning                        | range   | MuJoCo name | unit |
    |-------|--------------------------------|---------|-------------|------|
    | 0, 1  | right back leg hip, ankle      | [-1, 1] | hip_4, ankle_4 | N·m |
    | 2, 3  | front left leg hip, ankle      | [-1, 1] | hip_1, ankle_1 | N·m |
    | 4, 5  | front right leg hip, ankle     | [-1, 1] | hip_2, ankle_2 | N·m |
    | 6, 7  | back leg hip, ankle            | [-1, 1] | hip_3, ankle_3 | N·m |

    ## Observation space
    ``Box(-inf, inf, (125,) original | (105,) gymnasium, float64)``.

    | index (original / gymnasium) | meaning | range | MuJoCo name | unit |
    |---|---|---|---|---|
    | 0-1 / — | torso x, y | (-inf, inf) | root (free joint) | m |
    | 2-14 / 0-12 | torso z, quaternion, 8 joint angles | (-inf, inf) | qpos | m, rad |
    | 15-28 / 13-26 | torso linear, angular velocity, 8 joints | (-inf, inf) | qvel | m/s, rad/s |
    | 29-112 / 27-104 | contact forces, 14 / 13 bodies × 6 (note 1) | [-1, 1] | cfrc_ext | N·m, N |
    | 113-121 / — | torso orientation matrix, row-major | [-1, 1] | xmat[torso] |  |
    | 122-124 / — | centre of mass of the torso subtree | (-inf, inf) | subtree_com[torso] | m |
    | 125- / 105- | the task: ``v``, ``d`` or ``(g_x, g_y)`` (``oracle=True`` only) | | | |

    Note 1: ``clip(cfrc_ext, contact_force_range)``, torque then force per body; the original
    includes the world body (always 0), gymnasium starts at the torso (as Ant-v5).

    ## Rewards
    ``reward = reward_task + reward_ctrl + reward_contact + reward_survive``, the task term
    plus ``task_reward_offset`` (the paper's code: 1.0 AntVel, 0.0 AntDir, 4.0 AntGoal):

    * AntVel, ``reward_forward = -|v_x - v| + task_reward_offset``;
    * AntDir, ``reward_forward = d · v_x + task_reward_offset``;
    * AntGoal, ``reward_goal = -(|x - g_x| + |y - g_y|) + task_reward_offset``, with ``(x, y)``
      the robot's centre of mass (original) or torso (gymnasium);
    * ``reward_ctrl = -ctrl_cost_weight · ‖a‖²``, ``a`` the clipped action
      (``ctrl_cost_weight`` = 0.005);
    * ``reward_contact = -contact_cost_weight · ‖clip(cfrc_ext, contact_force_range)‖²``
      (``contact_cost_weight`` = 0.0005, all bodies);
    * ``reward_survive = healthy_reward`` (0.05), every step of the episode.

    ``info`` carries every term and ``x_velocity``.

    ## Starting state
    ``original``: ``qpos = init_qpos + 0.01·N(0, 1)`` with the XML's ``init_qpos`` (torso at
    z = 0.55, hips 0, ankles ±1 alternating), ``qvel = 0.1·N(0, 1)``.
    ``gymnasium``: ``qpos = qpos0 + U(-0.1, 0.1)`` (torso at z = 0.75, legs flat),
    ``qvel = 0.1·N(0, 1)`` (as Ant-v5).

    ## Episode end
    Termination when the torso height ``qpos[2]`` leaves ``healthy_z_range`` (default
    [0.2, 1.0]) or the state is not finite; the slot is then masked for the rest of the batch.
    Truncation after ``horizon`` steps (200 original, 100 gymnasium).

    ## Arguments
    | name | type | default | meaning |
    |---|---|---|---|
    | seed | int \\| None | None | seed of the task generator |
    | physics | str | "original" | physics preset: "original" or "gymnasium" |
    | velocity_range | tuple[float, float] \\| None | None | AntVel: target velocities, m/s (1) |
    | goal_range | float \\| None | None | AntGoal: goals in U[-goal_range, goal_range]^2, m (1) |
    | task_reward_offset | float \\| None | None | constant added to the task term (1) |
    | ctrl_cost_weight | float | 0.005 | weight of the control cost |
    | contact_cost_weight | float | 0.0005 | weight of the contact cost |
    | healthy_reward | float | 0.05 | reward for every step survived |
    | healthy_z_range | tuple[float, float] | (0.2, 1.0) | torso heights that keep the episode on |
    | contact_force_range | tuple[float, float] | (-1.0, 1.0) | clipping range of cfrc_ext |
    | horizon | int \\| None | None | episode length; None: 200 original, 100 gymnasium |
    | oracle | bool | False | append the task to the observation (the paper's oracle) |

    (1) None: the family's default (above); ``velocity_range`` and ``goal_range`` are errors
    for the families that do not use them.

    ## Version history
    * v1: the original preset's contacts as the rllab model's (solimp 0.8 0.8 0.01, not
      MuJoCo's default of gymnasium's model).
    * v0: initial version, rewards as in the MAML paper's code, two physics presets.
    """

    xml_file = "ant.xml"
    contact_sensors = True
    timestep = {"original": 0.02}
    contact_impedance = {"original": (0.8, 0.8, 0.01)}
    default_task_reward_offset = 0.0
    default_goal_range: float | None = None
    goal_range: float  # AntGoal's

    def __init__(
        self,
        seed: int | None = None,
        physics: str = "original",
        velocity_range: tuple[float, float] | None = None,
        goal_range: float | None = None,
        task_reward_offset: float | None = None,
        ctrl_cost_weight: float = 0.005,
        contact_cost_weight: float = 0.0005,
        healthy_reward: float = 0.05,
        healthy_z_range: tuple[float, float] = (0.2, 1.0),
        contact_force_range: tuple[float, float] = (-1.0, 1.0),
        horizon: int | None = None,
        oracle: bool = False,
    ) -> None:
        super().__init__(seed, physics, horizon, oracle)
        self.set_velocity_range(velocity_range)
        goal_range = self.family_argument("goal_range", goal_range, self.default_goal_range)
        if goal_range is not None:
            if not goal_range > 0:
                raise ValueError(f"goal_range must be > 0, got {goal_range!r}")
            self.goal_range = goal_range
        if task_reward_offset is None:
            task_reward_offset = self.default_task_reward_offset
        self.task_reward_offset = task_reward_offset
        self.ctrl_cost_weight = ctrl_cost_weight
        self.contact_cost_weight = contact_cost_weight
        self.healthy_reward = healthy_reward
        self.healthy_z_range = check_range("healthy_z_range", healthy_z_range)
        self.contact_force_range = check_range("contact_force_range", contact_force_range)

    def initial_qpos(self, model: mujoco.MjModel) -> np.ndarray:
        if self.physics.measure_after_step:
            return model.numeric("init_qpos").data.copy()
        return model.qpos0.copy()

    def clipped_contact_forces(self, measured: Measurements) -> np.ndarray:
        """``clip(cfrc_ext, contact_force_range)`` ``[B, nbody, 6]``."""
        assert measured.contact_forces is not None
        return np.clip(measured.contact_forces, *self.contact_force_range)

    def reward_ctrl(self, action: np.ndarray) -> np.ndarray:
        """``-ctrl_cost_weight * ‖a‖²``."""
        return -self.ctrl_cost_weight * np.sum(np.square(action), axis=1)

    def reward_contact(self, measured: Measurements) -> np.ndarray:
        """``-contact_cost_weight * ‖clip(cfrc_ext)‖²``."""
        forces = self.clipped_contact_forces(measured)
        return -self.contact_cost_weight * np.sum(np.square(forces), axis=(1, 2))

    def reward_survive(self, num_envs: int) -> np.ndarray:
        """``healthy_reward`` for every slot."""
        return np.full(num_envs, self.healthy_reward)

    def reward_terms(
        self, measured: Measurements, action: np.ndarray, parameters: np.ndarray
    ) -> dict[str, np.ndarray]:
        return {
            self.reward_task_key: self.reward_task(measured, parameters) + self.task_reward_offset,
            "reward_ctrl": self.reward_ctrl(action),
            "reward_contact": self.reward_contact(measured),
            "reward_survive": self.reward_survive(len(action)),
        }

    def observe(self, sim: BatchedSimulation, measured: Measurements) -> np.ndarray:
        forces = self.clipped_contact_forces(measured)
        if not self.physics.measure_after_step:
            return np.concatenate(
                [sim.qpos[:, 2:], sim.qvel, forces[:, 1:].reshape(sim.num_envs, -1)], axis=1
            )
        assert measured.com is not None
        axes = [sim.sensor(f"torso_{axis}axis") for axis in "xyz"]
        orientation = np.stack(axes, axis=2).reshape(sim.num_envs, 9)
        return np.concatenate(
            [sim.qpos, sim.qvel, forces.reshape(sim.num_envs, -1), orientation, measured.com],
            axis=1,
        )

    def unhealthy(self, sim: BatchedSimulation) -> np.ndarray:
        low, high = self.healthy_z_range
        z = sim.qpos[:, 2]
        finite = np.isfinite(sim.qpos).all(axis=1) & np.isfinite(sim.qvel).all(axis=1)
        return ~finite | (z < low) | (z > high)


class AntVel(VelocityTask, Ant):
    """``AntVel``, goal velocity: match the forward velocity ``v_x`` to ``v ~ U[velocity_range]``
    (default ``U[0, 3]`` m/s), unobserved; see :class:`Ant`."""

    name = "AntVel"
    default_task_reward_offset = 1.0
    default_velocity_range = (0.0, 3.0)


class AntDir(DirectionTask, Ant):
    """``AntDir``, goal direction: walk forward or backward along x (``d = ±1``, probability
    1/2 each), the direction unobserved; see :class:`Ant`."""

    name = "AntDir"


class AntGoal(Ant):
    """``AntGoal``, goal position: walk to ``g ~ U[-goal_range, goal_range]^2`` (default 3 m) in the
    plane, the goal unobserved; see :class:`Ant`."""

    name = "AntGoal"
    task_dim = 2
    reward_task_key = "reward_goal"
    default_task_reward_offset = 4.0
    default_goal_range = 3.0

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator | None = None) -> list[Task]:
        return uniform_goals(self.rng if rng is None else rng, self.goal_range, num_tasks)

    def task_parameters(self, tasks: Sequence[Task]) -> np.ndarray:
        return np.array([[float(v) for v in task["goal"]] for task in tasks]).reshape(-1, 2)

    def reward_task(self, measured: Measurements, parameters: np.ndarray) -> np.ndarray:
        """``-(|x - g_x| + |y - g_y|)``."""
        return -np.sum(np.abs(measured.position - parameters), axis=1)
