"""Videos of adaptation: one rollout per task before adaptation and after each inner step.

The policy is adapted as in evaluation (:func:`metarl.evaluation.adapt_to_held_out_tasks`: a
batch of trajectories per task and step, the agent's inner step).  The video then shows one
rollout of each adapted policy taking its *mean* action (no exploration noise), so the clip shows
what the policy has learnt rather than noise.  The clips are laid out as a grid (rows = tasks,
columns = 0..K steps), every cell labelled with its task (``family.describe_task``) and its
return so far.

Every cell is drawn by the environment itself (``BatchedEnv.render``): MuJoCo families offscreen
by MuJoCo's renderer (EGL on a Linux machine without a display unless ``MUJOCO_GL`` says
otherwise; when rendering fails, the error names a backend that works here), 2D navigation as
the goal, the path so far and the point.  This module lays the cells out, labels them and
encodes them with ffmpeg (imageio-ffmpeg) at the environment's ``render_fps``.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from metarl import envs
from metarl.agents.common.policies import GaussianMLPPolicy, Params
from metarl.components import held_out_seeds
from metarl.config import Config
from metarl.errors import first_line
from metarl.evaluation import AdaptationSettings, adapt_to_held_out_tasks

LABEL_HEIGHT = 30
DEFAULT_SIZE = 240


class RenderError(RuntimeError):
    """Offscreen rendering is unavailable, or the family cannot be drawn (one-line message)."""


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
    reason = first_line(error)
    current = os.environ.get("MUJOCO_GL", "")
    working = [name for name in GL_BACKENDS if name != current and gl_backend_works(name)]
    advice = (
        f"MUJOCO_GL={working[0]} works here: rerun with it set"
        if working
        else "neither MUJOCO_GL=egl (needs libEGL) nor MUJOCO_GL=osmesa (needs libOSMesa) works"
    )
    return f"offscreen MuJoCo rendering failed with MUJOCO_GL={current} ({reason}); {advice}"


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
    adapted = adapt_to_held_out_tasks(config, policy, settings)
    tasks, steps = adapted.tasks, adapted.steps
    params = slot_parameters(policy, [p for p, _ in steps], len(tasks))
    env = adapted.family.make_batched_env(len(tasks) * len(steps))
    env.set_tasks([task for task in tasks for _ in steps])
    try:
        rows = [adapted.family.describe_task(task) for task in tasks]
        rng = np.random.default_rng(held_out_seeds(settings.seed)["rollout"])
        return write_rollouts(env, policy, params, rows, rng, path, size)
    finally:
        env.close()


def render_slots(env: envs.BatchedEnv, size: int) -> list[np.ndarray]:
    """Every slot of ``env`` drawn by the environment itself; a one-line :class:`RenderError`
    (naming a ``MUJOCO_GL`` that works, if any) when it cannot be drawn here."""
    try:
        return [env.render(index, size) for index in range(env.num_envs)]
    except envs.RenderError as error:
        raise RenderError(rendering_failure(error)) from None
    except NotImplementedError as error:
        raise RenderError(str(error)) from None


def write_rollouts(
    env: envs.BatchedEnv,
    policy: GaussianMLPPolicy,
    params: Params,
    rows: list[str],
    rng: np.random.Generator,
    path: Path,
    size: int,
) -> VideoStats:
    """Roll out every slot's mean action for one episode and write one grid frame per step:
    a row per task (captioned ``rows``), a column per number of inner steps."""
    num_cols = env.num_envs // len(rows)
    fps = int(env.metadata.get("render_fps", 30))
    returns = np.zeros(env.num_envs)
    seconds_render = 0.0
    start = time.perf_counter()
    observation = env.reset(rng)
    writer = None
    try:
        for _ in range(env.horizon):
            with torch.no_grad():
                inputs = torch.from_numpy(observation).float().unsqueeze(1)
                mean, _ = policy.mean_and_log_std(inputs, params)
            result = env.step(mean.squeeze(1).double().numpy())
            observation = result.observation
            returns += result.reward
            render_start = time.perf_counter()
            images = render_slots(env, size)
            seconds_render += time.perf_counter() - render_start
            cells = [
                labelled(image, rows[i // num_cols], i % num_cols, float(returns[i]))
                for i, image in enumerate(images)
            ]
            if writer is None:  # once a frame was drawn: a failure leaves no file behind
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = imageio.get_writer(
                    path, fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error"
                )
            writer.append_data(grid(cells, len(rows)))
    finally:
        if writer is not None:
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
