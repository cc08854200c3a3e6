"""The ``metarl`` command line: ``metarl train`` (and more subcommands as they land).

Every user error ends as one line on stderr and exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime
from importlib import resources
from pathlib import Path

from metarl.checkpoint import CheckpointError, load_checkpoint
from metarl.config import Config, ConfigError, load_config, validate_config

DEFAULT_CONFIG = "navigation"


class UsageError(ValueError):
    """A bad command-line flag or run directory (one-line message)."""


def bundled_configs() -> list[str]:
    """Names of the configs shipped in ``configs/`` (usable as ``--config NAME``)."""
    return sorted(
        p.name.removesuffix(".yaml")
        for p in resources.files("configs").iterdir()
        if p.name.endswith(".yaml")
    )


def resolve_config_path(value: str | None) -> Path:
    """A path to a YAML file, or the name of a bundled config (``navigation``)."""
    name = value or DEFAULT_CONFIG
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in name:
        return path
    if name in bundled_configs():
        return Path(str(resources.files("configs") / f"{name}.yaml"))
    raise ConfigError(
        f"--config {name}: no such file or bundled config; bundled: {bundled_configs()}"
    )


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="metarl", description="Meta-reinforcement learning with MAML-TRPO.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    train = commands.add_parser("train", help="meta-train a policy")
    train.add_argument(
        "--config", help=f"YAML file or bundled config name (default: {DEFAULT_CONFIG})"
    )
    train.add_argument("--run-dir", type=Path, help="output folder (default: runs/<name>)")
    train.add_argument("--seed", type=_non_negative_int, help="run seed (train.seed)")
    train.add_argument(
        "--iterations", type=_positive_int, help="number of meta-iterations (train.num_iterations)"
    )
    train.add_argument("--device", choices=["cpu", "cuda"], help="learning device")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. algorithm.inner_lr=0.5 (repeatable)",
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace an existing, non-empty run directory"
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
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def train_config(args: argparse.Namespace) -> Config:
    """The run's config: file (or bundled default), ``--set`` overrides, then dedicated flags."""
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.iterations is not None:
        overrides.append(f"train.num_iterations={args.iterations}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    return load_config(resolve_config_path(args.config), overrides)


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    preset = config.env.kwargs.get("physics", "original")
    return Path("runs") / f"{config.env.family}__{preset}__{config.train.seed}__{stamp}"


def check_device(config: Config) -> None:
    if config.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("train.device: 'cuda' requested but no CUDA device is available")


def command_train(args: argparse.Namespace) -> None:
    from metarl.training import Trainer

    if args.resume is not None:
        trainer = resume_trainer(args)
    else:
        config = train_config(args)
        check_device(config)
        run_dir = args.run_dir or default_run_dir(config)
        prepare_run_dir(run_dir, args.overwrite)
        trainer = Trainer(config, run_dir)
        trainer.write_config()
    print(f"run directory: {trainer.run_dir}", file=sys.stderr)
    trainer.train(trainer.config.train.num_iterations, progress=not args.no_progress)


def resume_trainer(args: argparse.Namespace):  # noqa: ANN201 - Trainer imported lazily
    from metarl.training import Trainer

    run_dir: Path = args.resume
    if args.run_dir is not None or args.overwrite:
        raise UsageError("--resume: --run-dir and --overwrite cannot be combined with it")
    state = load_checkpoint(_last_checkpoint(run_dir))
    saved = validate_config(state["config"])
    config = saved
    if args.config is not None or args.overrides or args.seed is not None or args.device:
        config = train_config(args)
    elif args.iterations is not None:
        config = saved.model_copy(deep=True)
        config.train.num_iterations = args.iterations
    differing = config_differences(saved, config)
    if differing and not args.allow_config_change:
        raise UsageError(
            f"--resume: config differs from the run's in {', '.join(differing)} "
            "(pass --allow-config-change to accept)"
        )
    check_device(config)
    return Trainer.resume(run_dir, config)


def _last_checkpoint(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise UsageError(f"--resume {run_dir}: no such run directory")
    return run_dir / "checkpoints" / "last.pt"


def config_differences(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ (``train.num_iterations`` may change freely)."""
    flat_a, flat_b = _flatten(a.to_dict()), _flatten(b.to_dict())
    keys = sorted(set(flat_a) | set(flat_b))
    return [k for k in keys if flat_a.get(k) != flat_b.get(k) and k != "train.num_iterations"]


def _flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse to reuse a non-empty run directory unless ``overwrite``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--run-dir {run_dir}: exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            raise UsageError(
                f"--run-dir {run_dir}: already exists and is not empty "
                "(pass --overwrite to replace it, or --resume to continue it)"
            )
        shutil.rmtree(run_dir)


COMMANDS = {"train": command_train}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ConfigError, CheckpointError, UsageError) as error:
        print(f"metarl {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metarl {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
