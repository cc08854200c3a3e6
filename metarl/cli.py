"""The ``metarl`` command line: ``train``, ``evaluate``, ``video``, ``plot``, ``baseline``,
``reproduce`` and ``list``.

Every user error ends as one line on stderr and exit status 2, before any work starts; a run
stopped by too many meta-steps rejected for NaN or Inf ends with one line and exit status 1.
Each command imports what it needs (torch, W&B, ...) when it runs: ``metarl --help`` does not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from metarl.arguments import build_parser
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
    from metarl.checkpoint import resume_differences
    from metarl.config import apply_overrides

    if args.config is not None:
        config = train_config(args)
    else:
        config = apply_overrides(saved.to_dict(), flag_overrides(args))
    differing = resume_differences(saved, config, state)
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
