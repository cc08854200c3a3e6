"""The ``metarl`` command line: ``train``, ``evaluate``, ``video``, ``plot``, ``baseline``,
``reproduce`` and ``list``.

Every user error ends as one line on stderr and exit status 2, before any work starts; a run
stopped by too many meta-steps rejected for NaN or Inf ends with one line and exit status 1.
Each command imports what it needs (torch, W&B, ...) when it runs: ``metarl --help`` does not.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from metarl.configs import DEFAULT_CONFIG
from metarl.errors import (
    CheckpointError,
    ConfigError,
    RejectionLimitError,
    TrackingError,
    UsageError,
)

if TYPE_CHECKING:
    from metarl.config import Config
    from metarl.evaluation import LoadedRun
    from metarl.outputs import RunOutputs, TrainedRun
    from metarl.tracking import WandbTracker
    from metarl.training import IterationHook

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
        help="with --resume: accept a config differing from the run's",
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


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides, then those of the dedicated flags (``--seed``, ...)."""
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.iterations is not None:
        overrides.append(f"train.num_iterations={args.iterations}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    return overrides


def train_config(args: argparse.Namespace) -> Config:
    """The run's config: file (or bundled default), ``--set`` overrides, then dedicated flags."""
    from metarl.config import load_config, resolve_config_path

    config = load_config(resolve_config_path(args.config), flag_overrides(args))
    if config.baseline is not None:
        raise UsageError("baseline: a section for metarl baseline, not metarl train")
    return config


def default_run_dir(config: Config) -> Path:
    from metarl.config import run_name

    return Path("runs") / run_name(config, config.env.kwargs.get("physics", "original"))


def check_device(config: Config) -> None:
    if config.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("train.device: 'cuda' requested but no CUDA device is available")


def join_ray(address: str | None, source: str) -> None:
    """Join the Ray cluster at ``address`` before any work; a one-line error naming ``source``
    when Ray is not installed or the cluster cannot be joined."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError(
            f"{source}: sampling on Ray needs the ray package: pip install 'metarl[ray]'"
        ) from None
    from metarl.agents.common.ray_sampling import connect

    try:
        connect(address)
    except ConnectionError as error:
        raise UsageError(f"{source}: {error}") from None


def check_sampling(config: Config, address: str | None) -> None:
    """Join Ray when ``sampler.backend`` is ray (at ``--ray-address``, which is for it only)."""
    if config.sampler.backend == "ray":
        join_ray(address, "sampler.backend" if address is None else "--ray-address")
    elif address is not None:
        raise UsageError(
            "--ray-address: the run samples in this process (sampler.backend: local); "
            "add --set sampler.backend=ray to sample on Ray"
        )


def sampled_where_asked(run: LoadedRun, address: str | None) -> LoadedRun:
    """``run`` with its sampler on the Ray cluster at ``--ray-address`` (joined first) when
    given, else in this process, whatever the run was trained with."""
    if address is not None:
        join_ray(address, "--ray-address")
    config = run.config
    sampler = config.sampler.model_copy(update={"backend": "local" if address is None else "ray"})
    return replace(run, config=config.model_copy(update={"sampler": sampler}))


def command_train(args: argparse.Namespace) -> None:
    from metarl.plotting import LEARNING_CURVE_FILE, plot_learning_curves, read_run
    from metarl.rundir import check_new_run_dir, claimed
    from metarl.training import Trainer

    with contextlib.ExitStack() as held:
        if args.resume is not None:
            if args.run_dir is not None or args.overwrite:
                raise UsageError("--resume: --run-dir and --overwrite cannot be combined with it")
            run_dir = args.resume
            _last_checkpoint(run_dir)  # a run, before claimed() could make the folder
            held.enter_context(claimed(run_dir, "--resume"))
            saved, state = resumed_state(run_dir, "train")
            config = resumed_config(args, saved, state)
            check_device(config)
            check_sampling(config, args.ray_address)
            session = start_run(
                args, config, run_dir, lambda: Trainer.resume(run_dir, config, state)
            )
        else:
            config = train_config(args)
            check_device(config)
            check_sampling(config, args.ray_address)
            run_dir = args.run_dir or default_run_dir(config)
            check_new_run_dir(run_dir, args.overwrite)
            held.enter_context(claimed(run_dir, "--run-dir"))
            session = start_run(args, config, run_dir, lambda: new_run(Trainer(config, run_dir)))
        trainer, outputs, tracker = session
        progress, lines = console(args)

        def train(on_iteration: IterationHook) -> None:
            trainer.train(trainer.config.train.num_iterations, progress, on_iteration, lines)
            plot_learning_curves([read_run(run_dir)], run_dir / LEARNING_CURVE_FILE)

        run_session(args, outputs, tracker, train)


def resumed_state(run_dir: Path, command: str) -> tuple[Config, dict[str, Any]]:
    """The config and state of ``run_dir``'s last checkpoint, a run of ``command`` (``train``,
    ``baseline``)."""
    from metarl.checkpoint import load_checkpoint
    from metarl.config import validate_config

    last = _last_checkpoint(run_dir)
    state = load_checkpoint(last)
    try:
        saved = validate_config(state["config"])
    except ConfigError as error:
        raise CheckpointError(f"checkpoint {last}: invalid config ({error})") from None
    if (saved.baseline is None) != (command == "train"):
        kind, other = ("a MAML", "train") if saved.baseline is None else ("a baseline", "baseline")
        raise UsageError(f"--resume {run_dir}: {kind} run; use metarl {other} --resume")
    return saved, state


def resumed_config(args: argparse.Namespace, saved: Config, state: dict[str, Any]) -> Config:
    """``--config`` if given, else the run's saved config, with the overrides of the flags; a
    config change needs ``--allow-config-change``, and the run cannot be shortened."""
    from metarl.checkpoint import environment_change
    from metarl.config import apply_overrides, config_differences

    if args.config is not None:
        config = train_config(args)
    else:
        config = apply_overrides(saved.to_dict(), flag_overrides(args))
    differing = config_differences(saved, config)
    change = environment_change(state)
    if change is not None:
        differing.append(f"the environment ({change})")
    if differing and not args.allow_config_change:
        raise UsageError(
            f"--resume: config differs from the run's in {', '.join(differing)} "
            "(pass --allow-config-change to accept)"
        )
    if config.train.num_iterations < state["iteration"]:
        raise UsageError(
            f"--iterations {config.train.num_iterations}: the run is already at iteration "
            f"{state['iteration']}"
        )
    return config


def _last_checkpoint(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise UsageError(f"--resume {run_dir}: no such run directory")
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise UsageError(f"--resume {run_dir}: no checkpoint to resume from (expected {last})")
    return last


Started = TypeVar("Started", bound="TrainedRun")


def start_run(
    args: argparse.Namespace, config: Config, run_dir: Path, start: Callable[[], Started]
) -> tuple[Started, RunOutputs, WandbTracker | None]:
    """Start the run of ``config`` in ``run_dir`` (new, or ``--resume``): the output flags
    checked, then W&B started (``--track``), then ``start`` called, which builds the trainer and
    writes the run's first files.  If any of them fails, the run directory is left as it was."""
    from metarl.components import make_family
    from metarl.outputs import OutputOptions, RunOutputs, check_rendering
    from metarl.rundir import new_run_dir, restored_on_error
    from metarl.tracking import TrackingOptions, WandbTracker, wandb_run
    from metarl.video import RenderError

    tracking = TrackingOptions.from_args(args) if args.track else None
    if args.video_every > 0:
        try:
            check_rendering(config)
        except RenderError as error:
            raise UsageError(f"--video-every: {error}") from None
    guard = restored_on_error(run_dir) if args.resume else new_run_dir(run_dir, args.overwrite)
    with guard:
        if tracking is None:
            trainer, tracker = start(), None
        else:
            with wandb_run(config, make_family(config).preset, run_dir, tracking) as run:
                trainer = start()
                tracker = WandbTracker(run, trainer, tracking)
    return trainer, RunOutputs(trainer, OutputOptions.from_args(args)), tracker


def new_run(trainer: Started) -> Started:
    """A new run's trainer, its ``config.yaml`` written."""
    trainer.write_config()
    return trainer


def console(args: argparse.Namespace) -> tuple[bool, bool]:
    """Whether to show a progress bar (not with ``--no-progress``) and one line per iteration;
    neither with ``--quiet``."""
    return not (args.quiet or args.no_progress), not args.quiet


def run_session(
    args: argparse.Namespace,
    outputs: RunOutputs,
    tracker: WandbTracker | None,
    train: Callable[[IterationHook], object],
) -> None:
    """``train`` the started run with its videos, final evaluation and W&B tracking, between a
    line naming the run directory and the end-of-run summary (neither with ``--quiet``)."""
    from metarl.outputs import reporting
    from metarl.summary import run_summary

    if not args.quiet:
        print(f"run directory: {outputs.trainer.run_dir}", file=sys.stderr)
    with reporting(outputs, tracker) as on_iteration:
        train(on_iteration)
    if not args.quiet:
        print(run_summary(outputs, tracker), file=sys.stderr)


def adaptation_settings(args: argparse.Namespace):  # noqa: ANN201 - imported lazily
    from metarl.evaluation import AdaptationSettings

    return AdaptationSettings(
        num_tasks=args.tasks,
        num_trajectories=args.trajectories,
        num_steps=args.steps,
        inner_lr=args.inner_lr,
        later_inner_lr=args.later_inner_lr,
        seed=args.seed,
        fill_steps=args.fill_steps,
    )


def command_evaluate(args: argparse.Namespace) -> None:
    from metarl.components import make_family
    from metarl.evaluation import TABLE_FILE, evaluate, load_run, paper_curve, write_evaluation

    if args.inner_lr_grid and args.inner_lr is not None:
        raise UsageError("--inner-lr-grid: cannot be combined with --inner-lr")
    if args.inner_lr_grid and args.steps == 0:
        raise UsageError("--inner-lr-grid: needs --steps >= 1")
    compare = [_read_curve(path) for path in args.compare]
    run = sampled_where_asked(load_run(args.run, args.checkpoint), args.ray_address)
    note_environment_change(run)
    if args.paper:
        try:
            compare.append(paper_curve(run.config, make_family(run.config).preset))
        except ValueError as error:
            raise UsageError(f"--paper: {error}") from None
    evaluation = evaluate(run, adaptation_settings(args), args.inner_lr_grid or ())
    paths = write_evaluation(evaluation, args.out or run.output_dir(), compare)
    print(paths[TABLE_FILE].read_text(), end="")
    print(f"wrote {', '.join(map(str, paths.values()))}", file=sys.stderr)


def note_environment_change(run: LoadedRun) -> None:
    """A line on stderr when ``run`` was trained on another version of its family's env."""
    if run.environment_change is not None:
        print(
            f"note: {run.name} was trained on {run.environment_change}: it runs on the latter",
            file=sys.stderr,
        )


def _read_curve(path: Path):  # noqa: ANN202 - imported lazily
    from metarl.evaluation import Curve

    try:
        return Curve.from_file(path)
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f"--compare {path}: not a readable evaluation.json ({error})") from None


def command_video(args: argparse.Namespace) -> None:
    from metarl.evaluation import load_run
    from metarl.video import RenderError, record_adaptation

    run = load_run(args.run, args.checkpoint)
    note_environment_change(run)
    out = args.out or run.output_dir() / "adaptation.mp4"
    if out.suffix != ".mp4":
        raise UsageError(f"--out {out}: expected a .mp4 file")
    run = sampled_where_asked(run, args.ray_address)
    try:
        stats = record_adaptation(run.config, run.policy, adaptation_settings(args), out, args.size)
    except RenderError as error:
        raise UsageError(str(error)) from None
    num_cells = args.tasks * (args.steps + 1)
    print(
        f"wrote {stats.path}: {stats.num_frames} frames at {stats.fps} fps, "
        f"{args.tasks} tasks x {args.steps + 1} columns; rendering "
        f"{1000 * stats.seconds_render / stats.num_frames / num_cells:.2f} ms per cell frame, "
        f"{stats.seconds_render / num_cells:.2f} s per clip; total {stats.seconds_total:.2f} s",
        file=sys.stderr,
    )


def command_plot(args: argparse.Namespace) -> None:
    from metarl.plotting import (
        LEARNING_CURVE_FILE,
        labelled_groups,
        plot_learning_curves,
        read_run,
    )

    out = args.out or (
        args.runs[0] / LEARNING_CURVE_FILE if len(args.runs) == 1 else Path("learning_curves.png")
    )
    if out.suffix != ".png":
        raise UsageError(f"--out {out}: expected a .png file")
    runs = []
    for run_dir in args.runs:
        try:
            runs.append(read_run(run_dir))
        except (ValueError, KeyError, TypeError) as error:
            raise UsageError(f"{run_dir}: not a readable run ({error})") from None
    try:
        labelled_groups(runs, args.labels)
    except ValueError as error:
        raise UsageError(f"--labels: {error}") from None
    plot_learning_curves(runs, out, args.smooth, args.labels)
    print(f"wrote {out}", file=sys.stderr)


def baseline_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides of ``metarl baseline``'s flags (the oracle observes the task)."""
    overrides = [*args.overrides, f"baseline.method={args.method}"]
    for flag, key in (
        ("algo", "algorithm"),
        ("steps", "total_steps"),
        ("steps_per_update", "steps_per_update"),
    ):
        if getattr(args, flag) is not None:
            overrides.append(f"baseline.{key}={getattr(args, flag)}")
    if args.method == "oracle":
        overrides.append("env.kwargs.oracle=true")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    return overrides


# ``metarl baseline`` flags that a resumed run takes from its checkpoint instead.
FIXED_ON_RESUME = {
    "run_dir": "--run-dir",
    "overwrite": "--overwrite",
    "config": "--config",
    "overrides": "--set",
    "seed": "--seed",
    "algo": "--algo",
    "steps_per_update": "--steps-per-update",
}


def command_baseline(args: argparse.Namespace) -> None:
    from metarl.baselines import BaselineTrainer
    from metarl.checkpoint import environment_change
    from metarl.config import apply_overrides, load_config, resolve_config_path
    from metarl.rundir import check_new_run_dir, claimed

    with contextlib.ExitStack() as held:
        if args.resume is not None:
            unset: tuple[object, ...] = (None, False, [])
            given = [
                flag for name, flag in FIXED_ON_RESUME.items() if getattr(args, name) not in unset
            ]
            if given:
                raise UsageError(f"--resume: {', '.join(given)} cannot be combined with it")
            run_dir = args.resume
            _last_checkpoint(run_dir)  # a run, before claimed() could make the folder
            held.enter_context(claimed(run_dir, "--resume"))
            config, state = resumed_state(run_dir, "baseline")
            change = environment_change(state)
            if change is not None:
                raise UsageError(f"--resume {run_dir}: the environment changed ({change})")
            method = config.baseline.method if config.baseline is not None else None
            if method != args.method:
                raise UsageError(f"--resume {run_dir}: a {method} run, not {args.method}")
            if args.steps is not None:  # a longer budget
                config = apply_overrides(config.to_dict(), [f"baseline.total_steps={args.steps}"])
            session = start_run(
                args, config, run_dir, lambda: BaselineTrainer.resume(run_dir, config, state)
            )
        else:
            config = load_config(resolve_config_path(args.config), baseline_overrides(args))
            default = Path("runs") / f"{args.method}__{default_run_dir(config).name}"
            run_dir = args.run_dir or default
            check_new_run_dir(run_dir, args.overwrite)
            held.enter_context(claimed(run_dir, "--run-dir"))
            session = start_run(
                args, config, run_dir, lambda: new_run(BaselineTrainer(config, run_dir))
            )
        trainer, outputs, tracker = session
        progress, lines = console(args)
        run_session(
            args,
            outputs,
            tracker,
            lambda on_iteration: trainer.train(progress, on_iteration, lines),
        )


def command_reproduce(args: argparse.Namespace) -> None:
    if args.alternatives:
        command_alternatives(args)
        return
    from metarl.reproduce import reproduce

    results = reproduce(
        args.task,
        args.runs_dir,
        args.docs,
        args.seeds,
        args.overrides,
        args.progress,
        args.baseline_overrides,
    )
    print(f"wrote {results} and {args.docs / 'results'}/{args.task}*", file=sys.stderr)


def command_alternatives(args: argparse.Namespace) -> None:
    from metarl.alternatives import compare

    if args.baseline_overrides:
        raise UsageError("--baseline-set: --alternatives trains no stable-baselines3 baseline")
    results = compare(
        args.task, args.runs_dir, args.docs, args.seeds, args.overrides, args.progress
    )
    print(f"wrote {results} and {args.docs / 'results'}/alternatives_{args.task}*", file=sys.stderr)


def command_list(args: argparse.Namespace) -> None:
    from metarl.listing import listing

    print(listing())


COMMANDS = {
    "train": command_train,
    "evaluate": command_evaluate,
    "video": command_video,
    "plot": command_plot,
    "baseline": command_baseline,
    "reproduce": command_reproduce,
    "list": command_list,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ConfigError, CheckpointError, UsageError, TrackingError) as error:
        print(f"metarl {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout left (e.g. `metarl list | head`): as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"metarl {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except RejectionLimitError as error:
        print(f"metarl {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"metarl {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
