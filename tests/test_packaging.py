"""The built wheel installs one top-level package, ``metarl``, whose import registers the
gymnasium ids and which carries the bundled configs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.sources import copy_sources

CHECK_INSTALLED = """
import importlib.resources, sys
import gymnasium as gym
import metarl
assert metarl.__file__.startswith(sys.argv[1]), metarl.__file__
env = gym.make("metarl/HalfCheetahVel-v0")
env.reset(seed=0)
configs = importlib.resources.files("metarl.configs")
assert configs.joinpath("halfcheetah_vel.yaml").is_file()
import metarl.agents.maml_trpo, metarl.envs.mujoco_core
for module in (metarl.envs, metarl.agents.maml_trpo, metarl.envs.mujoco_core):
    assert module.__file__.startswith(sys.argv[1]), module.__file__
print("ok")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = copy_sources(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("metarl-*.whl")
    return built


@pytest.mark.slow
def test_wheel_has_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"metarl"}
    for folder in ("envs", "agents", "agents/common", "configs"):
        assert f"metarl/{folder}/__init__.py" in names
    assert "metarl/configs/navigation.yaml" in names


@pytest.mark.slow
def test_installed_wheel_registers_the_environments(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [sys.executable, "-c", CHECK_INSTALLED, str(target)],
        cwd=tmp_path,  # not the repository: the installed copy must be the one imported
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
