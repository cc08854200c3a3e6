"""Learning curves: the return before and after adaptation against meta-iterations and
environment steps (and the success rate, for families that report success), for one run or
several (runs with the same config but for the seed are drawn as their mean, shaded from the
lowest to the highest run)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from metarl.logging import METRICS_FILE, read_metrics
from metarl.training import CONFIG_FILE

LEARNING_CURVE_FILE = "learning_curve.png"
# Keys that may differ between runs drawn as one curve (their spread is the seeds' spread).
PER_RUN_KEYS = {"seed", "num_iterations", "device", "checkpoint_every"}


@dataclass
class RunCurve:
    """One run's training returns per meta-iteration."""

    name: str
    config_key: str  # the resolved config less PER_RUN_KEYS: equal for runs of one curve
    family: str
    env_steps: np.ndarray
    return_pre: np.ndarray
    return_post: np.ndarray
    success_pre: np.ndarray  # all NaN for families that report no success
    success_post: np.ndarray


def read_run(run_dir: Path) -> RunCurve:
    """The curve of ``run_dir`` (its ``metrics.jsonl`` and ``config.yaml``); raises ``OSError``
    or ``ValueError`` for a folder that is not a run with at least one iteration."""
    if not (run_dir / METRICS_FILE).is_file():
        raise ValueError(f"{run_dir}: no {METRICS_FILE} (not a run directory)")
    records = read_metrics(run_dir)
    if not records:
        raise ValueError(f"{run_dir}: {METRICS_FILE} holds no iteration yet")
    if "return_post" not in records[0]:
        raise ValueError(f"{run_dir}: a baseline run (plot draws MAML runs' returns)")
    config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    train = {k: v for k, v in config["train"].items() if k not in PER_RUN_KEYS}

    def column(key: str) -> np.ndarray:
        values = [r.get(key) for r in records]
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    return RunCurve(
        name=run_dir.resolve().name,
        config_key=json.dumps({**config, "train": train}, sort_keys=True),
        family=config["env"]["family"],
        env_steps=column("env_steps"),
        return_pre=column("return_pre"),
        return_post=column("return_post"),
        success_pre=column("success_pre"),
        success_post=column("success_post"),
    )


def group_runs(runs: Sequence[RunCurve]) -> list[list[RunCurve]]:
    """Runs grouped by config (seed and length aside), in the order first met."""
    groups: dict[str, list[RunCurve]] = {}
    for run in runs:
        groups.setdefault(run.config_key, []).append(run)
    return list(groups.values())


def labelled_groups(
    runs: Sequence[RunCurve], labels: Sequence[str] | None = None
) -> list[tuple[str, list[RunCurve]]]:
    """:func:`group_runs` with each curve's legend name: ``labels`` in the order the curves are
    first met, or else the run's folder name (a group: the runs' common prefix and count)."""
    groups = group_runs(runs)
    if labels is None:
        return [(group_label(group), group) for group in groups]
    if len(labels) != len(groups):
        raise ValueError(
            f"{len(labels)} labels for {len(groups)} curves (runs differing only in the seed "
            "are one curve)"
        )
    return list(zip(labels, groups))


def group_label(group: Sequence[RunCurve]) -> str:
    if len(group) == 1:
        return group[0].name
    prefix = _common_prefix([run.name for run in group]).rstrip("-_ ")
    return f"{prefix or group[0].family} ({len(group)} runs)"


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    size = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), len(first))
    return first[:size]


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each point (fewer at the start); a missing value
    (NaN) is left out of its windows rather than blanking the rest of the curve."""
    if window <= 1:
        return values
    present = ~np.isnan(values)
    sums = np.cumsum(np.insert(np.where(present, values, 0.0), 0, 0.0))
    counts = np.cumsum(np.insert(present.astype(float), 0, 0.0))
    start = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    end = np.arange(1, len(values) + 1)
    with np.errstate(invalid="ignore"):
        return (sums[end] - sums[start]) / (counts[end] - counts[start])


@dataclass
class GroupCurve:
    """One quantity of a group of runs over the iterations all of them reached."""

    iterations: np.ndarray
    env_steps: np.ndarray  # mean over the runs
    mean: np.ndarray
    low: np.ndarray  # lowest run at each iteration
    high: np.ndarray  # highest run


def group_curve(group: Sequence[RunCurve], key: str, smooth: int = 1) -> GroupCurve:
    """``key`` (``return_pre``, ``return_post``, ``success_pre`` or ``success_post``) of
    ``group``, each run smoothed first."""
    length = min(len(run.return_post) for run in group)
    values = np.array([moving_average(getattr(run, key)[:length], smooth) for run in group])
    return GroupCurve(
        iterations=np.arange(1, length + 1),
        env_steps=np.mean([run.env_steps[:length] for run in group], axis=0),
        mean=values.mean(axis=0),
        low=values.min(axis=0),
        high=values.max(axis=0),
    )


def plot_learning_curves(
    runs: Sequence[RunCurve], path: Path, smooth: int = 1, labels: Sequence[str] | None = None
) -> None:
    """Return before (dashed) and after (solid) adaptation against meta-iterations (left) and
    environment steps (right), and below it the success rate where runs report one; a group of
    runs is drawn as its mean, shaded between its lowest and highest run (PNG, Agg backend).
    ``labels``: the curves' legend names (:func:`labelled_groups`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    quantities = ["return"]
    if any(not np.isnan(run.success_post).all() for run in runs):
        quantities.append("success")
    figure = Figure(figsize=(10, 3.8 * len(quantities)), dpi=110)
    FigureCanvasAgg(figure)
    rows = figure.subplots(len(quantities), 2, sharey="row", squeeze=False)
    averaged = f" (mean of last {smooth})" if smooth > 1 else ""
    for (by_iteration, by_steps), quantity in zip(rows, quantities):
        for index, (name, group) in enumerate(labelled_groups(runs, labels)):
            for when, style in (("pre", "--"), ("post", "-")):
                curve = group_curve(group, f"{quantity}_{when}", smooth)
                label = f"{name}: {when}-update"
                for axes, x in ((by_iteration, curve.iterations), (by_steps, curve.env_steps)):
                    axes.plot(x, curve.mean, style, color=f"C{index}", label=label, linewidth=1.2)
                    if len(group) > 1:
                        axes.fill_between(x, curve.low, curve.high, color=f"C{index}", alpha=0.15)
        by_iteration.set_xlabel("meta-iteration")
        by_steps.set_xlabel("environment steps")
        name = "average return" if quantity == "return" else "success rate"
        by_iteration.set_ylabel(name + averaged)
        for axes in (by_iteration, by_steps):
            axes.grid(alpha=0.3)
        by_iteration.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
