"""Centre of mass and its velocity of a planar robot (HalfCheetah), from ``qpos``/``qvel``.

The original preset observes and rewards the whole robot's centre of mass at the new state;
for a planar robot it follows from the joint angles in closed form, so no forward pass is
needed.  The per-slot arithmetic runs in one compiled loop (numba, outside the GIL): a chain of
small numpy operations would cost less in arithmetic but more in calls, each paying for the
caches the physics step has just taken over.
"""

from __future__ import annotations

import math

import mujoco
import numba
import numpy as np


class PlanarKinematics:
    """Centre of mass of a planar robot's subtree and its velocity, vectorised over slots.

    For a kinematic tree moving in the x-z plane (body frames unrotated in the model, hinges
    about +y through the body origins, slide joints in the x-z plane on the root body only) the
    centre of mass of the root's subtree is ``x_root + sum_f R(phi_f) a_f``, one constant vector
    ``a_f`` (mass-weighted offsets expressed in body frame ``f``) per body, ``phi_f`` the body's
    accumulated hinge angle and ``R`` the rotation about +y; its velocity follows by the chain
    rule.  This is what ``mj_kinematics`` + ``mj_comPos`` + ``mj_subtreeVel`` compute
    (``subtree_com`` and ``subtree_linvel`` of the root), without a forward pass.  Each slot is
    computed on its own, in a fixed order: a slot's result does not depend on the batch.
    """

    def __init__(self, model: mujoco.MjModel, root: int = 1) -> None:
        bodies = [b for b in range(model.nbody) if self._descends(model, b, root)]
        index = {body: i for i, body in enumerate(bodies)}
        parent = [index.get(int(model.body_parentid[b]), -1) for b in bodies]
        if model.body_parentid[root] != 0:
            raise ValueError(f"body {root} is not attached to the world")
        hinges: list[list[tuple[int, int]]] = []  # (qpos, dof) of each body's hinges
        slides: list[tuple[int, int, np.ndarray]] = []  # (qpos, dof, axis) of the root
        for body in bodies:
            if not np.array_equal(model.body_quat[body], [1.0, 0.0, 0.0, 0.0]):
                raise ValueError(f"body {body} has a rotated frame: not a planar x-z robot")
            own = []
            first = model.body_jntadr[body]
            for joint in range(first, first + model.body_jntnum[body]):
                kind, axis = model.jnt_type[joint], model.jnt_axis[joint]
                qpos, dof = int(model.jnt_qposadr[joint]), int(model.jnt_dofadr[joint])
                if kind == mujoco.mjtJoint.mjJNT_HINGE and np.array_equal(axis, [0, 1, 0]):
                    if np.any(model.jnt_pos[joint]):
                        raise ValueError(f"joint {joint}: hinge not at its body's origin")
                    own.append((qpos, dof))
                elif kind == mujoco.mjtJoint.mjJNT_SLIDE and body == root and axis[1] == 0:
                    if own:
                        raise ValueError(f"joint {joint}: slide after a hinge")
                    slides.append((qpos, dof, axis[[0, 2]].copy()))
                else:
                    raise ValueError(f"joint {joint} does not keep the robot in the x-z plane")
            hinges.append(own)
        self.qpos0 = model.qpos0.copy()
        self.hinge_qpos = np.array(
            [address for own in hinges for address, _ in own], dtype=np.int64
        )
        self.hinge_dofs = np.array([dof for own in hinges for _, dof in own], dtype=np.int64)
        # per body, the hinges (root first) whose angles add up to its orientation, padded with
        # the index of an extra hinge whose angle is 0
        first_row = np.cumsum([0] + [len(own) for own in hinges])
        chains: list[list[int]] = []
        for i, up in enumerate(parent):
            mine = list(range(first_row[i], first_row[i + 1]))
            chains.append((chains[up] if up >= 0 else []) + mine)
        width = max(1, *(len(chain) for chain in chains))
        padding = len(self.hinge_qpos)
        self.chains = np.array(
            [chain + [padding] * (width - len(chain)) for chain in chains], dtype=np.int64
        )
        self.slide_qpos = np.array([address for address, _, _ in slides], dtype=np.int64)
        self.slide_dofs = np.array([dof for _, dof, _ in slides], dtype=np.int64)
        self.slide_axes = np.array([axis for _, _, axis in slides]).reshape(-1, 2)
        total = model.body_subtreemass[root]
        offsets = model.body_ipos[bodies] * model.body_mass[bodies, None]
        for i, body in enumerate(bodies[1:], start=1):  # a child's origin, in its parent's frame
            offsets[parent[i]] += model.body_pos[body] * model.body_subtreemass[body]
        offsets /= total
        self.offsets = offsets[:, [0, 2]].copy()  # a_f, x and z
        # the root's x and z, and the centre of mass's y (constant: nothing moves along y)
        self.origin = np.array(
            [
                model.body_pos[root][0],
                offsets[:, 1].sum() + model.body_pos[root][1],
                model.body_pos[root][2],
            ]
        )

    @staticmethod
    def _descends(model: mujoco.MjModel, body: int, root: int) -> bool:
        while body > root:
            body = int(model.body_parentid[body])
        return body == root

    def __call__(self, qpos: np.ndarray, qvel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(com, com_velocity)``, both ``[num_envs, 3]``, of the root's subtree."""
        com, velocity = np.empty((len(qpos), 3)), np.zeros((len(qpos), 3))
        _subtree_com_and_velocity(
            qpos, qvel, self.qpos0, self.hinge_qpos, self.hinge_dofs, self.chains,
            self.offsets, self.slide_qpos, self.slide_dofs, self.slide_axes, self.origin,
            com, velocity,
        )  # fmt: skip
        return com, velocity


@numba.njit(cache=True, nogil=True)
def _subtree_com_and_velocity(
    qpos: np.ndarray,
    qvel: np.ndarray,
    qpos0: np.ndarray,
    hinge_qpos: np.ndarray,
    hinge_dofs: np.ndarray,
    chains: np.ndarray,
    offsets: np.ndarray,
    slide_qpos: np.ndarray,
    slide_dofs: np.ndarray,
    slide_axes: np.ndarray,
    origin: np.ndarray,
    com: np.ndarray,
    velocity: np.ndarray,
) -> None:
    """Write ``com`` and ``velocity`` (x and z; y is constant, its velocity 0) slot by slot."""
    num_hinges = len(hinge_qpos)
    angle, rate = np.zeros(num_hinges + 1), np.zeros(num_hinges + 1)  # last: the padding
    for slot in range(qpos.shape[0]):
        for h in range(num_hinges):
            angle[h] = qpos[slot, hinge_qpos[h]] - qpos0[hinge_qpos[h]]
            rate[h] = qvel[slot, hinge_dofs[h]]
        com_x = com_z = velocity_x = velocity_z = 0.0
        for body in range(chains.shape[0]):
            phi = phi_rate = 0.0
            for hinge in chains[body]:
                phi += angle[hinge]
                phi_rate += rate[hinge]
            cos, sin = math.cos(phi), math.sin(phi)
            a_x, a_z = offsets[body, 0], offsets[body, 1]
            # R(phi) a = (cos a_x + sin a_z, cos a_z - sin a_x);
            # d/dphi R(phi) a = (along_z, -along_x)
            along_x, along_z = cos * a_x + sin * a_z, cos * a_z - sin * a_x
            com_x += along_x
            com_z += along_z
            velocity_x += phi_rate * along_z
            velocity_z -= phi_rate * along_x
        com_x += origin[0]
        com_z += origin[2]
        for s in range(len(slide_qpos)):
            shift = qpos[slot, slide_qpos[s]] - qpos0[slide_qpos[s]]
            com_x += slide_axes[s, 0] * shift
            com_z += slide_axes[s, 1] * shift
            velocity_x += slide_axes[s, 0] * qvel[slot, slide_dofs[s]]
            velocity_z += slide_axes[s, 1] * qvel[slot, slide_dofs[s]]
        com[slot, 0], com[slot, 1], com[slot, 2] = com_x, origin[1], com_z
        velocity[slot, 0], velocity[slot, 2] = velocity_x, velocity_z
