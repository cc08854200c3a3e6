"""``metarl video``: grid videos of rollouts before and after adaptation, decodable mp4."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from metarl.agents.common.policies import GaussianMLPPolicy
from metarl.cli import main
from metarl.video import LABEL_HEIGHT, slot_parameters
from tests.tiny_runs import train_tiny_run


def decode(path: Path) -> tuple[list[np.ndarray], float]:
    reader = imageio.get_reader(path)
    try:
        return list(reader.iter_data()), reader.get_meta_data()["fps"]
    finally:
        reader.close()


def grid_shape(num_rows: int, num_cols: int, size: int) -> tuple[int, int, int]:
    """Cells of ``size`` plus label strip, 1-pixel separators, rounded up to even."""
    height = num_rows * (size + LABEL_HEIGHT + 1) + 1
    width = num_cols * (size + 1) + 1
    return height + height % 2, width + width % 2, 3


def test_navigation_grid_has_one_frame_per_step(tmp_path: Path) -> None:
    run_dir = train_tiny_run(tmp_path / "run")
    out = tmp_path / "nav.mp4"
    args = ["--tasks", "2", "--steps", "2", "--trajectories", "2", "--size", "64"]
    assert main(["video", str(run_dir), *args, "--out", str(out)]) == 0
    frames, fps = decode(out)
    assert len(frames) == 10  # the horizon
    assert frames[0].shape == grid_shape(2, 3, 64)
    assert fps == 30
    assert not np.array_equal(frames[0], frames[-1])  # the points move


@pytest.fixture(scope="module")
def cheetah_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(
        tmp_path_factory.mktemp("video") / "run",
        "--set",
        "env.family=HalfCheetahDir",
        "--set",
        "env.kwargs={horizon: 20}",
        "--iterations",
        "1",
    )


def test_half_cheetah_clip_renders(cheetah_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "cheetah.mp4"
    args = ["--tasks", "1", "--steps", "1", "--trajectories", "2", "--size", "96"]
    assert main(["video", str(cheetah_run), *args, "--out", str(out)]) == 0
    frames, fps = decode(out)
    assert len(frames) == 20
    assert frames[0].shape == grid_shape(1, 2, 96)
    assert fps == 100  # original preset: dt = 0.01 s
    scene = frames[-1][LABEL_HEIGHT + 1 :]
    assert scene.std() > 10  # a rendered scene, not a blank frame


def test_broken_gl_backend_names_one_that_works(cheetah_run: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "metarl",
            "video",
            str(cheetah_run),
            "--out",
            str(tmp_path / "x.mp4"),
        ],
        env={**os.environ, "MUJOCO_GL": "glfw", "DISPLAY": ""},  # no display: glfw cannot work
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("metarl video: error: offscreen MuJoCo rendering failed")
    assert last_line.endswith("MUJOCO_GL=egl works here: rerun with it set")
    assert not (tmp_path / "x.mp4").exists()


def test_slot_parameters_are_task_major() -> None:
    policy = GaussianMLPPolicy(2, 2, (3,))
    shared = {name: torch.zeros_like(p) for name, p in policy.meta_parameters().items()}
    adapted = {
        name: torch.arange(1.0, 3.0).view(2, *[1] * p.dim()).expand(2, *p.shape)
        for name, p in policy.meta_parameters().items()
    }
    slots = slot_parameters(policy, [shared, adapted], num_tasks=2)
    # slot = task * num_steps + step: (task 0, step 0), (0, 1), (1, 0), (1, 1)
    assert slots["log_std"][:, 0].tolist() == [0.0, 1.0, 0.0, 2.0]
    assert slots["layers.0.weight"].shape == (4, 3, 2)
