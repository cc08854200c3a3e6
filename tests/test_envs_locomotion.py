"""MuJoCo locomotion families: rewards against MuJoCo's own quantities, layout, masking, API."""

from __future__ import annotations

import ast
import inspect
import os
import pickle
import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from metarl import envs
from metarl.envs.ant import Ant, AntDir, AntGoal, AntVel
from metarl.envs.half_cheetah import HalfCheetahDir, HalfCheetahVel
from metarl.envs.mujoco_core import (
    ASSETS,
    LocomotionFamily,
    contact_forces,
    load_model,
    mujoco,
)
from metarl.envs.planar import PlanarKinematics

FAMILIES = [HalfCheetahVel, HalfCheetahDir, AntVel, AntDir, AntGoal]
PRESETS = ["original", "gymnasium"]
CASES = [
    pytest.param(family, preset, id=f"{family.name}-{preset}")
    for family in FAMILIES
    for preset in PRESETS
]
OBSERVATION_DIM = {
    ("HalfCheetah", "original"): 20,
    ("HalfCheetah", "gymnasium"): 17,
    ("Ant", "original"): 125,
    ("Ant", "gymnasium"): 105,
}


def robot(family: type[LocomotionFamily]) -> str:
    return "Ant" if issubclass(family, Ant) else "HalfCheetah"


def rollout_env(
    family: type[LocomotionFamily],
    preset: str,
    num_envs: int = 4,
    num_steps: int = 5,
    seed: int = 0,
    **kwargs,
):
    """A batched env after ``num_steps`` random steps; returns (env, last result, last action)."""
    fam = family(seed=seed, physics=preset, **kwargs)
    env = fam.make_batched_env(num_envs)
    env.set_tasks(fam.sample_tasks(num_envs))
    env.reset(np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    result, action = None, None
    for _ in range(num_steps):
        action = rng.uniform(-1.2, 1.2, size=(num_envs, env.action_dim))
        result = env.step(action)
    return env, result, np.clip(action, -1, 1)


RLLAB_ANT_CONTACTS = 'solimp=".8 .8 .01"'  # the default geom's in the rllab Ant model


def plain_model(family: type[LocomotionFamily], preset: str) -> mujoco.MjModel:
    """Gymnasium's XML loaded directly, with the preset's timestep (and for the original Ant,
    the rllab model's default contact impedance written into its XML): an independent
    reference."""
    with open(os.path.join(ASSETS, family.xml_file)) as file:
        xml = file.read()
    if family.xml_file == "ant.xml" and preset == "original":
        xml = xml.replace("<geom ", f"<geom {RLLAB_ANT_CONTACTS} ", 1)  # <default>'s geom
    model = mujoco.MjModel.from_xml_string(xml)
    model.opt.timestep = family.timestep.get(preset, model.opt.timestep)
    return model


def forward_at(
    model: mujoco.MjModel, qpos: np.ndarray, qvel: np.ndarray, ctrl: np.ndarray
) -> mujoco.MjData:
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:], data.ctrl[:] = qpos, qvel, ctrl
    mujoco.mj_forward(model, data)
    mujoco.mj_rnePostConstraint(model, data)
    return data


def mass_weighted_com_velocity(model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
    """Robot COM velocity as rllab computed it: body COM velocities weighted by mass."""
    velocity = np.zeros(6)
    momentum = np.zeros(3)
    for body in range(1, model.nbody):
        mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_BODY, body, velocity, 0)
        momentum += model.body_mass[body] * velocity[3:]
    return momentum / model.body_mass[1:].sum()


# --- documentation --------------------------------------------------------------------------


def arguments_table(doc: str) -> dict[str, tuple[str, str]]:
    section = doc.split("## Arguments", 1)[1].split("##", 1)[0]
    rows = {}
    table_lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    for line in table_lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows[cells[0]] = (cells[1].replace("\\|", "|"), cells[2])
    return rows


def documenting_class(family: type) -> type:
    """The class that defines ``family``'s constructor: its docstring documents the family
    (one docstring and one Arguments table for the families of one robot)."""
    return next(c for c in family.__mro__ if "__init__" in vars(c))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_arguments_table_matches_signature(family):
    table = arguments_table(documenting_class(family).__doc__)
    parameters = inspect.signature(family.__init__).parameters
    assert list(table) == [name for name in parameters if name != "self"]
    for name, (type_name, default) in table.items():
        assert type_name == parameters[name].annotation, name
        assert ast.literal_eval(default) == parameters[name].default, name


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_docstring_sections(family):
    doc = documenting_class(family).__doc__
    assert family.name in doc and family.name in family.__doc__
    sections = re.findall(r"^\s*## (.+)$", doc, flags=re.MULTILINE)
    assert sections == [
        "Description",
        "Task distribution",
        "Action space",
        "Observation space",
        "Rewards",
        "Starting state",
        "Episode end",
        "Arguments",
        "Version history",
    ]
    assert "{" not in doc.replace('{"', "")


# --- tasks ----------------------------------------------------------------------------------


def test_task_distributions():
    velocities = [t["velocity"] for t in HalfCheetahVel(seed=0).sample_tasks(4000)]
    assert min(velocities) >= 0 and max(velocities) <= 2 and abs(np.mean(velocities) - 1) < 0.05
    velocities = [t["velocity"] for t in AntVel(seed=0).sample_tasks(4000)]
    assert min(velocities) >= 0 and max(velocities) <= 3 and abs(np.mean(velocities) - 1.5) < 0.06
    for family in (HalfCheetahDir, AntDir):
        directions = np.array([t["direction"] for t in family(seed=0).sample_tasks(4000)])
        assert set(directions) == {-1.0, 1.0} and abs(directions.mean()) < 0.05
    goals = np.array([t["goal"] for t in AntGoal(seed=0).sample_tasks(4000)])
    assert goals.shape == (4000, 2) and np.abs(goals).max() <= 3
    assert np.all(np.abs(goals.mean(axis=0)) < 0.1) and np.all(np.abs(goals).max(axis=0) > 2.9)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_task_seeding(family):
    assert family(seed=3).sample_tasks(5) == family(seed=3).sample_tasks(5)
    assert family(seed=3).sample_tasks(5) != family(seed=4).sample_tasks(5)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="physics must be one of"):
        AntVel(physics="mujoco-py")
    with pytest.raises(ValueError, match="velocity_range"):
        HalfCheetahVel(velocity_range=(2.0, 0.0))
    with pytest.raises(ValueError, match="horizon"):
        AntDir(horizon=0)


# --- observations and rewards ---------------------------------------------------------------


@pytest.mark.parametrize("family,preset", CASES)
def test_observation_layout(family, preset):
    env, result, _ = rollout_env(family, preset)
    qpos, qvel = env.sim.qpos, env.sim.qvel
    size = OBSERVATION_DIM[robot(family), preset]
    obs = result.observation
    assert obs.shape == (4, size) and env.observation_dim == size and obs.dtype == np.float64
    skipped = 1 if robot(family) == "HalfCheetah" else (0 if preset == "original" else 2)
    np.testing.assert_array_equal(obs[:, : qpos.shape[1] - skipped], qpos[:, skipped:])
    start = qpos.shape[1] - skipped
    np.testing.assert_array_equal(obs[:, start : start + qvel.shape[1]], qvel)
    assert env.horizon == (200 if preset == "original" else 100)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_original_observation_tail_matches_mujoco(family):
    """COM, orientation and clipped cfrc_ext equal MuJoCo's at the new state (rllab order)."""
    env, result, action = rollout_env(family, "original", num_steps=8)
    model = plain_model(family, "original")
    for slot in range(env.num_envs):
        data = forward_at(model, env.sim.qpos[slot], env.sim.qvel[slot], action[slot])
        obs = result.observation[slot]
        np.testing.assert_allclose(obs[-3:], data.subtree_com[1], atol=1e-12)
        if robot(family) == "Ant":
            np.testing.assert_allclose(obs[-12:-3], data.xmat[1], atol=1e-12)
            np.testing.assert_allclose(
                obs[29:113], np.clip(data.cfrc_ext, -1, 1).ravel(), atol=1e-6
            )


def test_contact_forces_equal_rne_post_constraint_original():
    """cfrc_ext rebuilt from contact sensors equals mj_rnePostConstraint's at the new state."""
    env, _, action = rollout_env(AntGoal, "original", num_envs=6, num_steps=12, seed=5)
    forces = contact_forces(env.sim)
    model = plain_model(AntGoal, "original")
    for slot in range(env.num_envs):
        data = forward_at(model, env.sim.qpos[slot], env.sim.qvel[slot], action[slot])
        np.testing.assert_allclose(forces[slot], data.cfrc_ext, rtol=1e-6, atol=1e-6)
    assert np.abs(forces).max() > 1.0  # there were contacts to compare


def test_original_ant_steps_as_the_rllab_model():
    """The original preset steps the Ant as the rllab model does, its softer contacts
    included: each slot's state after a step equals mj_step's on the reference model."""
    env, _, _ = rollout_env(AntVel, "original", num_envs=4, num_steps=40, seed=5)
    start = env.sim.state.copy()
    action = np.random.default_rng(9).uniform(-1, 1, size=(4, env.action_dim))
    env.step(action)
    model = plain_model(AntVel, "original")
    assert (model.geom_solimp[:, :3] == (0.8, 0.8, 0.01)).all()
    contacts = 0
    for slot in range(env.num_envs):
        data = mujoco.MjData(model)
        mujoco.mj_setState(model, data, start[slot], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(model, data)
        contacts += data.ncon
        data.ctrl[:] = action[slot]
        mujoco.mj_step(model, data)
        np.testing.assert_allclose(env.sim.qpos[slot], data.qpos, rtol=0, atol=1e-10)
        np.testing.assert_allclose(env.sim.qvel[slot], data.qvel, rtol=0, atol=1e-8)
    assert contacts > 0  # feet on the floor: the contacts mattered


def test_contact_forces_gymnasium_are_those_of_the_last_substep():
    env, _, _ = rollout_env(AntGoal, "gymnasium", num_envs=4, num_steps=10, seed=5)
    start = env.sim.state.copy()
    action = np.random.default_rng(9).uniform(-1, 1, size=(4, env.action_dim))
    env.step(action)
    forces = contact_forces(env.sim)
    model = plain_model(AntGoal, "gymnasium")
    for slot in range(env.num_envs):
        data = mujoco.MjData(model)
        mujoco.mj_setState(model, data, start[slot], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        data.ctrl[:] = action[slot]
        mujoco.mj_step(model, data, nstep=4)
        mujoco.mj_forward(model, data)
        mujoco.mj_rnePostConstraint(model, data)
        np.testing.assert_allclose(forces[slot], data.cfrc_ext, rtol=1e-6, atol=1e-6)
    assert np.abs(forces).max() > 1.0


def test_planar_kinematics_equal_mujoco_subtree_com_and_velocity():
    """HalfCheetah's centre of mass and its velocity from the joint angles equal
    mj_comPos/mj_subtreeVel's, far from the reference pose too."""
    model = load_model("half_cheetah.xml")
    rng = np.random.default_rng(0)
    qpos, qvel = (
        3.0 * rng.standard_normal((20, model.nq)),
        5.0 * rng.standard_normal((20, model.nv)),
    )
    com, velocity = PlanarKinematics(model)(qpos, qvel)
    data = mujoco.MjData(model)
    for slot in range(20):
        data.qpos[:], data.qvel[:] = qpos[slot], qvel[slot]
        mujoco.mj_forward(model, data)
        mujoco.mj_subtreeVel(model, data)
        np.testing.assert_allclose(com[slot], data.subtree_com[1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(velocity[slot], data.subtree_linvel[1], rtol=0, atol=1e-12)
    assert np.abs(velocity[:, 0]).max() > 1.0  # not trivially zero


def test_planar_kinematics_reject_a_robot_out_of_the_plane():
    with pytest.raises(ValueError, match="x-z plane"):
        PlanarKinematics(load_model("ant.xml"))


@pytest.mark.parametrize("family,preset", CASES)
def test_stepped_model_carries_only_needed_sensors(family, preset):
    """Stepping costs what the bare model costs: sensors only where the preset reads them, and
    a probe pass only for contact forces at the new state (Ant, original)."""
    env, _, _ = rollout_env(family, preset, num_envs=2, num_steps=1)
    sensors = {env.sim.model.sensor(i).name for i in range(env.sim.model.nsensor)}
    if robot(family) == "Ant" and preset == "gymnasium":
        assert sensors == {f"contact_{body}" for body in range(1, 14)} | {"torso_com"}
    else:
        assert sensors == set()
    assert (env.sim.probe_model is not None) == (robot(family) == "Ant" and preset == "original")


@pytest.mark.parametrize("family,preset", CASES)
def test_slot_results_do_not_depend_on_the_batch(family, preset):
    """A slot's steps are bitwise the same alone or in a batch of 5 with some slots masked, so
    thread scheduling and vectorised post-processing cannot change results."""
    batch, _, _ = rollout_env(family, preset, num_envs=5, num_steps=3)
    states = batch.sim.state.copy()
    batch.end_slots(np.isin(np.arange(5), [1, 3]))
    singles = {}
    for slot in (0, 2, 4):
        single = batch.family.make_batched_env(1)
        single.set_tasks([batch.tasks[slot]])
        single.reset(np.random.default_rng(0))
        single.sim.state[:] = states[slot]
        singles[slot] = single
    actions = np.random.default_rng(4).uniform(-1, 1, size=(3, 5, batch.action_dim))
    for step in range(3):
        results = batch.step(actions[step])
        for slot, single in singles.items():
            expected = single.step(actions[step, slot : slot + 1])
            np.testing.assert_array_equal(results.observation[slot], expected.observation[0])
            assert results.reward[slot] == expected.reward[0]
            for key, value in expected.info.items():
                assert results.info[key][slot] == value[0], key
        assert results.reward[[1, 3]].tolist() == [0.0, 0.0]
    np.testing.assert_array_equal(batch.sim.state[[1, 3]], states[[1, 3]])
    assert not np.array_equal(batch.sim.state[[0, 2, 4]], states[[0, 2, 4]])


@pytest.mark.parametrize(
    "family,preset", [(HalfCheetahVel, "original"), (AntVel, "original"), (AntVel, "gymnasium")]
)
def test_threads_change_nothing(family, preset):
    """Stepping on more threads (as a lane does once other lanes have ended) gives bitwise
    the same states, observations and rewards, probe pass and masked slots included."""
    envs_by_threads = {}
    for threads in (1, 2, 3):
        env, _, _ = rollout_env(family, preset, num_envs=6, num_steps=2, seed=2)
        env.end_slots(np.arange(6) == 4)
        env.use_threads(threads)
        envs_by_threads[threads] = env
    actions = np.random.default_rng(6).uniform(-1, 1, size=(4, 6, env.action_dim))
    for step in range(4):
        results = {t: env.step(actions[step]) for t, env in envs_by_threads.items()}
        for threads in (2, 3):
            np.testing.assert_array_equal(results[threads].observation, results[1].observation)
            np.testing.assert_array_equal(results[threads].reward, results[1].reward)
            np.testing.assert_array_equal(
                envs_by_threads[threads].sim.state, envs_by_threads[1].sim.state
            )
    assert envs_by_threads[3].sim.num_threads == 3


def test_mujoco_warnings_go_to_logging_not_a_file(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    env, _, _ = rollout_env(HalfCheetahDir, "gymnasium", num_envs=2, num_steps=1)
    env.sim.qvel[0, 3] = np.inf
    env.step(np.zeros((2, 6)))
    assert "MuJoCo" in caplog.text and not (tmp_path / "MUJOCO_LOG.TXT").exists()


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_original_forward_reward_uses_com_velocity(family):
    env, result, action = rollout_env(family, "original", num_steps=6)
    model = plain_model(family, "original")
    for slot in range(env.num_envs):
        data = forward_at(model, env.sim.qpos[slot], env.sim.qvel[slot], action[slot])
        velocity = mass_weighted_com_velocity(model, data)
        assert result.info["x_velocity"][slot] == pytest.approx(velocity[0], abs=1e-10)
        task, offset = env.tasks[slot], getattr(env.family, "task_reward_offset", 0.0)
        if "velocity" in task:
            expected = -abs(velocity[0] - task["velocity"]) + offset
        elif "direction" in task:
            expected = task["direction"] * velocity[0] + offset
        else:
            com = data.subtree_com[1]
            expected = -(abs(com[0] - task["goal"][0]) + abs(com[1] - task["goal"][1])) + offset
        key = "reward_goal" if "goal" in task else "reward_forward"
        assert result.info[key][slot] == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("family,gym_id", [(HalfCheetahDir, "HalfCheetah-v5"), (AntDir, "Ant-v5")])
def test_gymnasium_preset_matches_gymnasium_v5(family, gym_id):
    """Same seed and actions: same reset, dynamics and finite-difference velocity as v5."""
    ours = gym.make(envs.env_id(family.name), physics="gymnasium").unwrapped
    reference = gym.make(gym_id).unwrapped
    obs, _ = ours.reset(seed=7, options={"task": {"direction": 1.0}})
    reference_obs, _ = reference.reset(seed=7)
    np.testing.assert_array_equal(
        obs[: 27 if family is AntDir else 17], reference_obs[: 27 if family is AntDir else 17]
    )
    rng = np.random.default_rng(0)
    for _ in range(3):
        action = rng.uniform(-1, 1, size=ours.action_space.shape)
        x_before = reference.data.qpos[0]
        obs, _, _, _, info = ours.step(action)
        reference_obs, _, _, _, _ = reference.step(action)
        size = 27 if family is AntDir else 17
        np.testing.assert_allclose(obs[:size], reference_obs[:size], rtol=1e-6, atol=1e-6)
        # the torso's x (qpos[0]); Ant-v5 itself differences the stale body xpos instead
        velocity = (reference.data.qpos[0] - x_before) / reference.dt
        assert info["x_velocity"] == pytest.approx(velocity, abs=1e-6)
        assert info["reward_forward"] == pytest.approx(velocity, abs=1e-6)


@pytest.mark.parametrize("family,preset", CASES)
def test_costs_and_terms_sum_to_reward(family, preset):
    env, result, action = rollout_env(family, preset)
    terms = {k: v for k, v in result.info.items() if k.startswith("reward_")}
    np.testing.assert_allclose(sum(terms.values()), result.reward, atol=1e-12)
    fam = env.family
    np.testing.assert_allclose(
        terms["reward_ctrl"], -fam.ctrl_cost_weight * np.sum(action**2, axis=1), atol=1e-12
    )
    if robot(family) == "Ant":
        clipped = np.clip(contact_forces(env.sim), -1, 1)
        np.testing.assert_allclose(
            terms["reward_contact"], -0.0005 * np.sum(clipped**2, axis=(1, 2)), atol=1e-12
        )
        np.testing.assert_array_equal(terms["reward_survive"], np.full(4, 0.05))


def test_reference_weights():
    assert HalfCheetahVel().ctrl_cost_weight == HalfCheetahDir().ctrl_cost_weight == 0.05
    for family, offset in ((AntVel, 1.0), (AntDir, 0.0), (AntGoal, 4.0)):
        fam = family()
        assert (
            fam.ctrl_cost_weight,
            fam.contact_cost_weight,
            fam.healthy_reward,
            fam.task_reward_offset,
        ) == (0.005, 0.0005, 0.05, offset)


@pytest.mark.parametrize("preset", PRESETS)
def test_ant_starting_state(preset):
    fam = AntVel(seed=0, physics=preset)
    env = fam.make_batched_env(400)
    env.set_tasks(fam.sample_tasks(400))
    env.reset(np.random.default_rng(0))
    qpos, qvel = env.sim.qpos, env.sim.qvel
    if preset == "original":
        pose = [0, 0, 0.55, 1, 0, 0, 0, 0, 1, 0, -1, 0, -1, 0, 1]
        np.testing.assert_allclose(qpos.mean(axis=0), pose, atol=0.003)
        assert qpos.std(axis=0) == pytest.approx(np.full(15, 0.01), rel=0.15)
    else:
        np.testing.assert_allclose(qpos.mean(axis=0), [0, 0, 0.75, 1] + [0] * 11, atol=0.015)
        assert np.abs(qpos - env.sim.model.qpos0).max() <= 0.1
    assert qvel.std(axis=0) == pytest.approx(np.full(14, 0.1), rel=0.15)


# --- termination and masking ----------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_ant_terminates_out_of_height_range_and_masks(preset):
    env, _, _ = rollout_env(AntVel, preset, num_envs=3, num_steps=1)
    env.sim.qpos[1, 2] = 1.5  # the torso thrown above the healthy range
    env.sim.qvel[1] = 0.0
    result = env.step(np.zeros((3, env.action_dim)))
    assert list(result.terminated) == [False, True, False]
    assert list(env.alive) == [True, False, True]
    frozen_state, frozen_obs = env.sim.state[1].copy(), result.observation[1].copy()
    for _ in range(3):
        result = env.step(np.ones((3, env.action_dim)))
        assert not result.terminated[1] and result.reward[1] == 0.0
        assert all(value[1] == 0.0 for value in result.info.values())
        np.testing.assert_array_equal(result.observation[1], frozen_obs)
        np.testing.assert_array_equal(env.sim.state[1], frozen_state)
    assert result.reward[0] != 0.0


def test_ant_health_rule():
    env, _, _ = rollout_env(AntDir, "original", num_envs=5, num_steps=1)
    env.sim.qpos[:, 2] = [0.5, 0.19, 1.01, 0.2, 1.0]
    env.sim.qvel[4, 4] = np.nan
    assert list(env.family.unhealthy(env.sim)) == [False, True, True, False, True]


def test_half_cheetah_never_terminates():
    env, _, _ = rollout_env(HalfCheetahDir, "original", num_envs=2, num_steps=1)
    env.sim.qpos[:, 1] = 5.0
    assert not env.step(np.zeros((2, 6))).terminated.any()


# --- batched vs single, determinism, pickling ------------------------------------------------


@pytest.mark.parametrize("family,preset", CASES)
def test_batched_equals_single_env(family, preset):
    fam = family(seed=0, physics=preset)
    tasks = fam.sample_tasks(3)
    batch = fam.make_batched_env(3)
    batch.set_tasks(tasks)
    single = gym.make(envs.env_id(family.name), physics=preset).unwrapped
    obs, _ = single.reset(seed=11, options={"task": tasks[0]})
    np.testing.assert_array_equal(batch.reset(np.random.default_rng(11))[0], obs)
    rng = np.random.default_rng(2)
    for _ in range(4):
        actions = rng.uniform(-1, 1, size=(3, batch.action_dim))
        result = batch.step(actions)
        obs, reward, terminated, _, info = single.step(actions[0])
        np.testing.assert_array_equal(result.observation[0], obs)
        assert result.reward[0] == reward and result.terminated[0] == terminated
        assert info["task"] == tasks[0]


@pytest.mark.parametrize("family,preset", CASES)
def test_pickle_and_determinism(family, preset):
    env = gym.make(envs.env_id(family.name), physics=preset).unwrapped
    env.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(6, *env.action_space.shape))
    for action in actions[:3]:
        env.step(action)
    clone = pickle.loads(pickle.dumps(env))
    for action in actions[3:]:
        first, second = env.step(action), clone.step(action)
        np.testing.assert_array_equal(first[0], second[0])
        assert first[1:4] == second[1:4]
    fresh = gym.make(envs.env_id(family.name), physics=preset).unwrapped
    fresh.reset(seed=3)
    replay = [fresh.step(action) for action in actions][-1]
    np.testing.assert_array_equal(replay[0], first[0])
    assert replay[1] == first[1] and fresh.task == env.task


# --- gymnasium API --------------------------------------------------------------------------


@pytest.mark.parametrize("family,preset", CASES)
def test_env_checkers(family, preset):
    env = gym.make(envs.env_id(family.name), physics=preset)
    assert env.spec is not None and env.spec.id in envs.gym.registry
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(envs.env_id(family.name), physics=preset), warn=False)
    assert env.unwrapped.family.preset == preset


@pytest.mark.parametrize("family,preset", [(HalfCheetahVel, "original"), (AntGoal, "gymnasium")])
def test_render_rgb_array(family, preset):
    env = gym.make(envs.env_id(family.name), physics=preset, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8 and frame.std() > 10
    dt = 0.01 if (family, preset) == (HalfCheetahVel, "original") else 0.05
    assert env.metadata["render_fps"] == round(1 / dt)
