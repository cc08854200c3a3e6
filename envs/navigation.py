"""2D point navigation to a goal position (Finn et al. 2017, section 5.3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from metarl.envs.base import RENDER_SIZE, BatchedEnv, StepResult, Task, TaskFamily, uniform_goals


class Navigation2D(TaskFamily):
    """A point mass moves in the plane and must reach a goal it does not observe.

    ## Description
    The agent starts at the origin and moves by a bounded displacement each step.  Tasks differ
    by the goal position; the policy sees only its own position and must infer the goal from
    rewards.

    ## Task distribution
    ``{"goal": [g_x, g_y]}`` with ``g ~ U[-goal_range, goal_range]^2`` (default ``[-0.5, 0.5]^2``).

    ## Action space
    | index | meaning         | range   | effect                                |
    |-------|-----------------|---------|---------------------------------------|
    | 0     | x displacement  | [-1, 1] | clipped, times ``max_step`` (0.1)     |
    | 1     | y displacement  | [-1, 1] | clipped, times ``max_step`` (0.1)     |

    ## Observation space
    | index | meaning    | range      | unit |
    |-------|------------|------------|------|
    | 0     | position x | (-inf, inf)| m    |
    | 1     | position y | (-inf, inf)| m    |
    | 2-3   | goal x, y (``oracle=True`` only) | [-goal_range, goal_range] | m |

    ## Rewards
    ``reward = reward_distance = -‖position - goal‖₂`` measured after the move (Euclidean, not
    squared).  ``info["reward_distance"]`` carries the term.

    ## Starting state
    Position ``(0, 0)``, no noise.

    ## Episode end
    Termination when ``|x - g_x| < goal_tolerance`` and ``|y - g_y| < goal_tolerance``
    (default 0.01); truncation after ``horizon`` steps (default 100).

    ## Arguments
    | name           | type  | default | meaning                                    |
    |----------------|-------|---------|--------------------------------------------|
    | seed           | int   | None    | seed of the task generator                 |
    | goal_range     | float | 0.5     | goals drawn from ``U[-goal_range, goal_range]^2`` |
    | max_step       | float | 0.1     | displacement per step for an action of 1   |
    | goal_tolerance | float | 0.01    | per-axis distance that ends the episode    |
    | horizon        | int   | 100     | maximum episode length                     |
    | oracle         | bool  | False   | append the goal to the observation (the paper's oracle) |

    ## Version history
    * v0: initial version, as in the MAML paper's original code.
    """

    name = "Navigation2D"
    task_dim = 2
    render_modes = ("rgb_array",)

    def __init__(
        self,
        seed: int | None = None,
        goal_range: float = 0.5,
        max_step: float = 0.1,
        goal_tolerance: float = 0.01,
        horizon: int = 100,
        oracle: bool = False,
    ) -> None:
        super().__init__(seed, oracle)
        _require_positive(
            goal_range=goal_range, max_step=max_step, goal_tolerance=goal_tolerance, horizon=horizon
        )
        self.goal_range = goal_range
        self.max_step = max_step
        self.goal_tolerance = goal_tolerance
        self.horizon = int(horizon)

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator | None = None) -> list[Task]:
        return uniform_goals(self.rng if rng is None else rng, self.goal_range, num_tasks)

    def make_batched_env(self, num_envs: int, num_threads: int | None = None) -> BatchedEnv:
        """Stepped in numpy on the calling thread, whatever ``num_threads`` says."""
        return self.observed(
            BatchedNavigation2D(
                num_envs, self.max_step, self.goal_tolerance, self.horizon, self.goal_range
            )
        )


class BatchedNavigation2D(BatchedEnv):
    """``num_envs`` point masses, each with its own goal; see :class:`Navigation2D`.

    :meth:`render` draws a slot on the plane ``[-2g, 2g]²`` (g = ``goal_range``): its goal
    (green), its path since the reset and the point (blue)."""

    observation_dim = 2
    action_dim = 2
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        num_envs: int,
        max_step: float,
        goal_tolerance: float,
        horizon: int,
        goal_range: float = 0.5,
    ):
        super().__init__(num_envs)
        self.max_step = max_step
        self.goal_tolerance = goal_tolerance
        self.horizon = horizon
        self.goal_range = goal_range
        self.goals = np.zeros((num_envs, 2))
        self.position = np.zeros((num_envs, 2))
        self._path = [self.position]  # positions since the reset, for render()

    def _on_tasks_set(self) -> None:
        self.goals = np.array([task["goal"] for task in self.tasks], dtype=np.float64)

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        if not self.tasks:
            raise RuntimeError("set_tasks must be called before reset")
        self.position = np.zeros((self.num_envs, 2))
        self._path = [self.position]
        self.alive[:] = True
        return self.position.copy()

    def reset_slots(
        self, slots: np.ndarray, tasks: Sequence[Task], rng: np.random.Generator
    ) -> np.ndarray:
        self._assign_tasks(slots, tasks)
        self.position = np.where(slots[:, None], 0.0, self.position)
        self.alive = self.alive | slots
        return self.position.copy()

    def step(self, action: np.ndarray) -> StepResult:
        displacement = self.max_step * np.clip(action, -1.0, 1.0)
        alive = self.alive
        self.position = np.where(alive[:, None], self.position + displacement, self.position)
        self._path.append(self.position)
        if len(self._path) > self.horizon + 1:  # slots reset one by one: keep one episode's
            del self._path[0]
        offset = self.position - self.goals
        reward_distance = np.where(alive, -np.linalg.norm(offset, axis=1), 0.0)
        reached = np.all(np.abs(offset) < self.goal_tolerance, axis=1)
        terminated = alive & reached
        self.alive = alive & ~reached
        return StepResult(
            self.position.copy(), reward_distance, terminated, {"reward_distance": reward_distance}
        )

    def render(self, index: int = 0, size: int = RENDER_SIZE) -> np.ndarray:
        scale = size / (4 * self.goal_range)

        def pixel(point: np.ndarray) -> tuple[float, float]:
            return (size / 2 + point[0] * scale, size / 2 - point[1] * scale)

        image = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(image)
        draw.line([(0, size / 2), (size, size / 2)], fill=(225, 225, 225))
        draw.line([(size / 2, 0), (size / 2, size)], fill=(225, 225, 225))
        x, y = pixel(self.goals[index])
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], fill=(40, 170, 60))
        path = [pixel(position[index]) for position in self._path]
        if len(path) > 1:
            draw.line(path, fill=(120, 150, 220), width=2)
        x, y = path[-1]
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(20, 60, 200))
        return np.asarray(image)


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
