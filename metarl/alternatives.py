"""``metarl reproduce TASK --alternatives``: MAML and its alternatives side by side on one task.

Each method is the task's bundled config with a few overrides, trained for each seed in
``RUNS/TASK/METHOD-seedN`` (resumed when interrupted, kept when finished; exact MAML's folder is
the reproduction's ``maml-seedN``, shared when the configs agree) and evaluated with the paper's
protocol, adapting with the task's step size α (the methods whose training α does not apply,
with the first step size chosen from the task's grid).  The task's block of
the section "MAML and its alternatives" of ``results.md`` is rewritten, with
``results/alternatives_TASK.{json,png}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from metarl.config import Config
from metarl.evaluation import Curve, plot_curves
from metarl.paper import later_steps
from metarl.provenance import commit, machine
from metarl.reproduce import (
    NUM_EVAL_TASKS,
    TASKS,
    SeedResult,
    Task,
    checked_runs,
    command_flags,
    replace_marked,
    run_config,
    summary,
    trained_result,
    update_results,
)

SECTION = "## MAML and its alternatives"
# method -> (label, source of the idea, config overrides); negative-lr's α is the config's, negated
METHODS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "maml": ("exact MAML", "Finn et al. 2017", ()),
    "first-order": ("first-order MAML", "Finn et al. 2017", ("algorithm.first_order=true",)),
    "anil": ("ANIL", "Raghu et al. 2020", ("algorithm.inner_parameters=head",)),
    # one inner step would make Reptile joint training: two, with fresh samples after each
    "reptile": (
        "Reptile",
        "Nichol et al. 2018",
        ("algorithm.name=reptile", "algorithm.num_inner_steps=2"),
    ),
    "negative-lr": ("negative α", "Bernacchia 2021", ()),
    "zero-steps": ("zero inner steps", "the paper's pretrained", ("algorithm.num_inner_steps=0",)),
}


# Methods adapted at test time with a first step size chosen from the task's grid on tasks of
# their training stream: zero inner steps trained without one, negative α with the wrong sign.
GRID_METHODS = ("negative-lr", "zero-steps")


def method_configs(task: Task, seed: int, overrides: Sequence[str]) -> dict[str, Config]:
    """The config of each method for ``seed``: the task's, ``overrides``, then the method's."""
    base = run_config(task, seed, overrides)
    configs = {}
    for method, (_, _, method_overrides) in METHODS.items():
        if method == "negative-lr":
            method_overrides = (f"algorithm.inner_lr={-base.algorithm.inner_lr!r}",)
        configs[method] = run_config(task, seed, [*overrides, *method_overrides])
    return configs


def compare(
    name: str,
    runs_dir: Path,
    docs_dir: Path,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
) -> Path:
    """Train, evaluate and document every method of :data:`METHODS` on ``TASKS[name]``;
    returns ``results.md``.  Every run folder is checked before any work."""
    code = commit()  # now, before the checkout can move on during hours of training
    task = TASKS[name]
    seeds = tuple(seeds or task.seeds)
    configs = {seed: method_configs(task, seed, overrides) for seed in seeds}
    runs = {
        runs_dir / name / f"{method}-seed{seed}": config
        for seed, by_method in configs.items()
        for method, config in by_method.items()
    }
    results: dict[str, list[SeedResult]] = {method: [] for method in METHODS}
    test_lr = configs[seeds[0]]["maml"].algorithm.inner_lr
    with checked_runs(runs):
        for seed, by_method in configs.items():  # seed by seed: every method has a result early
            for method, config in by_method.items():
                run_dir = runs_dir / name / f"{method}-seed{seed}"
                grid = task.step_size_grid if method in GRID_METHODS else ()
                result = trained_result(task, seed, config, run_dir, progress, grid, test_lr)
                results[method].append(result)
    flags = command_flags(seeds, task, overrides)
    command = " ".join(["metarl reproduce", name, "--alternatives", *flags])
    return write_block(name, task, configs[seeds[0]]["maml"], results, docs_dir, command, code)


def write_block(
    name: str,
    task: Task,
    config: Config,
    results: dict[str, list[SeedResult]],
    docs_dir: Path,
    command: str,
    code: str,
) -> Path:
    """``results/alternatives_NAME.{json,png}`` and the task's block in ``results.md``;
    ``code`` is the commit that ran (:func:`~metarl.provenance.commit`)."""
    figures = docs_dir / "results"
    figures.mkdir(parents=True, exist_ok=True)
    methods = {}
    for method, seed_results in results.items():
        mean, spread, spread_kind = summary(seed_results)
        methods[method] = {
            "mean": mean,
            "spread": spread,
            "spread_kind": spread_kind,
            "training_inner_lr": seed_results[0].evaluation.config["algorithm"]["inner_lr"],
            "test_inner_lr": sorted({r.evaluation.step_sizes[0] for r in seed_results}),
            "seeds": [r.seed for r in seed_results],
        }
    record = {
        "task": name,
        "command": command,
        "date": date.today().isoformat(),
        "commit": code,
        "machine": machine(),
        "config": config.to_dict(),
        "methods": methods,
    }
    (figures / f"alternatives_{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    num_seeds = len(results["maml"])
    across = f" ({num_seeds} seeds, ± sd across them)" if num_seeds > 1 else ""
    curves = [
        Curve(METHODS[method][0] + across, "original", entry["mean"], entry["spread"])
        for method, entry in methods.items()
    ]
    title = f"{task.title}: {NUM_EVAL_TASKS} held-out tasks, {task.num_trajectories} trajectories"
    plot_curves(curves, figures / f"alternatives_{name}.png", title)
    return update_results(
        docs_dir, lambda text: place_block(text, name, block_text(name, task, record))
    )


def block_text(name: str, task: Task, record: dict[str, Any]) -> str:
    """The Markdown of a task's comparison from its ``results/alternatives_NAME.json``."""
    methods = record["methods"]
    seeds = ", ".join(map(str, methods["maml"]["seeds"]))
    spread_kind = methods["maml"]["spread_kind"]
    iterations = record["config"]["train"]["num_iterations"]
    lines = [
        f"Command: `{record['command']}` ({record['date']}, commit `{record['commit']}`, "
        f"{record['machine']}). Bundled config `{task.config}`, {iterations} iterations, seeds "
        f"{seeds}; each run's `last.pt` on {NUM_EVAL_TASKS} held-out tasks, "
        f"{task.num_trajectories} trajectories per task and step, adapted with the task's α = "
        f"{record['config']['algorithm']['inner_lr']:g}, then {later_steps(task.family)}; zero "
        "inner steps (trained on all tasks) and negative α (a training step size only, as "
        "Bernacchia 2021 proposes) "
        f"with the first step size chosen from ({', '.join(f'{a:g}' for a in task.step_size_grid)})"
        f" on 10 tasks of their training stream. Mean {spread_kind}. The cost of each method "
        "per meta-iteration, measured in one run, is in [performance.md](performance.md) (the "
        "training runs shared the machine with other work: their times do not compare).",
        "",
        "| method (source) | α: training, test | 0 steps | 1 step | 2 steps | 3 steps |",
        "|---|---|---|---|---|---|",
    ]
    for method, entry in methods.items():
        label, source, _ = METHODS[method]
        returns = [f"{m:.1f} ± {s:.1f}" for m, s in zip(entry["mean"], entry["spread"])]
        test = ", ".join(f"{alpha:g}" for alpha in entry["test_inner_lr"])
        cells = [f"{label} ({source})", f"{entry['training_inner_lr']:g}, {test}", *returns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"![every method's return after 0-3 steps](results/alternatives_{name}.png)"]
    return "\n".join(lines)


def place_block(text: str, name: str, body: str) -> str:
    """``text`` with the task's block (``<!-- alternatives NAME -->``) replaced by ``body``;
    without one, a subsection for the task is added at the end of :data:`SECTION` (appended
    to the file when absent)."""
    marker = f"alternatives {name}"
    replaced = replace_marked(text, marker, body)
    if replaced is not None:
        return replaced
    subsection = f"### {TASKS[name].title}\n\n<!-- {marker} -->\n{body}\n<!-- /{marker} -->\n"
    section = re.search(
        "^" + re.escape(SECTION) + "\n.*?(?=^## |\\Z)", text, re.DOTALL | re.MULTILINE
    )
    if section is None:
        return f"{text.rstrip()}\n\n{SECTION}\n\n{subsection}"
    head, tail = text[: section.end()].rstrip(), text[section.end() :]
    return f"{head}\n\n{subsection}" + (f"\n{tail}" if tail else "")
