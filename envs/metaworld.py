"""Meta-World's meta-learning benchmarks ML1 and ML10 as task families (Yu et al. 2019;
Meta-World+, McLean et al. 2025), on the same sampler, evaluation and CLI as the others.

Needs Meta-World, installed without its MuJoCo pin (:data:`INSTALL_COMMAND`); importing this
module fixes Meta-World for current MuJoCo (:mod:`metarl.envs.metaworld_compat`).
"""

from __future__ import annotations

import difflib
import functools
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from metarl.envs.base import (
    RENDER_SIZE,
    BatchedEnv,
    StepResult,
    Task,
    TaskFamily,
    default_num_threads,
)
from metarl.envs.gym_env import FamilyEnv
from metarl.envs.metaworld_compat import (  # Meta-World, fixed, or the install hint
    ALL_V3_ENVIRONMENTS,
    INSTALL_COMMAND,
    MetaWorldTask,
    SawyerXYZEnv,
    metaworld,
)
from metarl.envs.subprocess_env import SubprocessBatchedEnv

MAX_HORIZON = SawyerXYZEnv.max_path_length
"""Meta-World's episode length (500 steps), the longest horizon its environments allow."""
CAMERA = "corner"
"""The camera videos are rendered from: the table seen from a front corner.  Meta-World mounts
it upside down, so its frames are turned by 180 degrees."""


@functools.cache
def benchmark_splits(benchmark: str, env_name: str, seed: int) -> tuple[list[Task], list[Task]]:
    """The train and test tasks of Meta-World's ``benchmark`` (``"ML1"`` of ``env_name``, or
    ``"ML10"``), its goals drawn with ``seed``, as metarl tasks."""
    made = metaworld.ML1(env_name, seed=seed) if benchmark == "ML1" else metaworld.ML10(seed=seed)
    return [_as_task(t) for t in made.train_tasks], [_as_task(t) for t in made.test_tasks]


def _as_task(task: MetaWorldTask) -> Task:
    data = pickle.loads(task.data)
    return {"env": task.env_name, "rand_vec": [float(v) for v in data["rand_vec"]]}


def metaworld_task(task: Task) -> MetaWorldTask:
    """``task`` as Meta-World's ``set_task`` takes it: goal hidden, as in its ML benchmarks."""
    data = {
        "rand_vec": np.asarray(task["rand_vec"], dtype=np.float64),
        "env_cls": ALL_V3_ENVIRONMENTS[task["env"]],
        "partially_observable": True,
    }
    return MetaWorldTask(env_name=task["env"], data=pickle.dumps(data))


class MetaWorldFamily(TaskFamily):
    """The tasks of a Meta-World benchmark: a train split to meta-train on and a test split
    that held-out evaluation draws from (:meth:`sample_test_tasks`).

    Tasks are drawn from a split without replacement (with it only where a batch asks for more
    tasks of an environment than the split has), in equal numbers from each of its
    environments, the remainder going to environments picked at random: each meta-batch covers
    the benchmark's environments evenly, as garage's ``MetaWorldTaskSampler`` does.
    """

    task_dim = 0
    render_modes = ("rgb_array",)

    def __init__(self, seed: int | None, benchmark_seed: int, horizon: int) -> None:
        super().__init__(seed)
        if not isinstance(benchmark_seed, int) or benchmark_seed < 0:
            raise ValueError(f"benchmark_seed must be an integer >= 0, got {benchmark_seed!r}")
        if not isinstance(horizon, int) or not 1 <= horizon <= MAX_HORIZON:
            raise ValueError(f"horizon must be an integer in [1, {MAX_HORIZON}], got {horizon!r}")
        self.benchmark_seed = benchmark_seed
        self.horizon = horizon

    def splits(self) -> tuple[list[Task], list[Task]]:
        """Copies of the benchmark's train and test tasks (built on first use: seconds)."""
        train, test = self._splits()
        return [_copy(task) for task in train], [_copy(task) for task in test]

    def _splits(self) -> tuple[list[Task], list[Task]]:
        raise NotImplementedError

    def sample_tasks(self, num_tasks: int, rng: np.random.Generator | None = None) -> list[Task]:
        return _draw_evenly(self._splits()[0], num_tasks, self.rng if rng is None else rng)

    def sample_test_tasks(
        self, num_tasks: int, rng: np.random.Generator | None = None
    ) -> list[Task]:
        return _draw_evenly(self._splits()[1], num_tasks, self.rng if rng is None else rng)

    def check_task(self, task: Any) -> Task:
        train, test = self._splits()
        lengths = {t["env"]: len(t["rand_vec"]) for t in [*train, *test]}
        if not isinstance(task, dict) or sorted(task) != ["env", "rand_vec"]:
            raise ValueError(f"a {self.name} task is a dict with keys env, rand_vec, got {task!r}")
        if task["env"] not in lengths:
            raise ValueError(f"a {self.name} task's env is one of {sorted(lengths)}, got {task!r}")
        try:
            rand_vec = np.asarray(task["rand_vec"], dtype=np.float64)
        except (TypeError, ValueError):
            rand_vec = np.zeros(0)
        if rand_vec.shape != (lengths[task["env"]],):
            raise ValueError(
                f"a {task['env']} task's rand_vec holds {lengths[task['env']]} numbers, "
                f"got {task['rand_vec']!r}"
            )
        return {"env": task["env"], "rand_vec": rand_vec.tolist()}

    def describe_task(self, task: Task) -> str:
        """The skill and its random vector (object and goal positions; their layout depends on
        the skill)."""
        return f"{task['env']} ({', '.join(f'{v:+.2f}' for v in task['rand_vec'])})"

    def make_batched_env(self, num_envs: int, num_threads: int | None = None) -> BatchedEnv:
        """Stepped in ``num_threads`` worker processes (``None``: one per core; one: in this
        process), Meta-World's environments being Python code."""
        workers = min(num_envs, num_threads or default_num_threads())
        make_block = functools.partial(MetaWorldBatchedEnv, horizon=self.horizon)
        if workers == 1:
            return make_block(num_envs)
        return SubprocessBatchedEnv(make_block, num_envs, workers)


def _draw_evenly(split: Sequence[Task], num_tasks: int, rng: np.random.Generator) -> list[Task]:
    """``num_tasks`` tasks of ``split``: each skill's share (equal, the remainder to skills
    picked at random) drawn without replacement, again from the start once a skill's tasks are
    used up; returned in random order."""
    by_env: dict[str, list[Task]] = {}
    for task in split:
        by_env.setdefault(task["env"], []).append(task)
    names = list(by_env)
    counts = np.full(len(names), num_tasks // len(names))
    counts[rng.choice(len(names), num_tasks % len(names), replace=False)] += 1
    drawn = []
    for name, count in zip(names, counts):
        pool = by_env[name]
        rounds = -(-int(count) // len(pool))
        order = np.concatenate([[], *(rng.permutation(len(pool)) for _ in range(rounds))])
        order = order[:count].astype(int)
        drawn += [_copy(pool[index]) for index in order]
    return [drawn[index] for index in rng.permutation(len(drawn))]


def _copy(task: Task) -> Task:
    return {"env": task["env"], "rand_vec": list(task["rand_vec"])}


class MetaWorldML1(MetaWorldFamily):
    """One Meta-World manipulation skill, tasks differing by object and goal positions (ML1).

    ## Description
    A simulated Sawyer arm on a table must perform ``env_name`` (``reach-v3``, ``push-v3``,
    ``pick-place-v3``, any of Meta-World's 50 V3 skills).  A task fixes the positions of the
    objects and of the goal, which the policy does not observe.  The benchmark has 50 train
    tasks and 50 test tasks, positions drawn with ``benchmark_seed`` and ``benchmark_seed + 1``
    (Meta-World's rule: the test tasks of seed s are the train tasks of seed s + 1, so runs
    meant to be independent take seeds that differ by at least 2).

    ## Task distribution
    ``{"env": env_name, "rand_vec": [...]}``: Meta-World's random vector of the task (object
    position(s), then goal position), drawn from the train split in training and from the test
    split in held-out evaluation.

    ## Action space
    ``Box(-1, 1, (4,))``: end-effector displacement (x, y, z, scaled by 1/100) and gripper effort.

    ## Observation space
    ``(39,)``: hand position, gripper opening, up to two objects' positions and orientations,
    the same 18 values of the previous step, and a goal position that reads zero (hidden).

    ## Rewards
    Meta-World's shaped reward of the skill, in [0, 10] per step.  ``info["success"]`` is 1 on
    steps where the skill's success condition holds; an episode succeeds if it ever does.

    ## Starting state
    Fixed by the task: the arm at its home pose, objects at the task's positions.

    ## Episode end
    No termination; truncation after ``horizon`` steps (default and at most 500).

    ## Arguments
    | name           | type | default    | meaning                                       |
    |----------------|------|------------|-----------------------------------------------|
    | seed           | int  | None       | seed of the task generator (draws from the splits) |
    | env_name       | str  | "reach-v3" | the skill                                     |
    | benchmark_seed | int  | 0          | seed of the benchmark's train and test positions |
    | horizon        | int  | 500        | maximum episode length                        |

    ## Version history
    * v0: Meta-World 3.1.1's V3 environments (MuJoCo fix applied).
    """

    name = "MetaWorldML1"

    def __init__(
        self,
        seed: int | None = None,
        env_name: str = "reach-v3",
        benchmark_seed: int = 0,
        horizon: int = MAX_HORIZON,
    ) -> None:
        super().__init__(seed, benchmark_seed, horizon)
        if env_name not in ALL_V3_ENVIRONMENTS:
            close = difflib.get_close_matches(str(env_name), ALL_V3_ENVIRONMENTS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"env_name must be a Meta-World V3 skill{hint}, got {env_name!r}")
        self.env_name = env_name

    def _splits(self) -> tuple[list[Task], list[Task]]:
        return benchmark_splits("ML1", self.env_name, self.benchmark_seed)


class MetaWorldML10(MetaWorldFamily):
    """Meta-World's ML10: meta-train on 10 skills, adapt to 5 others never seen in training.

    ## Description
    As :class:`MetaWorldML1`, with tasks from 10 train skills (reach, push, pick-place,
    door-open, drawer-close, button-press-topdown, peg-insert-side, window-open, sweep,
    basketball) and, in held-out evaluation, from 5 test skills (drawer-open, door-close,
    shelf-place, sweep-into, lever-pull); 50 position sets per skill.  The policy is not told
    the skill.

    ## Task distribution
    ``{"env": skill, "rand_vec": [...]}``, the skills of a batch in equal numbers.

    ## Action space, Observation space, Rewards, Starting state, Episode end
    As :class:`MetaWorldML1`.

    ## Arguments
    | name           | type | default | meaning                                         |
    |----------------|------|---------|-------------------------------------------------|
    | seed           | int  | None    | seed of the task generator                      |
    | benchmark_seed | int  | 0       | seed of the benchmark's positions               |
    | horizon        | int  | 500     | maximum episode length                          |

    ## Version history
    * v0: Meta-World 3.1.1's V3 environments (MuJoCo fix applied).
    """

    name = "MetaWorldML10"

    def __init__(
        self, seed: int | None = None, benchmark_seed: int = 0, horizon: int = MAX_HORIZON
    ) -> None:
        super().__init__(seed, benchmark_seed, horizon)

    def _splits(self) -> tuple[list[Task], list[Task]]:
        return benchmark_splits("ML10", "", self.benchmark_seed)


class MetaWorldBatchedEnv(BatchedEnv):
    """``num_envs`` Meta-World environments stepped one after another in this process; see
    :class:`MetaWorldML1`.  A slot keeps its environment object while its skill stays the same;
    objects freed by a change of skill are kept for later slots of that skill.  A slot that has
    taken ``horizon`` steps is not stepped again before its reset (Meta-World forbids it): it
    keeps its observation and gets zero reward."""

    observation_dim = 39
    action_dim = 4
    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(self, num_envs: int, horizon: int = MAX_HORIZON) -> None:
        super().__init__(num_envs)
        self.horizon = horizon
        self._envs: list[SawyerXYZEnv | None] = [None] * num_envs
        self._slot_tasks: list[Task | None] = [None] * num_envs
        self._spare: dict[str, list[SawyerXYZEnv]] = {}
        self._observation = np.zeros((num_envs, self.observation_dim))
        self._renderers: dict[tuple[int, int], Any] = {}

    def _on_tasks_set(self) -> None:
        for slot, task in enumerate(self.tasks):
            old, env = self._slot_tasks[slot], self._envs[slot]
            if old == task:
                continue
            if env is None or old is None or old["env"] != task["env"]:
                if env is not None and old is not None:
                    self._spare.setdefault(old["env"], []).append(env)
                env = self._spare_or_new(task["env"])
                self._envs[slot] = env
            env.set_task(metaworld_task(task))
            self._slot_tasks[slot] = dict(task)

    def _spare_or_new(self, name: str) -> SawyerXYZEnv:
        if self._spare.get(name):
            return self._spare[name].pop()
        env = ALL_V3_ENVIRONMENTS[name]()
        env.max_path_length = self.horizon
        return env

    def _slot_envs(self) -> list[SawyerXYZEnv]:
        if not self.tasks:
            raise RuntimeError("set_tasks must be called before reset")
        return self._envs  # type: ignore[return-value]

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        for slot, env in enumerate(self._slot_envs()):
            self._observation[slot] = env.reset()[0]
        self.alive[:] = True
        return self._observation.copy()

    def reset_slots(
        self, slots: np.ndarray, tasks: Sequence[Task], rng: np.random.Generator
    ) -> np.ndarray:
        index = self._assign_tasks(slots, tasks)
        envs = self._slot_envs()
        for slot in index:
            self._observation[slot] = envs[slot].reset()[0]
        self.alive[index] = True
        return self._observation.copy()

    def step(self, action: np.ndarray) -> StepResult:
        action = np.clip(action, -1.0, 1.0)
        reward, success = np.zeros(self.num_envs), np.zeros(self.num_envs)
        for slot, env in enumerate(self._slot_envs()):
            # an ended slot (end_slots), or one past the horizon, stays as it is
            if self.alive[slot] and env.curr_path_length < self.horizon:
                observation, reward[slot], _, _, info = env.step(action[slot])
                self._observation[slot] = observation
                success[slot] = float(info["success"])
        terminated = np.zeros(self.num_envs, dtype=bool)
        return StepResult(self._observation.copy(), reward, terminated, {"success": success})

    def render(self, index: int = 0, size: int = RENDER_SIZE) -> np.ndarray:
        from metarl.envs.mujoco_core import offscreen_renderer

        env = self._slot_envs()[index]
        key = (id(env.model), size)
        if key not in self._renderers:
            self._renderers[key] = offscreen_renderer(env.model, size)
        renderer = self._renderers[key]
        renderer.update_scene(env.data, camera=CAMERA)
        frame: np.ndarray = np.ascontiguousarray(renderer.render()[::-1, ::-1])
        return frame

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        for env in [*self._envs, *(e for spare in self._spare.values() for e in spare)]:
            if env is not None:
                env.close()


class MetaWorldML1Env(FamilyEnv):
    """``metarl/MetaWorldML1-v0``: one task of :class:`MetaWorldML1`."""

    family_class = MetaWorldML1


class MetaWorldML10Env(FamilyEnv):
    """``metarl/MetaWorldML10-v0``: one task of :class:`MetaWorldML10`."""

    family_class = MetaWorldML10


__all__ = [
    "INSTALL_COMMAND",
    "MetaWorldBatchedEnv",
    "MetaWorldFamily",
    "MetaWorldML1",
    "MetaWorldML10",
    "MetaWorldML1Env",
    "MetaWorldML10Env",
]
