"""``metarl reproduce TASK``: one row of the MAML paper's table, end to end.

Trains the bundled config of the task for each seed (resuming a run that was interrupted, keeping
one that is finished), evaluates each run's last checkpoint with the paper's protocol, and
rewrites the task's section of ``results.md`` with its table, figures and provenance (command,
seeds, commit, wall time, machine).  The figures and ``results/TASK.json`` sit beside it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from metarl.baselines import BaselineTrainer, total_steps
from metarl.checkpoint import atomic_write_bytes, load_checkpoint, resume_differences
from metarl.config import (
    Config,
    ConfigError,
    load_config,
    resolve_config_path,
    validate_config,
)
from metarl.evaluation import (
    AdaptationSettings,
    Curve,
    Evaluation,
    evaluate,
    filled_text,
    load_run,
    plot_curves,
    write_evaluation,
)
from metarl.logging import read_metrics
from metarl.paper import PAPER, PaperRow, later_ratio
from metarl.plotting import plot_learning_curves, read_run
from metarl.provenance import commit, machine
from metarl.rundir import claimed, directory_lock
from metarl.training import CONFIG_FILE, Trainer

# The paper's navigation "pretrained" was its MAML code with no inner step; the oracle is the same
# TRPO told the goal.  Its locomotion baselines were plain TRPO on all tasks: SB3's here.  Every
# task also gets "random": the untrained policy, fine-tuned.
NAVIGATION_BASELINES = {
    "pretrained": ("algorithm.num_inner_steps=0",),
    "oracle": ("algorithm.num_inner_steps=0", "env.kwargs.oracle=true"),
}
SB3_BASELINES = {
    "pretrained": ("baseline.method=pretrained",),
    "oracle": ("baseline.method=oracle", "env.kwargs.oracle=true"),
}


@dataclass(frozen=True)
class Task:
    """A row of the table: its title, bundled config, evaluation sampling and seeds."""

    title: str
    config: str  # bundled config
    family: str
    num_trajectories: int  # per task and step at evaluation
    seeds: tuple[int, ...] = (1,)
    # Baselines trained on the first seed: method -> config overrides (with a baseline section:
    # stable-baselines3's TRPO, metarl baseline; without: metarl's own loop).
    baselines: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(SB3_BASELINES))
    # first step sizes tried for the fine-tuned baselines (pretrained, random), chosen on tasks
    # of their training stream; MAML keeps its own α, as in the paper
    step_size_grid: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

    @property
    def fill_steps(self) -> bool:
        """Whether every method is evaluated with a step budget per task (``num_trajectories``
        × horizon, the authors' sampler): the bundled config's ``sampler.fill_steps``, whatever
        the runs' overrides, so that all rows of the table share one protocol."""
        return load_config(resolve_config_path(self.config)).sampler.fill_steps

    @property
    def paper(self) -> PaperRow | None:
        """The paper's row for the family (None for AntGoal, which it did not tabulate)."""
        return PAPER.get(self.family)


TASKS = {
    "navigation": Task(
        "2D navigation",
        "navigation",
        "Navigation2D",
        40,
        seeds=(1, 2, 3),
        baselines=NAVIGATION_BASELINES,
        step_size_grid=(0.1, 0.25, 0.5, 1.0, 2.0),
    ),
    "halfcheetah_vel": Task("HalfCheetah velocity", "halfcheetah_vel", "HalfCheetahVel", 20),
    "halfcheetah_dir": Task("HalfCheetah direction", "halfcheetah_dir", "HalfCheetahDir", 20),
    "ant_vel": Task("Ant velocity", "ant_vel", "AntVel", 20),
    "ant_dir": Task("Ant direction", "ant_dir", "AntDir", 40),
    "ant_goal": Task("Ant goal position", "ant_goal", "AntGoal", 20),
}
NUM_EVAL_TASKS = 40
NUM_EVAL_STEPS = 3
EVAL_SEED = 0


@dataclass
class SeedResult:
    seed: int
    run_dir: Path
    evaluation: Evaluation
    wall_seconds: float  # sum of the run's time_iteration: its compute time, resumes included


def run_config(task: Task, seed: int, overrides: Sequence[str]) -> Config:
    return load_config(resolve_config_path(task.config), [*overrides, f"train.seed={seed}"])


def saved_state(config: Config, run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint of ``run_dir`` (None for a new run); a run of another config, or a
    non-empty folder without a checkpoint, is an error, not overwritten."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        if run_dir.is_dir() and any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir}: not empty but holds no checkpoint; move it away")
        return None
    state = load_checkpoint(last)
    saved = validate_config(state["config"])
    differing = resume_differences(saved, config, state, whole_run=True)
    if config.baseline is not None:
        # a longer budget continues the run; a stable-baselines3 run (or the untrained
        # random policy) does not sample with metarl's sampler
        unused = ("baseline.total_steps", "sampler.")
        differing = [key for key in differing if not key.startswith(unused)]
    if differing:
        raise ConfigError(
            f"{run_dir} holds a run of another config (differs in {', '.join(differing)}); "
            "move it away or pass the same --set flags"
        )
    return state


@contextlib.contextmanager
def checked_runs(runs: dict[Path, Config]) -> Iterator[None]:
    """Every run folder of ``runs`` checked by :func:`saved_state`, then held by this process
    for the block (:func:`~metarl.rundir.claimed`): before any work."""
    for run_dir, config in runs.items():
        saved_state(config, run_dir)
    with contextlib.ExitStack() as held:
        for run_dir in runs:
            held.enter_context(claimed(run_dir, "--runs-dir"))
        yield


def train_or_resume(config: Config, run_dir: Path, progress: bool) -> None:
    """Train ``config`` in ``run_dir`` (MAML, or the baseline its ``baseline`` section names):
    from scratch, or resumed from its last checkpoint; a finished run is left as it is."""
    state = saved_state(config, run_dir)
    if config.baseline is not None:
        if state is not None:
            if config.baseline.method == "random" or state["env_steps"] >= total_steps(config):
                return
            baseline = BaselineTrainer.resume(run_dir, config, state)
        else:
            baseline = BaselineTrainer(config, run_dir)
            baseline.write_config()
        baseline.train(progress=progress)
        return
    if state is not None:
        if state["iteration"] >= config.train.num_iterations:
            return
        trainer = Trainer.resume(run_dir, config, state)
    else:
        trainer = Trainer(config, run_dir)
        trainer.write_config()
    trainer.train(config.train.num_iterations, progress=progress)
    plot_learning_curves([read_run(run_dir)], run_dir / "learning_curve.png")


def evaluate_run(
    task: Task,
    run_dir: Path,
    num_steps: int = NUM_EVAL_STEPS,
    step_size_grid: Sequence[float] = (),
    inner_lr: float | None = None,
) -> Evaluation:
    """The paper's protocol on the run's last checkpoint: 40 held-out tasks, 0..3 steps, the
    first of step size ``inner_lr`` (default: the run's α; chosen from ``step_size_grid`` on
    training-stream tasks, if given)."""
    settings = AdaptationSettings(
        num_tasks=NUM_EVAL_TASKS,
        num_trajectories=task.num_trajectories,
        num_steps=num_steps,
        inner_lr=inner_lr,
        seed=EVAL_SEED,
        fill_steps=task.fill_steps,
    )
    evaluation = evaluate(load_run(run_dir, "last"), settings, step_size_grid)
    write_evaluation(evaluation, run_dir / "evaluation")
    return evaluation


def trained_result(
    task: Task,
    seed: int,
    config: Config,
    run_dir: Path,
    progress: bool,
    step_size_grid: Sequence[float] = (),
    inner_lr: float | None = None,
) -> SeedResult:
    """``config`` trained (or resumed) in ``run_dir``, then evaluated by :func:`evaluate_run`."""
    train_or_resume(config, run_dir, progress)
    wall = sum(r.get("time_iteration") or 0.0 for r in read_metrics(run_dir))
    evaluation = evaluate_run(task, run_dir, step_size_grid=step_size_grid, inner_lr=inner_lr)
    return SeedResult(seed, run_dir, evaluation, wall)


def reproduce(
    name: str,
    runs_dir: Path,
    docs_dir: Path,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
    baseline_overrides: Sequence[str] = (),
) -> Path:
    """Train, evaluate and document one task (``TASKS[name]``); returns ``results.md``.
    ``overrides`` apply to every run, ``baseline_overrides`` to the stable-baselines3 ones
    (e.g. ``baseline.total_steps``).  Every config is checked before any work."""
    code = commit()  # now, before the checkout can move on during hours of training
    task = TASKS[name]
    seeds = tuple(seeds or task.seeds)
    configs = {seed: run_config(task, seed, overrides) for seed in seeds}
    baseline_configs = baseline_run_configs(task, seeds[0], overrides, baseline_overrides)
    runs = {runs_dir / name / f"maml-seed{seed}": config for seed, config in configs.items()}
    runs |= {runs_dir / name / f"{m}-seed{seeds[0]}": c for m, c in baseline_configs.items()}
    with checked_runs(runs):
        results = [
            trained_result(task, seed, config, runs_dir / name / f"maml-seed{seed}", progress)
            for seed, config in configs.items()
        ]
        baselines = run_baselines(task, runs_dir / name, seeds[0], baseline_configs, progress)
    flags = command_flags(seeds, task, overrides)
    flags += [p for o in baseline_overrides for p in ("--baseline-set", shlex.quote(o))]
    command = " ".join(["metarl reproduce", name, *flags])
    return write_section(name, task, results, baselines, docs_dir, command, code)


def baseline_run_configs(
    task: Task, seed: int, overrides: Sequence[str], baseline_overrides: Sequence[str]
) -> dict[str, Config]:
    """The config of each baseline of ``task`` (``random``: the MAML config, untrained)."""
    configs = {}
    for method, method_overrides in task.baselines.items():
        stable_baselines3 = method_overrides[0].startswith("baseline.")
        extra = baseline_overrides if stable_baselines3 else ()
        configs[method] = run_config(task, seed, [*overrides, *method_overrides, *extra])
    if baseline_overrides and not any(c.baseline for c in configs.values()):
        raise ConfigError(f"--baseline-set: {task.config} has no stable-baselines3 baselines")
    configs["random"] = run_config(task, seed, [*overrides, "baseline.method=random"])
    return configs


def run_baselines(
    task: Task, task_dir: Path, seed: int, configs: dict[str, Config], progress: bool
) -> dict[str, Evaluation]:
    """Train (or resume) the baselines of ``configs`` in ``task_dir/METHOD-seedN`` and
    evaluate them with the paper's protocol: the oracle without adaptation, the others with
    their first step size chosen from the task's grid."""
    evaluations = {}
    for method, config in configs.items():
        run_dir = task_dir / f"{method}-seed{seed}"
        train_or_resume(config, run_dir, progress)
        steps, grid = (0, ()) if method == "oracle" else (NUM_EVAL_STEPS, task.step_size_grid)
        evaluations[method] = evaluate_run(task, run_dir, steps, grid)
    return evaluations


def command_flags(seeds: Sequence[int], task: Task, overrides: Sequence[str]) -> list[str]:
    flags = [] if tuple(seeds) == task.seeds else ["--seeds", *map(str, seeds)]
    return flags + [part for o in overrides for part in ("--set", shlex.quote(o))]


# ---------------------------------------------------------------------- results.md
def summary(results: Sequence[SeedResult]) -> tuple[list[float], list[float], str]:
    """Mean return after each step and its spread: the standard error over tasks for one
    seed, the standard deviation across seeds for several."""
    means = np.array([r.evaluation.mean for r in results])
    if len(results) == 1:
        return list(means[0]), results[0].evaluation.stderr, "± standard error over 40 tasks"
    spread = means.std(axis=0, ddof=1)
    return list(means.mean(0)), list(spread), f"± standard deviation over {len(results)} seeds"


def write_section(
    name: str,
    task: Task,
    results: Sequence[SeedResult],
    baselines: dict[str, Evaluation],
    docs_dir: Path,
    command: str,
    code: str,
) -> Path:
    """``results/NAME.json``, ``results/NAME_adaptation.png``,
    ``results/NAME_learning_curve.png`` and the task's section of ``results.md``; ``code`` is
    the commit that ran (:func:`~metarl.provenance.commit`)."""
    figures = docs_dir / "results"
    figures.mkdir(parents=True, exist_ok=True)
    mean, spread, spread_kind = summary(results)
    seeds = "1 seed" if len(results) == 1 else f"{len(results)} seeds, ± sd across them"
    curves = [Curve(f"MAML, metarl ({seeds})", "original", mean, spread)]
    curves += [
        Curve(f"{method}, metarl", "original", evaluation.mean, evaluation.stderr)
        for method, evaluation in baselines.items()
    ]
    if task.paper is not None:
        curves.append(Curve("MAML, paper", "original", list(task.paper.maml), [0.0] * 4))
    sizes = results[0].evaluation.step_sizes
    later = f", then {sizes[1]:g}" if len(sizes) > 1 else ""
    title = (
        f"{task.title}: {NUM_EVAL_TASKS} held-out tasks, {task.num_trajectories} trajectories, "
        f"α = {sizes[0]:g}{later}"
    )
    plot_curves(curves, figures / f"{name}_adaptation.png", title)
    plot_learning_curves(
        [read_run(r.run_dir) for r in results], figures / f"{name}_learning_curve.png"
    )
    record = {
        "task": name,
        "command": command,
        "date": date.today().isoformat(),
        "commit": code,
        "machine": machine(),
        "config": yaml.safe_load((results[0].run_dir / CONFIG_FILE).read_text()),  # as trained
        "checkpoint": "last.pt",
        "fill_steps": results[0].evaluation.config["sampler"]["fill_steps"],
        "mean": mean,
        "spread": spread,
        "spread_kind": spread_kind,
        "criterion_one_step": task.paper.one_step_criterion if task.paper else None,
        "baselines": {
            method: {
                "mean": e.mean,
                "stderr": e.stderr,
                "step_sizes": e.step_sizes,
                "step_size_choice": e.step_size_choice,
                "config": e.config,
            }
            for method, e in baselines.items()
        },
        "seeds": [
            {
                "seed": r.seed,
                "iterations": len(read_metrics(r.run_dir)),
                "wall_seconds": r.wall_seconds,
                "mean": r.evaluation.mean,
                "stderr": r.evaluation.stderr,
            }
            for r in results
        ],
    }
    (figures / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return update_results(
        docs_dir, lambda text: replace_section(text, name, section_text(name, task, record))
    )


def update_results(docs_dir: Path, edit: Callable[[str], str]) -> Path:
    """``docs_dir/results.md`` rewritten by ``edit`` (a new file starts as "# Results"), one
    process at a time (the lock of ``docs_dir``) and atomically (where it is a link: the file
    it links to)."""
    results_md = (docs_dir / "results.md").resolve()
    docs_dir.mkdir(parents=True, exist_ok=True)
    with directory_lock(docs_dir, wait=True):
        text = results_md.read_text() if results_md.exists() else "# Results\n"
        atomic_write_bytes(results_md, edit(text).encode())
    return results_md


def section_text(name: str, task: Task, record: dict[str, Any]) -> str:
    """The Markdown of a task's section from its ``results/NAME.json`` record."""
    seeds = record["seeds"]
    minutes = ", ".join(f"{seed['wall_seconds'] / 60:.0f} min" for seed in seeds)
    lines = [
        f"Command: `{record['command']}` ({record['date']}, commit `{record['commit']}`, "
        f"{record['machine']}). Bundled config `{task.config}`, seeds "
        f"{', '.join(str(seed['seed']) for seed in seeds)}; each run's `last.pt` (iteration "
        f"{', '.join(str(seed['iterations']) for seed in seeds)}) evaluated on "
        f"{NUM_EVAL_TASKS} held-out tasks (seed {EVAL_SEED}), {task.num_trajectories} "
        f"trajectories per task and step{_filled(record, task)}. Training wall time per run: "
        f"{minutes}.",
        *_baselines_note(task, record),
        "",
        "| method | 0 steps | 1 step | 2 steps | 3 steps |",
        "|---|---|---|---|---|",
        _row(f"MAML, metarl ({record['spread_kind']})", record["mean"], record["spread"]),
    ]
    if len(seeds) > 1:
        lines += [_row(f"seed {seed['seed']}", seed["mean"], seed["stderr"]) for seed in seeds]
    for method in ("pretrained", "random", "oracle"):
        if method in record["baselines"]:
            baseline = record["baselines"][method]
            lines.append(_row(f"{method}, metarl", baseline["mean"], baseline["stderr"]))
        else:
            lines.append(f"| {method}, metarl | not yet run | | | |")
    if task.paper is not None:
        paper = task.paper
        lines += [
            _row("MAML, paper", paper.maml),
            _row("pretrained, paper", paper.pretrained),
            _row("random, paper", paper.random),
            _row("oracle, paper", [paper.oracle]),
            "",
            criterion_line(record["mean"][1], paper.one_step_criterion),
        ]
    lines += [
        "",
        f"![return after 0-3 steps](results/{name}_adaptation.png)",
        f"![learning curves](results/{name}_learning_curve.png)",
    ]
    return "\n".join(lines)


def _baselines_note(task: Task, record: dict[str, Any]) -> list[str]:
    """How the baselines of the section were made (nothing when it has none)."""
    baselines = record["baselines"]
    if not baselines:
        return []
    parts = []
    for method in ("pretrained", "oracle"):
        if method in baselines:
            parts.append(f"`{method}`: {_how_trained(baselines[method]['config'])}")
    parts.append("`random`: the untrained initial policy of the seed")
    chosen = [
        f"{method} {baselines[method]['step_size_choice']['chosen']:g}"
        for method in ("pretrained", "random")
        if method in baselines and baselines[method]["step_size_choice"]
    ]
    grid = ", ".join(f"{size:g}" for size in task.step_size_grid)
    return [
        "",
        f"Baselines (seed {record['seeds'][0]['seed']}): {'; '.join(parts)}. The oracle is told "
        f"the task and not adapted; pretrained and random are fine-tuned with the first step "
        f"size chosen from ({grid}) on 10 tasks of their training stream ({', '.join(chosen)}; "
        f"later steps {_fraction(later_ratio(task.family))} of it); MAML keeps its own α, as in "
        "the paper.",
    ]


def _filled(record: dict[str, Any], task: Task) -> str:
    if not record.get("fill_steps"):
        return ""
    return f" (every method; {filled_text(task.num_trajectories)}, as the authors')"


def _fraction(ratio: float) -> str:
    return "half" if ratio == 0.5 else f"1/{1 / ratio:g}"


def _how_trained(config: dict[str, Any]) -> str:
    baseline = config.get("baseline")
    told = " told the task" if config["env"]["kwargs"].get("oracle") else ""
    if baseline is None:
        iterations = config["train"]["num_iterations"]
        return f"metarl's TRPO{told} with no inner step, {iterations} iterations"
    steps = baseline["total_steps"]
    budget = f"{steps:,} steps" if steps else "the paper's budget"
    library = "sb3-contrib" if baseline["algorithm"] == "trpo" else "stable-baselines3"
    return f"{baseline['algorithm'].upper()} ({library}){told} on all tasks, {budget}"


def _row(label: str, values: Sequence[float], spread: Sequence[float] | None = None) -> str:
    """A table row of returns after 0..3 steps (``mean ± spread`` where a spread is given)."""
    if spread is None:
        cells = [f"{value:g}" for value in values]
    else:
        cells = [f"{value:.1f} ± {error:.1f}" for value, error in zip(values, spread)]
    return "| " + " | ".join([label, *cells, *[""] * (4 - len(cells))]) + " |"


def criterion_line(one_step: float, criterion: float) -> str:
    """The sentence giving the issue's criterion, MAML's return after one step and the verdict."""
    met = one_step >= criterion
    # as many digits as the verdict needs: the values as shown compare as the values do
    first = 2 if abs(one_step - criterion) < 0.1 else 1
    digits = next(
        (d for d in range(first, 7) if (round(one_step, d) >= round(criterion, max(d, 2))) == met),
        6,
    )
    return (
        f"Criterion (MAML after one step ≥ the paper's less 10% of its random-to-oracle range, "
        f"{criterion:.{max(digits, 2)}f}): {'met' if met else '**not met**'} "
        f"({one_step:.{digits}f})."
    )


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the task's block (between ``<!-- reproduce NAME -->`` and
    ``<!-- /reproduce NAME -->``) replaced by ``body``; without a block, the body of the section
    titled as the task is replaced, and without such a section one is appended."""
    replaced = replace_marked(text, f"reproduce {name}", body)
    if replaced is not None:
        return replaced
    block = f"<!-- reproduce {name} -->\n{body}\n<!-- /reproduce {name} -->\n"
    heading = f"## {TASKS[name].title}\n"
    titled = re.compile("^" + re.escape(heading) + "(.*?)(?=^## |\\Z)", re.DOTALL | re.MULTILINE)
    if titled.search(text):
        return titled.sub(lambda _: f"{heading}\n{block}\n", text, count=1)
    return f"{text.rstrip()}\n\n{heading}\n{block}"


def replace_marked(text: str, marker: str, body: str) -> str | None:
    """``text`` with the block between ``<!-- MARKER -->`` and ``<!-- /MARKER -->`` replaced by
    ``body`` (None when ``text`` has no such block)."""
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    marked = re.compile(re.escape(start) + ".*?" + re.escape(end) + "\n?", flags=re.DOTALL)
    if not marked.search(text):
        return None
    return marked.sub(lambda _: f"{start}\n{body}\n{end}\n", text)
