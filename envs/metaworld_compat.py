"""Meta-World, imported with the fix it needs on current MuJoCo.

Meta-World 3.1.1 pins ``mujoco==3.3.0``; metarl installs it without its dependencies (``pip
install --no-deps metaworld==3.1.1``) so that MuJoCo is not downgraded.  On newer MuJoCo one
thing breaks: ``SawyerMocapBase.reset_mocap_welds`` writes 11 values into each weld's
``model.eq_data`` row, which MuJoCo now makes 12 long (the last a flag that, when non-zero,
makes ``mj_setConst`` overwrite the weld's relative pose).  :func:`reset_mocap_welds` writes the
11 values and zeroes the rest.  It replaces Meta-World's method when this module is imported
(so in worker processes too), for the release it was written for only.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from typing import Any

import mujoco
import numpy as np

INSTALL_COMMAND = 'pip install "metarl[metaworld]" && pip install --no-deps metaworld==3.1.1'
"""How to install Meta-World next to metarl without downgrading MuJoCo."""
PATCHED_VERSION = "3.1.1"
"""The Meta-World release :func:`reset_mocap_welds` was written for."""

try:
    import metaworld
    import metaworld.sawyer_xyz_env as sawyer_xyz_env
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.sawyer_xyz_env import SawyerXYZEnv
    from metaworld.types import Task as MetaWorldTask
except ImportError as error:
    raise ImportError(f"Meta-World is not installed; install it with: {INSTALL_COMMAND}") from error

WELD_DATA = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0])
"""What Meta-World writes into each mocap weld: no offset, identity orientation, torque scale 5."""

original_reset_mocap_welds = sawyer_xyz_env.SawyerMocapBase.reset_mocap_welds


def reset_mocap_welds(env: Any) -> None:
    """Meta-World's ``reset_mocap_welds`` for ``eq_data`` rows of any length: its 11 values,
    then zeros."""
    model = env.model
    if model.nmocap > 0 and model.eq_data is not None:
        for i in range(model.eq_data.shape[0]):
            if model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                model.eq_data[i, : len(WELD_DATA)] = WELD_DATA
                model.eq_data[i, len(WELD_DATA) :] = 0.0


def installed_version() -> str:
    return importlib.metadata.version("metaworld")


if installed_version() == PATCHED_VERSION:
    sawyer_xyz_env.SawyerMocapBase.reset_mocap_welds = reset_mocap_welds  # type: ignore[method-assign,assignment]
else:
    warnings.warn(
        f"Meta-World {installed_version()} is installed; metarl's fix for current MuJoCo was "
        f"written for {PATCHED_VERSION} and is not applied",
        stacklevel=2,
    )

__all__ = [
    "ALL_V3_ENVIRONMENTS",
    "INSTALL_COMMAND",
    "PATCHED_VERSION",
    "MetaWorldTask",
    "SawyerXYZEnv",
    "metaworld",
    "reset_mocap_welds",
]
