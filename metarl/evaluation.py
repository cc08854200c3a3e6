"""The paper's evaluation protocol: return on held-out tasks after 0, 1, ..., K gradient steps.

For N held-out tasks, sample M trajectories per task with the meta-policy θ, take an inner step
``θ'_k = θ - α ∇L_k`` (α = ``inner_lr`` for the first step, ``later_inner_lr`` for the
following ones: by default α/2, α/100 for Ant direction, as the authors' test scripts),
re-sample, and so on.  The result is the average undiscounted return per trajectory of every
task after each step, summarised as mean and standard error over tasks.

All tasks × trajectories of a step are one batch of the run's sampler (``sampler``: local, or on
Ray, as :func:`~metarl.components.build_sampler` builds it), and the inner step is the one
training takes, MAML-TRPO's and Reptile's alike
(:meth:`PolicyGradientAdaptation.prepare` then :meth:`PolicyGradientAdaptation.inner_step`).
Held-out tasks come from a task generator seeded by ``(seed, HELD_OUT_SALT)``, a stream no
training run draws from, and from the test split of families that have one (Meta-World).
Videos (:mod:`metarl.video`) adapt with the same routine, :func:`adapt_to_held_out_tasks`.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from metarl import envs
from metarl.agents.common.episodes import Episodes
from metarl.agents.common.policies import GaussianMLPPolicy, Params
from metarl.agents.common.sampling import FILL_LIMIT
from metarl.agents.maml_trpo import PolicyGradientAdaptation
from metarl.checkpoint import find_checkpoint, load_checkpoint, training_environment_change
from metarl.components import (
    build_policy,
    build_sampler,
    derived_seeds,
    held_out_seeds,
    make_family,
)
from metarl.config import Config, run_method, validate_config
from metarl.paper import METHODS, PAPER, later_ratio

EVALUATION_FILE = "evaluation.json"
TABLE_FILE = "evaluation.md"
PLOT_FILE = "evaluation.png"


@dataclass(frozen=True)
class AdaptationSettings:
    """How held-out tasks are drawn and adapted to (``None``: the run config's value)."""

    num_tasks: int = 40
    num_trajectories: int | None = None
    num_steps: int = 3
    inner_lr: float | None = None
    later_inner_lr: float | None = None
    # with later_inner_lr None, the later steps' α over the first's (None: the paper's test,
    # metarl.paper.later_ratio: 1/2, Ant direction 1/100)
    later_ratio: float | None = None
    seed: int = 0
    fill_steps: bool | None = None  # the sampler's step budget per task (sampler.fill_steps)

    def step_sizes(self, config: Config) -> list[float]:
        """α of each inner step: ``inner_lr`` first, then ``later_inner_lr`` (by default
        ``later_ratio`` × the first, as the paper's test of the family: α/2 but for Ant
        direction)."""
        first = config.algorithm.inner_lr if self.inner_lr is None else self.inner_lr
        ratio = later_ratio(config.env.family) if self.later_ratio is None else self.later_ratio
        later = first * ratio if self.later_inner_lr is None else self.later_inner_lr
        return [first] + [later] * (self.num_steps - 1) if self.num_steps else []

    def trajectories(self, config: Config) -> int:
        return self.num_trajectories or config.algorithm.num_trajectories

    def sampling_config(self, config: Config) -> Config:
        """``config`` with the sampler these settings adapt with."""
        if self.fill_steps is None or self.fill_steps == config.sampler.fill_steps:
            return config
        sampler = config.sampler.model_copy(update={"fill_steps": self.fill_steps})
        return config.model_copy(update={"sampler": sampler})


@dataclass
class LoadedRun:
    """A policy restored from a checkpoint, with the config it was trained under."""

    config: Config
    policy: GaussianMLPPolicy
    checkpoint: Path
    environment_change: str | None = None  # trained on another version of the family's env

    @property
    def name(self) -> str:
        """The run directory's name, then ``/last`` unless the checkpoint is the best one (or
        the checkpoint's stem outside a run directory)."""
        parent, stem = self.checkpoint.parent, self.checkpoint.stem
        if parent.name != "checkpoints":
            return stem
        return parent.parent.name if stem == "best" else f"{parent.parent.name}/{stem}"

    def output_dir(self) -> Path:
        """``RUN_DIR/evaluation`` (or ``evaluation/`` next to a loose checkpoint)."""
        parent = self.checkpoint.parent
        return (parent.parent if parent.name == "checkpoints" else parent) / "evaluation"


def load_run(path: Path, checkpoint: str = "best") -> LoadedRun:
    """The policy of a run directory (``checkpoints/{checkpoint}.pt``) or of a checkpoint file."""
    found = find_checkpoint(path, f"{checkpoint}.pt")
    state = load_checkpoint(found)
    config = validate_config(state["config"])
    policy = build_policy(config, make_family(config))
    policy.load_state_dict(state["policy"])
    return LoadedRun(config, policy, found, training_environment_change(state))


def held_out_family(config: Config, seed: int) -> envs.TaskFamily:
    """The run's task family with the held-out task generator of ``seed``."""
    return make_family(config, seed=held_out_seeds(seed)["tasks"])


@dataclass
class Adaptation:
    """A policy adapted to tasks (held-out ones, or the training stream's for a step-size
    choice): its parameters and trajectories after 0..K steps."""

    family: envs.TaskFamily
    tasks: list[envs.Task]
    steps: list[tuple[Params, Episodes]]


def adapt_to_held_out_tasks(
    config: Config, policy: GaussianMLPPolicy, settings: AdaptationSettings
) -> Adaptation:
    """Draw ``settings.num_tasks`` held-out tasks and adapt ``policy`` to each: sample the
    trajectories of every task with the current parameters, take the agent's inner step
    (α per step), and again, ``settings.num_steps`` times."""
    family = held_out_family(config, settings.seed)
    tasks = family.sample_test_tasks(settings.num_tasks)
    sampler_seed = held_out_seeds(settings.seed)["sampler"]
    return adapt_to_tasks(config, policy, settings, family, tasks, sampler_seed)


def adapt_to_tasks(
    config: Config,
    policy: GaussianMLPPolicy,
    settings: AdaptationSettings,
    family: envs.TaskFamily,
    tasks: list[envs.Task],
    sampler_seed: int,
) -> Adaptation:
    """Adapt ``policy`` to ``tasks`` of ``family`` as :func:`adapt_to_held_out_tasks` does."""
    config = settings.sampling_config(config)
    sampler = build_sampler(config, family, settings.trajectories(config), sampler_seed)
    agent = PolicyGradientAdaptation(policy, config.algorithm)
    params: Params = policy.meta_parameters()
    steps = []
    try:
        for step_size in [*settings.step_sizes(config), None]:
            episodes = sampler.sample(tasks, policy, params)
            steps.append((params, episodes))
            if step_size is not None:
                params = agent.inner_step(params, agent.prepare(episodes), step_size)
    finally:
        sampler.close()  # its environments' worker processes, where it has any
    return Adaptation(family, tasks, steps)


@dataclass
class Curve:
    """Mean ± spread of the return after 0..K steps, as drawn in plots and tables: the standard
    error over tasks, unless the label says otherwise (e.g. the deviation across seeds)."""

    label: str
    preset: str
    mean: list[float]
    spread: list[float]

    @classmethod
    def from_file(cls, path: Path) -> Curve:
        """The curve stored in an ``evaluation.json`` (raises ``OSError``/``ValueError``)."""
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not {"label", "preset", "mean", "stderr"} <= set(data):
            raise ValueError("expected keys label, preset, mean, stderr")
        return cls(data["label"], data["preset"], list(data["mean"]), list(data["stderr"]))


@dataclass
class Evaluation:
    """Per-task returns after each number of inner steps on held-out tasks."""

    label: str
    checkpoint: str
    config: dict[str, Any]
    family: str
    preset: str
    seed: int
    num_trajectories: int
    step_sizes: list[float]
    tasks: list[envs.Task]
    returns: list[list[float]]  # [step][task]
    method: str = "maml"  # or the baseline's: pretrained, oracle, random
    step_size_choice: dict[str, Any] | None = None  # StepSizeChoice, when chosen from a grid
    success: list[list[float]] | None = None  # [step][task] success rate (Meta-World)

    @property
    def steps(self) -> list[int]:
        return list(range(len(self.returns)))

    @property
    def mean(self) -> list[float]:
        return self.curve().mean

    @property
    def stderr(self) -> list[float]:
        """Standard error over tasks: sample std (ddof 1) / √N; 0 for a single task."""
        return self.curve().spread

    def curve(self) -> Curve:
        """Mean ± standard error over tasks of the return after 0..K steps."""
        return self._over_tasks(self.returns)

    def success_curve(self) -> Curve | None:
        """Mean ± standard error over tasks of the success rate after 0..K steps (families that
        report success)."""
        return None if self.success is None else self._over_tasks(self.success)

    def _over_tasks(self, per_step: list[list[float]]) -> Curve:
        label = self.label if self.method == "maml" else f"{self.label} ({self.method})"
        means = [float(np.mean(values)) for values in per_step]
        return Curve(label, self.preset, means, [standard_error(v) for v in per_step])

    def to_dict(self) -> dict[str, Any]:
        data = {**asdict(self), "steps": self.steps, "mean": self.mean, "stderr": self.stderr}
        if (success := self.success_curve()) is not None:
            data.update(success_mean=success.mean, success_stderr=success.spread)
        return data


def standard_error(values: Sequence[float]) -> float:
    """``std(values, ddof=1) / sqrt(len(values))`` (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


@dataclass
class StepSizeChoice:
    """The first step size chosen from a grid on tasks of the run's training stream."""

    grid: list[float]
    scores: list[float]  # per α: mean return after steps 1..K on those tasks
    chosen: float
    num_tasks: int
    tasks: str = "the first tasks of the run's training stream, never the held-out ones"


def choose_step_size(
    run: LoadedRun, settings: AdaptationSettings, grid: Sequence[float], num_tasks: int = 10
) -> StepSizeChoice:
    """Score each first step size of ``grid`` (later steps: ``later_ratio`` of it, or
    ``later_inner_lr``) by the mean return after steps 1..K on ``num_tasks`` tasks of the
    run's training stream, and choose the best: the honest way to tune a method's fine-tuning
    step size."""
    seeds = derived_seeds(run.config.train.seed)
    family = make_family(run.config, seed=seeds["tasks"])
    tasks = family.sample_tasks(num_tasks)
    scores = []
    for step_size in grid:
        trial = replace(settings, inner_lr=step_size, num_tasks=num_tasks)
        adapted = adapt_to_tasks(run.config, run.policy, trial, family, tasks, seeds["sampler"])
        scores.append(float(np.mean([e.mean_return() for _, e in adapted.steps[1:]])))
    return StepSizeChoice(list(grid), scores, grid[best_score(scores)], num_tasks)


def best_score(scores: Sequence[float]) -> int:
    """The index of the highest score, where a step size that diverged (NaN, ±inf) is never
    the best; an error if every one did."""
    finite = [k for k, score in enumerate(scores) if math.isfinite(score)]
    if not finite:
        raise ValueError(f"every step size of the grid gave a non-finite return: {scores}")
    return max(finite, key=scores.__getitem__)


def evaluate(
    run: LoadedRun, settings: AdaptationSettings, step_size_grid: Sequence[float] = ()
) -> Evaluation:
    """Adapt ``run``'s policy to held-out tasks per the paper's protocol (with the first step
    size chosen from ``step_size_grid`` by :func:`choose_step_size`, if given)."""
    config = settings.sampling_config(run.config)
    choice = None
    if step_size_grid:
        if settings.num_steps == 0:
            raise ValueError("a step size grid needs at least one gradient step")
        choice = choose_step_size(run, settings, step_size_grid)
        settings = replace(settings, inner_lr=choice.chosen)
    adapted = adapt_to_held_out_tasks(config, run.policy, settings)
    return Evaluation(
        label=run.name,
        checkpoint=str(run.checkpoint),
        config=config.to_dict(),
        family=config.env.family,
        preset=adapted.family.preset,
        seed=settings.seed,
        num_trajectories=settings.trajectories(config),
        step_sizes=settings.step_sizes(config),
        tasks=adapted.tasks,
        returns=[episodes.returns_per_task().tolist() for _, episodes in adapted.steps],
        method=run_method(config),
        step_size_choice=asdict(choice) if choice else None,
        success=success_per_step(adapted),
    )


def success_per_step(adapted: Adaptation) -> list[list[float]] | None:
    """Each task's success rate after each step (``[step][task]``), where the family reports
    success: an episode succeeds if success holds at any of its steps (Meta-World's rule)."""
    if adapted.steps[0][1].success is None:
        return None
    return [episodes.success_per_task().tolist() for _, episodes in adapted.steps]


def paper_curve(config: Config, preset: str) -> Curve:
    """The paper's published returns for the run's family and method, as a curve (no error
    bars); raises ``ValueError`` where the paper has none (other presets, AntGoal, Reptile)."""
    method = run_method(config)
    if method not in METHODS:
        raise ValueError(f"the MAML paper reports no {method} numbers")
    if preset != "original":
        raise ValueError(f"the paper's numbers hold for the original preset, not {preset!r}")
    if config.env.family not in PAPER:
        raise ValueError(f"the paper reports no {config.env.family} numbers")
    returns = list(PAPER[config.env.family].returns(method))
    return Curve(f"paper: {method}", "original", returns, [0.0] * len(returns))


def markdown_table(curves: Sequence[Curve], digits: int = 2) -> str:
    """One row per curve: return (or success rate) after each number of steps as
    ``mean ± stderr``."""
    num_steps = max(len(c.mean) for c in curves)
    header = ["run", "preset", *(f"{k} step{'' if k == 1 else 's'}" for k in range(num_steps))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for curve in curves:
        cells = [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(curve.mean, curve.spread)]
        cells += ["—"] * (num_steps - len(cells))
        lines.append("| " + " | ".join([curve.label, curve.preset, *cells]) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: Sequence[Curve], path: Path, title: str) -> None:
    """Return vs number of gradient steps, error bars = each curve's spread (PNG, Agg
    backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for curve in curves:
        axes.errorbar(
            range(len(curve.mean)),
            curve.mean,
            yerr=curve.spread,
            capsize=3,
            marker="o",
            label=f"{curve.label} ({curve.preset})",
        )
    axes.set_xlabel("number of gradient steps")
    axes.set_ylabel("average return")
    lines = (textwrap.fill(line, 64) for line in title.splitlines())  # the figure's width
    axes.set_title("\n".join(lines), fontsize=9)
    axes.set_xticks(range(max(len(curve.mean) for curve in curves)))
    axes.grid(alpha=0.3)
    # below the axes: inside, it can hide a single point (the oracle's)
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")


def filled_text(num_trajectories: int) -> str:
    """The step budget (``sampler.fill_steps``) in words, for ``num_trajectories`` per task."""
    return (
        f"where episodes end early, a task gets more, up to {FILL_LIMIT * num_trajectories}, "
        f"until it has {num_trajectories} × horizon steps"
    )


def write_evaluation(
    evaluation: Evaluation, out_dir: Path, compare: Sequence[Curve] = ()
) -> dict[str, Path]:
    """``evaluation.json``, ``evaluation.md`` and ``evaluation.png`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in (EVALUATION_FILE, TABLE_FILE, PLOT_FILE)}
    paths[EVALUATION_FILE].write_text(json.dumps(evaluation.to_dict(), indent=1) + "\n")
    curves = [evaluation.curve(), *compare]
    tasks = f"{evaluation.family}: {len(evaluation.tasks)} held-out tasks (seed {evaluation.seed})"
    sizes = ", ".join(f"{size:g}" for size in evaluation.step_sizes)
    sampling = f"{evaluation.num_trajectories} trajectories per task and step, α = {sizes}"
    if evaluation.config.get("sampler", {}).get("fill_steps"):
        sampling += f"; {filled_text(evaluation.num_trajectories)}"
    choice = evaluation.step_size_choice
    chosen = ""
    if choice is not None:
        scores = ", ".join(f"{a:g}: {v:.2f}" for a, v in zip(choice["grid"], choice["scores"]))
        chosen = (
            f"\n\nFirst step size chosen on {choice['num_tasks']} tasks of the training stream "
            f"(mean return after steps 1..K per α: {scores})."
        )
    success = ""
    if (success_curve := evaluation.success_curve()) is not None:
        success = "\nSuccess rate (an episode succeeds if success ever holds in it):\n\n"
        success += markdown_table([success_curve], digits=3)
    table = markdown_table(curves)
    paths[TABLE_FILE].write_text(f"{tasks}; {sampling}{chosen}\n\n{table}{success}")
    plot_curves(curves, paths[PLOT_FILE], f"{tasks}\n{sampling}")
    return paths
