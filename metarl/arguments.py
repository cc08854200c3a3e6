"""The parser of the ``metarl`` command line: its subcommands and their flags.

Flag values are checked as they are parsed (``--iterations 0`` is refused in one line, exit
status 2, before any work); the commands themselves are in :mod:`metarl.cli`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metarl.configs import DEFAULT_CONFIG

# The rows of the paper's table (metarl.reproduce.TASKS), known without importing it.
REPRODUCIBLE_TASKS = (
    "navigation",
    "halfcheetah_vel",
    "halfcheetah_dir",
    "ant_vel",
    "ant_dir",
    "ant_goal",
)
WANDB_FORBIDDEN = ("/", "\\", "#", "?", "%", ":")  # characters W&B refuses in project names


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


class VersionAction(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import version

        print(f"metarl {version('metarl')}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="metarl", description="Meta-reinforcement learning with MAML-TRPO.")
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    train = commands.add_parser("train", help="meta-train a policy")
    _add_run_arguments(train, "e.g. algorithm.inner_lr=0.5")
    train.add_argument(
        "--iterations", type=_positive_int, help="number of meta-iterations (train.num_iterations)"
    )
    train.add_argument("--device", choices=["cpu", "cuda"], help="learning device")
    train.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="with sampler.backend=ray: the Ray cluster to sample on (auto: the one this "
        "machine belongs to; default: RAY_ADDRESS, else a cluster started here, else a new one)",
    )
    train.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint",
    )
    train.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: accept a config or env version differing from the run's (on other "
        "dynamics, best.pt is chosen anew)",
    )
    _add_tracking_arguments(train)
    evaluate = commands.add_parser(
        "evaluate", help="return on held-out tasks after 0..K gradient steps (the paper's protocol)"
    )
    _add_adaptation_arguments(evaluate, num_tasks=40)
    evaluate.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/evaluation)")
    evaluate.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="other evaluation.json files to overlay on the plot and table",
    )
    evaluate.add_argument(
        "--paper",
        action="store_true",
        help="overlay the paper's published returns for the run's family and method",
    )
    evaluate.add_argument(
        "--inner-lr-grid",
        type=_positive_float,
        nargs="+",
        metavar="A",
        help="choose the first step size from these by the return on tasks of the run's "
        "training stream (not the held-out tasks); recorded in evaluation.json",
    )
    video = commands.add_parser("video", help="video of rollouts before and after adaptation")
    _add_adaptation_arguments(video, num_tasks=2)
    video.add_argument(
        "--out", type=Path, help="output .mp4 (default: RUN_DIR/evaluation/adaptation.mp4)"
    )
    video.add_argument(
        "--size", type=_positive_int, default=240, help="side of each cell in pixels (default 240)"
    )
    plot = commands.add_parser(
        "plot", help="learning curves (return before and after adaptation) of one or more runs"
    )
    plot.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="run directories")
    plot.add_argument(
        "--out",
        type=Path,
        help="output .png (default: RUN_DIR/learning_curve.png for one run, "
        "learning_curves.png for several)",
    )
    plot.add_argument(
        "--smooth",
        type=_positive_int,
        default=1,
        metavar="N",
        help="mean of the last N iterations at each point (default 1: none)",
    )
    plot.add_argument(
        "--labels",
        nargs="+",
        metavar="NAME",
        help="legend name of each curve, in the order of the runs (runs differing only in the "
        "seed are one curve; default: the run folder's name)",
    )
    baseline = commands.add_parser(
        "baseline", help="the paper's non-meta baselines (stable-baselines3): a run directory"
    )
    baseline.add_argument(
        "method",
        choices=["pretrained", "oracle", "random"],
        help="pretrained: one policy on all tasks; oracle: the same told the task; "
        "random: the initial policy, untrained",
    )
    _add_run_arguments(baseline, "e.g. policy.hidden_sizes=[64,64]")
    baseline.add_argument("--algo", choices=["trpo", "ppo"], help="learner (default: trpo)")
    baseline.add_argument(
        "--steps",
        type=_positive_int,
        help="environment steps in all (default: the paper's; with --resume: a new total)",
    )
    baseline.add_argument(
        "--steps-per-update", type=_positive_int, help="steps per update (default 20000)"
    )
    baseline.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue the baseline run in RUN_DIR"
    )
    _add_tracking_arguments(baseline)
    reproduce = commands.add_parser(
        "reproduce",
        help="one row of the paper's table: train (or resume), evaluate, rewrite docs/results.md",
    )
    reproduce.add_argument("task", choices=list(REPRODUCIBLE_TASKS), help="the table's row")
    reproduce.add_argument(
        "--seeds", type=_non_negative_int, nargs="+", help="training seeds (default: the task's)"
    )
    _add_set_argument(reproduce, "override a key of the bundled config")
    _add_set_argument(
        reproduce,
        "override a key of the stable-baselines3 baselines only, e.g. baseline.total_steps=6000000",
        flag="--baseline-set",
        dest="baseline_overrides",
    )
    reproduce.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs/reproduce"),
        help="where the runs live: RUNS_DIR/TASK/maml-seedN (default: runs/reproduce)",
    )
    reproduce.add_argument(
        "--docs", type=Path, default=Path("docs"), help="folder of results.md (default: docs)"
    )
    reproduce.add_argument("--progress", action="store_true", help="show a progress bar")
    reproduce.add_argument(
        "--alternatives",
        action="store_true",
        help="instead: MAML and its alternatives (first order, ANIL, Reptile, negative α, "
        "zero steps) side by side, in results.md's section 'MAML and its alternatives'",
    )
    commands.add_parser(
        "list", help="the task families (presets, arguments) and the bundled configs"
    )
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """Flags of the commands that write a run directory (``train``, ``baseline``)."""
    parser.add_argument(
        "--config", help=f"YAML file or bundled config name (default: {DEFAULT_CONFIG})"
    )
    parser.add_argument("--run-dir", type=Path, help="output folder (default: runs/<name>)")
    parser.add_argument("--seed", type=_non_negative_int, help="run seed (train.seed)")
    _add_set_argument(parser, f"override a config key, {example}")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing, non-empty run directory"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (one line per iteration)"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar, per-iteration lines or summary"
    )


def _add_set_argument(
    parser: argparse.ArgumentParser, help_text: str, flag: str = "--set", dest: str = "overrides"
) -> None:
    """A repeatable ``KEY=VALUE`` config override flag, collected in ``dest``."""
    parser.add_argument(
        flag,
        dest=dest,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{help_text} (repeatable)",
    )


def _add_tracking_arguments(train: argparse.ArgumentParser) -> None:
    """The flags of the run's outputs besides metrics and checkpoints, and of W&B."""
    outputs = train.add_argument_group("videos and final evaluation (in the run directory)")
    outputs.add_argument(
        "--video-every",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="an adaptation video every N iterations in RUN_DIR/videos (default 0: none)",
    )
    outputs.add_argument(
        "--eval-tasks",
        type=_non_negative_int,
        default=10,
        metavar="N",
        help="held-out tasks of the evaluation in RUN_DIR/evaluation at the end (default 10; 0: "
        "none)",
    )
    group = train.add_argument_group("Weights & Biases")
    group.add_argument("--track", action="store_true", help="log the run to Weights & Biases")
    group.add_argument(
        "--wandb-project",
        type=_wandb_name,
        help="W&B project (default: the resumed run's, else metarl)",
    )
    group.add_argument(
        "--wandb-entity", help="W&B entity, user or team (default: the resumed run's)"
    )
    group.add_argument("--wandb-group", help="W&B group of runs")
    group.add_argument(
        "--wandb-tags", type=_wandb_tag, nargs="+", default=[], metavar="TAG", help="more W&B tags"
    )
    group.add_argument(
        "--wandb-mode",
        choices=["online", "offline", "disabled"],
        help="default: WANDB_MODE, else online if W&B credentials are configured, else offline",
    )
    group.add_argument(
        "--wandb-artifacts",
        action="store_true",
        help="at the end, log checkpoints/ and evaluation/ as W&B artifacts",
    )


def _add_adaptation_arguments(parser: argparse.ArgumentParser, num_tasks: int) -> None:
    """Flags of ``evaluate`` and ``video``: the policy, the held-out tasks, the inner steps."""
    parser.add_argument(
        "run", type=Path, metavar="RUN_DIR_OR_CHECKPOINT", help="run directory or .pt file"
    )
    parser.add_argument(
        "--checkpoint",
        choices=["best", "last"],
        default="best",
        help="checkpoint of a run directory (default: best)",
    )
    parser.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the held-out tasks (default 0)"
    )
    parser.add_argument(
        "--tasks",
        type=_positive_int,
        default=num_tasks,
        help=f"held-out tasks (default {num_tasks})",
    )
    parser.add_argument(
        "--trajectories",
        type=_positive_int,
        help="trajectories per task and step (default: the run's algorithm.num_trajectories)",
    )
    parser.add_argument(
        "--steps", type=_non_negative_int, default=3, help="gradient steps K (default 3)"
    )
    parser.add_argument(
        "--inner-lr",
        type=_non_zero_float,
        help="step size α of the first step (default: the run's algorithm.inner_lr)",
    )
    parser.add_argument(
        "--later-inner-lr",
        type=_non_zero_float,
        help="step size of the later steps (default: half the first; AntDir: a hundredth, as "
        "the authors' test)",
    )
    parser.add_argument(
        "--fill-steps",
        action=argparse.BooleanOptionalAction,
        help="fill each task to trajectories × horizon steps where episodes end early, as the "
        "MAML authors' test (sampler.fill_steps; default: the run's)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="sample on the Ray cluster at ADDRESS with the run's sampler settings (auto: the "
        "one this machine belongs to; default: sample in this process)",
    )


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _non_zero_float(text: str) -> float:
    value = _float(text)
    if value == 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a non-zero number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _wandb_name(text: str) -> str:
    if not text or any(char in text for char in WANDB_FORBIDDEN):
        raise argparse.ArgumentTypeError(
            f"expected a name without any of {' '.join(WANDB_FORBIDDEN)}, got {text!r}"
        )
    return text


def _wandb_tag(text: str) -> str:
    if not 1 <= len(text) <= 64:
        raise argparse.ArgumentTypeError(f"expected 1 to 64 characters, got {text!r}")
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
