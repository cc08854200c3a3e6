"""Videos of adaptation: one rollout per task before adaptation and after each inner step.

The policy is adapted as in evaluation (:func:`metarl.evaluation.adaptation_steps`: a batch of
trajectories per task and step, the agent's inner update).  The video then shows one rollout of
each adapted policy taking its *mean* action (no exploration noise), so the clip shows what the
policy has learnt rather than noise.  The clips are laid out as a grid (rows = tasks, columns =
0..K steps), every cell labelled with its task (``family.describe_task``) and its return so far.

MuJoCo families are rendered offscreen with MuJoCo's renderer (``MUJOCO_GL=egl`` by default,
``osmesa`` for software rendering; when it fails, the error names a backend that works here),
shadows and reflections off; 2D navigation is drawn directly:
the goal, the path so far and the point.  Videos are encoded with ffmpeg (imageio-ffmpeg) at the
environment's ``render_fps``.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import imageio.v2 as imageio
import mujoco
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import envs
from agents.maml_trpo import MAMLTRPO
from envs.mujoco_core import BatchedLocomotionEnv
from envs.navigation import BatchedNavigation2D, Navigation2D
from metarl.config import Config
from metarl.evaluation import (
    AdaptationSettings,
    adaptation_steps,
    held_out_family,
    held_out_seeds,
)
from metarl.policies import GaussianMLPPolicy, Params
from metarl.sampling import BatchSampler

LABEL_HEIGHT = 30
DEFAULT_SIZE = 240


class RenderError(RuntimeError):
    """Offscreen rendering is unavailable, or the family cannot be drawn (one-line message)."""


class Painter(Protocol):
    """Draws every slot of a batched environment at its current state."""

    def paint(self, env: envs.BatchedEnv) -> list[np.ndarray]: ...

    def close(self) -> None: ...


class MujocoPainter:
    """Offscreen MuJoCo frames from the tracking camera, without shadows or reflections."""

    def __init__(self, env: BatchedLocomotionEnv, size: int) -> None:
        model = env.sim.model
        try:
            self.renderer = mujoco.Renderer(model, size, size)
        except Exception as error:  # noqa: BLE001 - any backend failure means the same to users
            raise RenderError(rendering_failure(error)) from None
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self.model = model
        self.data = mujoco.MjData(model)

    def paint(self, env: envs.BatchedEnv) -> list[np.ndarray]:
        assert isinstance(env, BatchedLocomotionEnv)
        frames = []
        for state in env.sim.state:
            mujoco.mj_setState(self.model, self.data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
            mujoco.mj_forward(self.model, self.data)
            self.renderer.update_scene(self.data, camera="track")
            frames.append(self.renderer.render())
        return frames

    def close(self) -> None:
        self.renderer.close()


class NavigationPainter:
    """The plane ``[-2g, 2g]²`` (g = goal range): goal (green), path so far and point (blue)."""

    def __init__(self, env: BatchedNavigation2D, goal_range: float, size: int) -> None:
        self.size = size
        self.scale = size / (4 * goal_range)
        self.paths: list[list[tuple[float, float]]] = [[self.pixel((0.0, 0.0))] for _ in env.goals]
        self.background = [self._background(goal) for goal in env.goals]

    def pixel(self, point: tuple[float, float] | np.ndarray) -> tuple[float, float]:
        return (self.size / 2 + point[0] * self.scale, self.size / 2 - point[1] * self.scale)

    def _background(self, goal: np.ndarray) -> Image.Image:
        image = Image.new("RGB", (self.size, self.size), "white")
        draw = ImageDraw.Draw(image)
        middle = self.size / 2
        draw.line([(0, middle), (self.size, middle)], fill=(225, 225, 225))
        draw.line([(middle, 0), (middle, self.size)], fill=(225, 225, 225))
        x, y = self.pixel(goal)
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(40, 170, 60))
        return image

    def paint(self, env: envs.BatchedEnv) -> list[np.ndarray]:
        assert isinstance(env, BatchedNavigation2D)
        frames = []
        for path, background, position in zip(self.paths, self.background, env.position):
            path.append(self.pixel(position))
            image = background.copy()
            draw = ImageDraw.Draw(image)
            draw.line(path, fill=(120, 150, 220), width=2)
            x, y = path[-1]
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(20, 60, 200))
            frames.append(np.asarray(image))
        return frames

    def close(self) -> None:
        """Nothing to release."""


GL_BACKENDS = ("egl", "osmesa")
_PROBE = "import mujoco; mujoco.Renderer(mujoco.MjModel.from_xml_string('<mujoco/>'), 8, 8)"


def gl_backend_works(name: str) -> bool:
    """Whether a ``mujoco.Renderer`` can be created with ``MUJOCO_GL=name`` (the backend is
    fixed when mujoco is imported, so each is tried in a fresh interpreter)."""
    environ = {**os.environ, "MUJOCO_GL": name}
    probe = subprocess.run([sys.executable, "-c", _PROBE], env=environ, capture_output=True)
    return probe.returncode == 0


def rendering_failure(error: Exception) -> str:
    """One line: why rendering failed and which ``MUJOCO_GL`` to use instead, if any works."""
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    current = os.environ.get("MUJOCO_GL", "")
    working = [name for name in GL_BACKENDS if name != current and gl_backend_works(name)]
    advice = (
        f"MUJOCO_GL={working[0]} works here: rerun with it set"
        if working
        else "neither MUJOCO_GL=egl (needs libEGL) nor MUJOCO_GL=osmesa (needs libOSMesa) works"
    )
    return f"offscreen MuJoCo rendering failed with MUJOCO_GL={current} ({reason}); {advice}"


def make_painter(family: envs.TaskFamily, env: envs.BatchedEnv, size: int) -> Painter:
    """The painter for ``family``'s environments."""
    if isinstance(env, BatchedLocomotionEnv):
        return MujocoPainter(env, size)
    if isinstance(env, BatchedNavigation2D) and isinstance(family, Navigation2D):
        return NavigationPainter(env, family.goal_range, size)
    raise RenderError(f"{family.name}: no renderer for {type(env).__name__}")


def label_strip(width: int, lines: tuple[str, str]) -> np.ndarray:
    """A white strip with two lines of text, ``[LABEL_HEIGHT, width, 3]``."""
    image = Image.new("RGB", (width, LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    draw.text((4, 2), lines[0], fill="black", font=font)
    draw.text((4, 15), lines[1], fill="black", font=font)
    return np.asarray(image)


@functools.cache
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=11)


def grid(cells: list[np.ndarray], num_rows: int) -> np.ndarray:
    """Cells in row-major order tiled into one image with grey separators, padded to even
    dimensions (as H.264 with 4:2:0 chroma requires)."""
    num_cols = len(cells) // num_rows
    height, width, _ = cells[0].shape
    total_height, total_width = num_rows * (height + 1) + 1, num_cols * (width + 1) + 1
    shape = (total_height + total_height % 2, total_width + total_width % 2, 3)
    image = np.full(shape, 160, np.uint8)
    for index, cell in enumerate(cells):
        row, col = divmod(index, num_cols)
        top, left = 1 + row * (height + 1), 1 + col * (width + 1)
        image[top : top + height, left : left + width] = cell
    return image


def slot_parameters(policy: GaussianMLPPolicy, steps: list[Params], num_tasks: int) -> Params:
    """Parameters of every (task, step) slot, task-major: leading dimension ``tasks × steps``."""
    dims = {name: p.dim() for name, p in policy.meta_parameters().items()}

    def per_task(p: torch.Tensor, dim: int) -> torch.Tensor:
        p = p.detach().cpu().float()
        return p if p.dim() > dim else p.expand(num_tasks, *p.shape)

    return {
        name: torch.stack([per_task(params[name], dim) for params in steps], dim=1).flatten(0, 1)
        for name, dim in dims.items()
    }


@dataclass
class VideoStats:
    """What was written, and how long it took."""

    path: Path
    num_frames: int
    fps: int
    seconds_render: float  # drawing / rendering the cells only
    seconds_total: float  # rollouts, drawing, labels and encoding (adaptation excluded)
    returns: list[list[float]]  # [task][step] return of the displayed rollout


def record_adaptation(
    config: Config,
    policy: GaussianMLPPolicy,
    settings: AdaptationSettings,
    path: Path,
    size: int = DEFAULT_SIZE,
) -> VideoStats:
    """Adapt ``policy`` to ``settings.num_tasks`` held-out tasks and write the grid video."""
    family = held_out_family(config, settings.seed)
    tasks = family.sample_tasks(settings.num_tasks)
    seeds = held_out_seeds(settings.seed)
    sampler = BatchSampler(family, settings.trajectories(config), seeds["sampler"])
    agent = MAMLTRPO(policy, config.algorithm)
    steps = adaptation_steps(agent, sampler, tasks, settings.step_sizes(config))
    params = slot_parameters(policy, [p for p, _ in steps], len(tasks))
    env = family.make_batched_env(len(tasks) * len(steps))
    env.set_tasks([task for task in tasks for _ in steps])
    try:
        painter = make_painter(family, env, size)
        try:
            rows = [family.describe_task(task) for task in tasks]
            rng = np.random.default_rng(seeds["rollout"])
            return write_rollouts(env, painter, policy, params, rows, rng, path)
        finally:
            painter.close()
    finally:
        env.close()


def write_rollouts(
    env: envs.BatchedEnv,
    painter: Painter,
    policy: GaussianMLPPolicy,
    params: Params,
    rows: list[str],
    rng: np.random.Generator,
    path: Path,
) -> VideoStats:
    """Roll out every slot's mean action for one episode and write one grid frame per step:
    a row per task (captioned ``rows``), a column per number of inner steps."""
    num_cols = env.num_envs // len(rows)
    fps = int(env.metadata.get("render_fps", 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    returns = np.zeros(env.num_envs)
    seconds_render = 0.0
    start = time.perf_counter()
    observation = env.reset(rng)
    writer = imageio.get_writer(
        path, fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error"
    )
    try:
        for _ in range(env.horizon):
            with torch.no_grad():
                inputs = torch.from_numpy(observation).float().unsqueeze(1)
                mean, _ = policy.mean_and_log_std(inputs, params)
            result = env.step(mean.squeeze(1).double().numpy())
            observation = result.observation
            returns += result.reward
            render_start = time.perf_counter()
            images = painter.paint(env)
            seconds_render += time.perf_counter() - render_start
            cells = [
                labelled(image, rows[i // num_cols], i % num_cols, float(returns[i]))
                for i, image in enumerate(images)
            ]
            writer.append_data(grid(cells, len(rows)))
    finally:
        writer.close()
    return VideoStats(
        path=path,
        num_frames=env.horizon,
        fps=fps,
        seconds_render=seconds_render,
        seconds_total=time.perf_counter() - start,
        returns=returns.reshape(len(rows), num_cols).tolist(),
    )


def labelled(image: np.ndarray, task: str, num_steps: int, episode_return: float) -> np.ndarray:
    """``image`` under a strip naming the task, the number of inner steps and the return."""
    steps = f"{num_steps} step{'' if num_steps == 1 else 's'}"
    strip = label_strip(image.shape[1], (task, f"{steps}, return {episode_return:.1f}"))
    return np.concatenate([strip, image])
