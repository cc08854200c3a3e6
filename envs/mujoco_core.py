"""Batched MuJoCo simulation shared by the locomotion task families.

All ``num_envs`` slots share one :class:`mujoco.MjModel` and are stepped together, in C, by
:mod:`mujoco.rollout` (on a thread pool of its own, one thread per core by default, or on the
calling thread with ``num_threads=1``, the GIL released either way); observations and rewards
are then computed from the batch state, vectorised in numpy or, for the centre of mass of a
planar robot and the contact forces, in loops compiled by numba.  No per-slot Python loop runs
per step.

The stepped model carries only the sensors a preset needs, so that stepping costs what the bare
model costs.  Quantities that need MuJoCo's pipeline rather than the raw state are obtained as
cheaply as exactness allows:

* centre of mass of the torso subtree and its velocity of a planar robot (HalfCheetah):
  :class:`~metarl.envs.planar.PlanarKinematics`, its forward kinematics from ``qpos``/``qvel``
  in one compiled loop;
* ``"original"`` preset, contact forces (Ant): after each control step a *probe* rollout runs one
  forward pass at the new state with the same control (as rllab's ``model.forward()`` after
  stepping) and returns sensors (contact forces, torso orientation, centre of mass and its
  velocity); the probe uses the Euler integrator and its state output is discarded;
* ``"gymnasium"`` preset: the contact sensors of the last physics substep are used (contact
  forces at the start of that substep), so no extra pass is needed.

``cfrc_ext`` is rebuilt exactly from one net-force contact sensor per body:
``cfrc_ext[b] = -[torque + (point - c) x force, force]`` with ``c`` the torso subtree's centre
of mass (the frame MuJoCo uses for ``cfrc_ext``); a test checks it against
``mujoco.mj_rnePostConstraint``.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import sys
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import gymnasium
import mujoco
import numba
import numpy as np
from mujoco import rollout

from metarl.envs.base import (
    RENDER_SIZE,
    BatchedEnv,
    RenderError,
    StepResult,
    Task,
    TaskFamily,
    default_num_threads,
)
from metarl.envs.planar import PlanarKinematics

LOGGER = logging.getLogger("metarl.envs.mujoco")
ASSETS = os.path.join(os.path.dirname(gymnasium.__file__ or ""), "envs", "mujoco", "assets")
TORSO = "torso"
_FULL_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS
_CONTACT_DATA = 2 | 4 | 16  # contact sensor fields: force, torque, point
_NET_FORCE = 3  # contact sensor reduction: net wrench of all matching contacts
_T = TypeVar("_T")


def _log_mujoco_warning(message: str) -> None:
    LOGGER.warning("MuJoCo: %s", message)


if mujoco.get_mju_user_warning() is None:  # else MuJoCo writes MUJOCO_LOG.TXT into the cwd
    mujoco.set_mju_user_warning(_log_mujoco_warning)


@dataclass(frozen=True)
class PhysicsPreset:
    """Dynamics and measurement conventions shared by every family of one preset."""

    name: str
    frame_skip: int
    horizon: int
    qpos_noise: str  # "normal" or "uniform"
    qpos_noise_scale: float
    qvel_noise_scale: float
    measure_after_step: bool  # COM quantities from a forward pass at the new state


PRESETS: dict[str, PhysicsPreset] = {
    "original": PhysicsPreset("original", 1, 200, "normal", 0.01, 0.1, True),
    "gymnasium": PhysicsPreset("gymnasium", 5, 100, "uniform", 0.1, 0.1, False),
}


def physics_preset(name: str) -> PhysicsPreset:
    """The preset called ``name``; a clear error otherwise."""
    if name not in PRESETS:
        raise ValueError(f"physics must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]


SENSOR_SETS = ("none", "contacts", "all")
"""Sensors added to a model: none; contact forces (one net-force sensor per body) and the torso
subtree's centre of mass (the frame of ``cfrc_ext``); those plus the centre of mass's velocity
and the torso's axes."""


@functools.cache
def _compiled_model(xml_file: str, sensors: str) -> mujoco.MjModel:
    if sensors not in SENSOR_SETS:
        raise ValueError(f"sensors must be one of {SENSOR_SETS}, got {sensors!r}")
    with warnings.catch_warnings():  # gymnasium's XML uses the deprecated 'settotalmass'
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        spec = mujoco.MjSpec.from_file(os.path.join(ASSETS, xml_file))
    for index, body in enumerate(spec.bodies[1:], start=1):
        body.name = body.name or f"body_{index}"
        if sensors != "none":
            _add_sensor(spec, mujoco.mjtSensor.mjSENS_CONTACT, body.name, f"contact_{index}")
    if sensors != "none":
        _add_sensor(spec, mujoco.mjtSensor.mjSENS_SUBTREECOM, TORSO, "torso_com")
    if sensors == "all":
        _add_sensor(spec, mujoco.mjtSensor.mjSENS_SUBTREELINVEL, TORSO, "torso_com_velocity")
        for axis in "xyz":
            sensor_type = getattr(mujoco.mjtSensor, f"mjSENS_FRAME{axis.upper()}AXIS")
            _add_sensor(spec, sensor_type, TORSO, f"torso_{axis}axis")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*settotalmass.*")
        return spec.compile()


def _add_sensor(spec: mujoco.MjSpec, sensor_type: int, body: str, name: str) -> None:
    sensor = spec.add_sensor(
        name=name, type=sensor_type, objtype=mujoco.mjtObj.mjOBJ_BODY, objname=body
    )
    if sensor_type == mujoco.mjtSensor.mjSENS_CONTACT:
        sensor.intprm[0], sensor.intprm[1], sensor.intprm[2] = _CONTACT_DATA, _NET_FORCE, 1


def load_model(xml_file: str, sensors: str = "none") -> mujoco.MjModel:
    """Gymnasium's shipped ``xml_file`` with the sensor set ``sensors`` (see
    :data:`SENSOR_SETS`) added."""
    return copy.deepcopy(_compiled_model(xml_file, sensors))


class BatchedSimulation:
    """``num_envs`` copies of one model, stepped together by :mod:`mujoco.rollout`.

    ``state`` is the ``[num_envs, nstate]`` array of MuJoCo full physics states; ``sensors``
    holds the sensor values of the last step (or probe) for every slot.  Each simulation owns
    its rollout thread pools (one per thread count it has stepped on, none for one thread), so
    that several can step at once from different Python threads; :meth:`use_threads` changes
    the count between steps without changing any result.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        num_envs: int,
        frame_skip: int,
        probe_model: mujoco.MjModel | None = None,
        num_threads: int | None = None,
    ):
        self.model = model
        self.probe_model = probe_model
        self.num_envs = num_envs
        self.frame_skip = frame_skip
        self.use_threads(num_threads or default_num_threads())
        self.dt = model.opt.timestep * frame_skip
        data = mujoco.MjData(model)
        self.state = np.zeros((num_envs, mujoco.mj_stateSize(model, _FULL_STATE)))
        mujoco.mj_getState(model, data, self.state[0], _FULL_STATE)
        self.state[:] = self.state[0]
        self._default_state = self.state[0].copy()
        self._qpos = slice(1, 1 + model.nq)
        self._qvel = slice(1 + model.nq, 1 + model.nq + model.nv)
        sensor_model = probe_model or model
        self.sensors = np.zeros((num_envs, sensor_model.nsensordata))
        self._sensor_slices = {
            sensor_model.sensor(i).name: slice(
                int(sensor_model.sensor_adr[i]),
                int(sensor_model.sensor_adr[i] + sensor_model.sensor_dim[i]),
            )
            for i in range(sensor_model.nsensor)
        }
        self._renderers: dict[int, mujoco.Renderer] = {}
        self._setup_workers()

    def _setup_workers(self) -> None:
        self._datas: list[mujoco.MjData] = []
        self._probe_datas: list[mujoco.MjData] = []
        self._state_out = np.empty((self.num_envs, self.frame_skip, self.state.shape[1]))
        self._sensors_out = np.empty((self.num_envs, self.frame_skip, self.model.nsensordata))
        self._probe_sensors_out = np.empty((self.num_envs, 1, self.sensors.shape[1]))
        self._pools: dict[int, tuple[int, rollout.Rollout]] = {}

    def use_threads(self, num_threads: int) -> None:
        """Step on ``num_threads`` threads (at most one per slot) from now on."""
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.num_threads = min(num_threads, self.num_envs)

    def _rollout(self) -> rollout.Rollout:
        """The rollout pool of ``num_threads`` threads (none for one: the calling thread),
        made once per process (threads do not fork), with one data per thread."""
        threads = self.num_threads
        self._datas += [mujoco.MjData(self.model) for _ in range(threads - len(self._datas))]
        if self.probe_model is not None:
            missing = threads - len(self._probe_datas)
            self._probe_datas += [mujoco.MjData(self.probe_model) for _ in range(missing)]
        pool = self._pools.get(threads)
        if pool is None or pool[0] != os.getpid():
            pool = (os.getpid(), rollout.Rollout(nthread=0 if threads == 1 else threads))
            self._pools[threads] = pool
        return pool[1]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        workers = ("_datas", "_probe_datas", "_state_out", "_sensors_out", "_probe_sensors_out")
        for key in (*workers, "_pools", "_renderers", "_render_data"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._renderers = {}
        self._setup_workers()

    @property
    def qpos(self) -> np.ndarray:
        """Joint positions ``[num_envs, nq]`` (a view)."""
        return self.state[:, self._qpos]

    @property
    def qvel(self) -> np.ndarray:
        """Joint velocities ``[num_envs, nv]`` (a view)."""
        return self.state[:, self._qvel]

    def sensor(self, name: str) -> np.ndarray:
        """Values ``[num_envs, dim]`` of the sensor ``name`` (a view)."""
        return self.sensors[:, self._sensor_slices[name]]

    def sensor_slice(self, name: str) -> slice:
        """Where the sensor ``name`` lies in a row of ``sensors``."""
        return self._sensor_slices[name]

    def set_state(self, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Restart every slot at time 0 from ``qpos`` ``[num_envs, nq]``, ``qvel``."""
        self.state[:] = self._default_state
        self.qpos[:] = qpos
        self.qvel[:] = qvel
        self.sensors[:] = 0.0

    def reset_rows(self, index: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Restart the slots ``index`` at time 0 from ``qpos`` ``[len(index), nq]``, ``qvel``."""
        self.state[index] = self._default_state
        self.state[index, self._qpos] = qpos
        self.state[index, self._qvel] = qvel
        self.sensors[index] = 0.0

    def step(self, ctrl: np.ndarray, active: np.ndarray) -> None:
        """Advance the ``active`` slots by ``frame_skip`` physics steps under ``ctrl``."""
        index = None if active.all() else np.flatnonzero(active)
        count = self.num_envs if index is None else len(index)
        if count == 0:
            return
        initial = self.state if index is None else self.state[index]
        controls = np.repeat(
            (ctrl if index is None else ctrl[index])[:, None, :], self.frame_skip, axis=1
        )
        states, sensors = self._state_out[:count], self._sensors_out[:count]
        pool = self._rollout()
        pool.rollout(
            [self.model] * count,
            self._datas[: self.num_threads],
            initial,
            controls,
            nstep=self.frame_skip,
            state=states,
            sensordata=sensors if self.model.nsensordata else None,
            skip_checks=True,
        )
        rows = slice(None) if index is None else index
        self.state[rows] = states[:, -1]
        if self.probe_model is None and self.model.nsensordata:
            self.sensors[rows] = sensors[:, -1]

    def probe(self, ctrl: np.ndarray, active: np.ndarray) -> None:
        """Refresh ``sensors`` of the ``active`` slots by a forward pass at their state."""
        assert self.probe_model is not None
        index = None if active.all() else np.flatnonzero(active)
        count = self.num_envs if index is None else len(index)
        if count == 0:
            return
        sensors = self._probe_sensors_out[:count]
        pool = self._rollout()
        pool.rollout(
            [self.probe_model] * count,
            self._probe_datas[: self.num_threads],
            self.state if index is None else self.state[index],
            (ctrl if index is None else ctrl[index])[:, None, :],
            nstep=1,
            state=None,
            sensordata=sensors,
            skip_checks=True,
        )
        self.sensors[slice(None) if index is None else index] = sensors[:, 0]

    def render(self, index: int, size: int = RENDER_SIZE) -> np.ndarray:
        """RGB frame ``[size, size, 3]`` of slot ``index`` from the model's tracking camera,
        without shadows or reflections; raises :class:`RenderError` if no offscreen OpenGL
        context can be made."""
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = offscreen_renderer(self.model, size)
            self._render_data = mujoco.MjData(self.model)
        mujoco.mj_setState(self.model, self._render_data, self.state[index], _FULL_STATE)
        mujoco.mj_forward(self.model, self._render_data)
        renderer.update_scene(self._render_data, camera="track")
        return renderer.render()

    def close(self) -> None:
        """Release the renderers."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers = {}


def offscreen_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    """A ``size`` × ``size`` offscreen :class:`mujoco.Renderer`, shadows and reflections off.

    The OpenGL backend is MuJoCo's choice from ``MUJOCO_GL``, except on Linux with neither a
    display nor ``MUJOCO_GL`` set: there MuJoCo's default (GLFW) needs a display it does not
    have, and EGL (a GPU's, or Mesa's software EGL) is used for this renderer instead.
    """
    try:
        if sys.platform.startswith("linux") and not _display_or_backend_chosen():
            renderer = _egl_renderer(model, size)
        else:
            renderer = mujoco.Renderer(model, size, size)
    except Exception as error:  # noqa: BLE001 - every backend failure means the same here
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RenderError(reason) from error
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    return renderer


def _display_or_backend_chosen() -> bool:
    keys = ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")
    return any(os.environ.get(key) for key in keys)


def _egl_renderer(model: mujoco.MjModel, size: int) -> mujoco.Renderer:
    """A renderer made with MuJoCo's EGL context (the context class is read only while the
    renderer is made: MuJoCo's own choice is restored at once)."""
    from mujoco.egl import GLContext as EGLContext

    contexts = sys.modules[mujoco.Renderer.__module__].gl_context  # type: ignore[attr-defined]
    default = getattr(contexts, "GLContext", None)
    contexts.GLContext = EGLContext
    try:
        return mujoco.Renderer(model, size, size)
    finally:
        contexts.GLContext = default


def make_probe_model(model: mujoco.MjModel, contacts: bool) -> mujoco.MjModel:
    """A copy of ``model`` whose single Euler step is one forward pass (sensors included).

    Without ``contacts`` collision and constraints are skipped: enough for kinematic sensors.
    """
    probe = copy.deepcopy(model)
    probe.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    probe.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
    if not contacts:
        probe.opt.disableflags |= (
            mujoco.mjtDisableBit.mjDSBL_CONTACT | mujoco.mjtDisableBit.mjDSBL_CONSTRAINT
        )
    return probe


@dataclass
class Measurements:
    """What the rewards and observations of one step are computed from, per slot."""

    x_velocity: np.ndarray  # [B] forward velocity of the robot
    position: np.ndarray  # [B, 2] torso (COM or frame) x, y
    contact_forces: np.ndarray | None  # [B, nbody, 6] cfrc_ext, unclipped
    com: np.ndarray | None = None  # [B, 3] torso subtree's centre of mass (original preset)


class LocomotionFamily(TaskFamily):
    """Base of the MuJoCo locomotion families: physics preset, batching and masking.

    Subclasses set the robot (``xml_file``, sensors, initial pose) and define the task
    parameters, observation, reward terms and health rule.
    """

    xml_file: str
    steps_without_gil = True
    render_modes = ("rgb_array",)
    contact_sensors: bool = False
    planar: bool = False  # robot in the x-z plane: centre of mass by PlanarKinematics
    timestep: dict[str, float] = {}  # model timestep per preset, when it differs from the XML
    # the geoms' contact impedance (solimp's dmin, dmax, width) per preset, when it differs
    contact_impedance: dict[str, tuple[float, float, float]] = {}
    reward_task_key = "reward_forward"
    default_velocity_range: tuple[float, float] | None = None  # families with a velocity task
    velocity_range: tuple[float, float]

    def __init__(
        self, seed: int | None, physics: str, horizon: int | None, oracle: bool = False
    ) -> None:
        super().__init__(seed, oracle)
        self.physics = physics_preset(physics)
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon!r}")
        self.horizon = self.physics.horizon if horizon is None else int(horizon)
        self._kinematics: PlanarKinematics | None = None

    @property
    def preset(self) -> str:
        return self.physics.name

    def set_velocity_range(self, velocity_range: tuple[float, float] | None) -> None:
        """``velocity_range`` of the families with a velocity task (``default_velocity_range``
        when None); an error for the others."""
        value = self.family_argument("velocity_range", velocity_range, self.default_velocity_range)
        if value is not None:
            self.velocity_range = check_range("velocity_range", value)

    def family_argument(self, name: str, value: _T | None, default: _T | None) -> _T | None:
        """``value`` (``default`` when None) of an argument that only some families of a
        robot use (``default`` None: this family does not, and a value is an error)."""
        if default is None and value is not None:
            raise ValueError(f"{name} does not apply to {self.name}")
        return default if value is None else value

    @property
    def needs_probe(self) -> bool:
        """Whether measuring needs a forward pass at the new state (see :meth:`measure`)."""
        return self.physics.measure_after_step and not self.planar

    def make_batched_env(self, num_envs: int, num_threads: int | None = None) -> BatchedEnv:
        return self.observed(BatchedLocomotionEnv(num_envs, self, num_threads))

    def build_simulation(self, num_envs: int, num_threads: int | None = None) -> BatchedSimulation:
        """The batched simulation of this family's robot under its physics preset."""
        step_sensors = "contacts" if self.contact_sensors and not self.needs_probe else "none"
        model = self.preset_model(step_sensors)
        probe = None
        if self.needs_probe:
            probe = make_probe_model(self.preset_model("all"), self.contact_sensors)
        return BatchedSimulation(model, num_envs, self.physics.frame_skip, probe, num_threads)

    def preset_model(self, sensors: str) -> mujoco.MjModel:
        """The robot's model with the sensor set ``sensors``, under this family's preset."""
        model = load_model(self.xml_file, sensors)
        if self.preset in self.timestep:
            model.opt.timestep = self.timestep[self.preset]
        if self.preset in self.contact_impedance:
            model.geom_solimp[:, :3] = self.contact_impedance[self.preset]
        return model

    def initial_qpos(self, model: mujoco.MjModel) -> np.ndarray:
        """Mean initial joint positions before noise (the model's reference pose)."""
        return model.qpos0.copy()

    def measure(self, sim: BatchedSimulation, x_before: np.ndarray | None) -> Measurements:
        """Velocity, position and contact forces per the preset's conventions.

        ``"original"``: centre of mass of the torso subtree and its velocity at the new state,
        from :class:`PlanarKinematics` for planar robots, else from the probe's sensors.
        ``"gymnasium"``: torso position and its finite-difference velocity.
        """
        com = None
        if self.physics.measure_after_step:
            if self.planar:
                if self._kinematics is None:
                    self._kinematics = PlanarKinematics(sim.model)
                com, com_velocity = self._kinematics(sim.qpos, sim.qvel)
            else:
                com, com_velocity = sim.sensor("torso_com").copy(), sim.sensor("torso_com_velocity")
            velocity, position = com_velocity[:, 0].copy(), com[:, :2].copy()
        else:
            x_now = sim.qpos[:, 0]
            velocity = np.zeros(sim.num_envs) if x_before is None else (x_now - x_before) / sim.dt
            position = sim.qpos[:, :2].copy()
        forces = contact_forces(sim) if self.contact_sensors else None
        return Measurements(velocity, position, forces, com)

    @abstractmethod
    def task_parameters(self, tasks: Sequence[Task]) -> np.ndarray:
        """The tasks as an array ``[num_tasks, ...]`` used by :meth:`reward_task`."""

    @abstractmethod
    def reward_task(self, measured: Measurements, parameters: np.ndarray) -> np.ndarray:
        """The task-dependent reward term (forward or goal) per slot."""

    @abstractmethod
    def reward_terms(
        self, measured: Measurements, action: np.ndarray, parameters: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Every reward term (``reward_*``) per slot; the reward is their sum."""

    @abstractmethod
    def observe(self, sim: BatchedSimulation, measured: Measurements) -> np.ndarray:
        """Observations ``[num_envs, observation_dim]``."""

    def unhealthy(self, sim: BatchedSimulation) -> np.ndarray:
        """Slots whose state ends the episode (none by default)."""
        return np.zeros(sim.num_envs, dtype=bool)


def contact_forces(sim: BatchedSimulation) -> np.ndarray:
    """``cfrc_ext`` ``[B, nbody, 6]`` (world body included, always 0) from contact sensors."""
    num_bodies = sim.model.nbody - 1
    first, last = sim.sensor_slice("contact_1"), sim.sensor_slice(f"contact_{num_bodies}")
    assert last.stop - first.start == 9 * num_bodies  # one block of 9 per body, in body order
    forces = np.zeros((sim.num_envs, sim.model.nbody, 6))
    _wrenches_from_contact_sensors(
        sim.sensors, first.start, sim.sensor_slice("torso_com").start, forces
    )
    return forces


@numba.njit(cache=True, nogil=True)
def _wrenches_from_contact_sensors(
    sensors: np.ndarray, first: int, com: int, forces: np.ndarray
) -> None:
    """``forces[:, 1 + b] = -[torque + (point - c) x force, force]`` for every body ``b``, from
    its block of 9 sensor values (force, torque, point) at ``first + 9 b`` and the centre of mass
    ``c`` at ``com``; one compiled loop outside the GIL (as :mod:`metarl.envs.planar` explains)."""
    for slot in range(sensors.shape[0]):
        row = sensors[slot]
        for body in range(forces.shape[1] - 1):
            force, torque, point = first + 9 * body, first + 9 * body + 3, first + 9 * body + 6
            for axis in range(3):
                after, then = (axis + 1) % 3, (axis + 2) % 3
                arm_after = row[point + after] - row[com + after]
                arm_then = row[point + then] - row[com + then]
                cross = arm_after * row[force + then] - arm_then * row[force + after]
                forces[slot, body + 1, axis] = -(row[torque + axis] + cross)
                forces[slot, body + 1, 3 + axis] = -row[force + axis]


class BatchedLocomotionEnv(BatchedEnv):
    """``num_envs`` robots of one :class:`LocomotionFamily`, each with its own task."""

    def __init__(
        self, num_envs: int, family: LocomotionFamily, num_threads: int | None = None
    ) -> None:
        super().__init__(num_envs)
        self.family = family
        self.horizon = family.horizon
        self.sim = family.build_simulation(num_envs, num_threads)
        self.action_dim = self.sim.model.nu
        low, high = self.sim.model.actuator_ctrlrange.T
        self._ctrl_center, self._ctrl_half_range = (high + low) / 2, (high - low) / 2
        self._parameters = np.zeros((num_envs, 1))
        self._observation = family.observe(self.sim, family.measure(self.sim, None))
        self.observation_dim = self._observation.shape[1]
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / self.sim.dt))}
        self.alive[:] = False

    def _on_tasks_set(self) -> None:
        self._parameters = self.family.task_parameters(self.tasks)

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        if not self.tasks:
            raise RuntimeError("set_tasks must be called before reset")
        qpos, qvel = self._initial_state(rng)
        self.sim.set_state(qpos, qvel)
        self.alive[:] = True
        if self.family.needs_probe:
            self.sim.probe(np.zeros((self.num_envs, self.action_dim)), self.alive)
        self._observation = self.family.observe(self.sim, self.family.measure(self.sim, None))
        return self._observation.copy()

    def reset_slots(
        self, slots: np.ndarray, tasks: Sequence[Task], rng: np.random.Generator
    ) -> np.ndarray:
        index = self._assign_tasks(slots, tasks)
        qpos, qvel = self._initial_state(rng, len(index))
        self.sim.reset_rows(index, qpos, qvel)
        self.alive[index] = True
        if self.family.needs_probe:
            self.sim.probe(np.zeros((self.num_envs, self.action_dim)), slots)
        observation = self.family.observe(self.sim, self.family.measure(self.sim, None))
        self._observation = np.where(slots[:, None], observation, self._observation)
        return self._observation.copy()

    def _initial_state(
        self, rng: np.random.Generator, num_slots: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reference pose plus noise for ``num_slots`` slots (default: all), drawn slot by slot
        (qpos then qvel, as gymnasium does), so that slot 0 of any batch matches a batch of one
        and a batch split in two draws what the whole batch draws."""
        physics, model = self.family.physics, self.sim.model
        count = self.num_envs if num_slots is None else num_slots
        qpos = np.tile(self.family.initial_qpos(model), (count, 1))
        qvel = np.zeros((count, model.nv))
        scale = physics.qpos_noise_scale
        if physics.qpos_noise == "normal":  # one draw, row by row: the slot-by-slot stream
            noise = rng.standard_normal((count, model.nq + model.nv))
            qpos += scale * noise[:, : model.nq]
            qvel += physics.qvel_noise_scale * noise[:, model.nq :]
            return qpos, qvel
        for slot in range(count):
            qpos[slot] += rng.uniform(-scale, scale, size=model.nq)
            qvel[slot] += physics.qvel_noise_scale * rng.standard_normal(model.nv)
        return qpos, qvel

    def step(self, action: np.ndarray) -> StepResult:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        alive = self.alive.copy()
        everyone = bool(alive.all())  # the common case: no masking to do
        ctrl = self._ctrl_center + self._ctrl_half_range * action
        family = self.family
        x_before = None if family.physics.measure_after_step else self.sim.qpos[:, 0].copy()
        self.sim.step(ctrl, alive)
        if family.needs_probe:
            self.sim.probe(ctrl, alive)
        measured = family.measure(self.sim, x_before)
        terms = family.reward_terms(measured, action, self._parameters)
        info = {**terms, "x_velocity": measured.x_velocity}
        if not everyone:
            info = {key: np.where(alive, value, 0.0) for key, value in info.items()}
        reward = sum(info[key] for key in terms)
        terminated = alive & family.unhealthy(self.sim)
        self.alive = alive & ~terminated
        observation = family.observe(self.sim, measured)
        if not everyone:
            observation = np.where(alive[:, None], observation, self._observation)
        self._observation = observation
        return StepResult(observation.copy(), np.asarray(reward), terminated, info)

    def use_threads(self, num_threads: int) -> None:
        self.sim.use_threads(num_threads)

    def render(self, index: int = 0, size: int = RENDER_SIZE) -> np.ndarray:
        return self.sim.render(index, size)

    def close(self) -> None:
        self.sim.close()


class VelocityTask:
    """Mixin: target forward velocity ``v ~ U[velocity_range]``, term ``-|v_x - v|``."""

    task_dim = 1

    rng: np.random.Generator
    velocity_range: tuple[float, float]

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator | None = None) -> list[Task]:
        low, high = self.velocity_range
        velocities = (self.rng if rng is None else rng).uniform(low, high, size=num_tasks)
        return [{"velocity": float(v)} for v in velocities]

    def task_parameters(self, tasks: Sequence[Task]) -> np.ndarray:
        return np.array([float(task["velocity"]) for task in tasks])

    def reward_task(self, measured: Measurements, parameters: np.ndarray) -> np.ndarray:
        return -np.abs(measured.x_velocity - parameters)


class DirectionTask:
    """Mixin: direction ``d`` in ``{-1, +1}`` with probability 1/2 each, term ``d * v_x``."""

    task_dim = 1

    rng: np.random.Generator

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator | None = None) -> list[Task]:
        directions = (self.rng if rng is None else rng).choice([-1.0, 1.0], size=num_tasks)
        return [{"direction": float(d)} for d in directions]

    def task_parameters(self, tasks: Sequence[Task]) -> np.ndarray:
        return np.array([float(task["direction"]) for task in tasks])

    def reward_task(self, measured: Measurements, parameters: np.ndarray) -> np.ndarray:
        return parameters * measured.x_velocity


def check_range(name: str, value: tuple[float, float]) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` float pair; a clear error unless ``low <= high``."""
    low, high = (float(v) for v in value)
    if not low <= high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return low, high
