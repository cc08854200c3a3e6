"""Weights & Biases tracking of a training run (``--track``).

:func:`wandb_run` starts the W&B run before the training run writes anything (so that a failure
leaves the run directory as it was) and records its id in ``RUN_DIR/wandb_run.json``: a resumed
training run continues the same W&B run, its history one sequence of steps.  A
:class:`WandbTracker` then mirrors the run: each iteration's metrics (grouped names,
:func:`metarl.logging.grouped_name`) plus env steps per second, logged at step = iteration with
``progress/env_steps`` as every metric's x-axis; the best return so far as the summary's
``best/*``; the videos and the final evaluation of :mod:`metarl.outputs`; with
``--wandb-artifacts``, the checkpoints and evaluation files as artifacts.

Without ``--wandb-mode`` the run is *online* only when W&B credentials are configured
(``WANDB_API_KEY`` or a ``wandb login`` entry in ``~/.netrc``) and *offline* otherwise, so training
never needs the network; ``wandb sync`` uploads offline runs later (a resumed run's folders as one
run).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import netrc
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from metarl.checkpoint import atomic_write_bytes
from metarl.config import Config, run_name
from metarl.errors import TrackingError, UsageError, first_line
from metarl.evaluation import PLOT_FILE
from metarl.logging import grouped_name
from metarl.outputs import FinalEvaluation, TrainedRun
from metarl.video import VideoStats

MODES = ("online", "offline", "disabled")
DEFAULT_PROJECT = "metarl"
RUN_FILE = "wandb_run.json"  # in the run directory: the W&B run's id, name, project and entity


@dataclass(frozen=True)
class TrackingOptions:
    """The W&B flags of ``metarl train`` and ``metarl baseline`` (``None``: the recorded run's
    project and entity, else the defaults)."""

    project: str | None
    entity: str | None
    group: str | None
    mode: str
    tags: tuple[str, ...]
    artifacts: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrackingOptions:
        return cls(
            args.wandb_project,
            args.wandb_entity,
            args.wandb_group,
            wandb_mode(args.wandb_mode),
            tuple(args.wandb_tags),
            args.wandb_artifacts,
        )


def wandb_mode(requested: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """``requested``, else ``WANDB_MODE``, else online with credentials and offline without."""
    if requested is not None:
        return requested
    mode = environ.get("WANDB_MODE")
    if mode and mode not in MODES:
        raise UsageError(f"WANDB_MODE={mode}: expected one of {', '.join(MODES)}")
    return mode or ("online" if has_credentials(environ) else "offline")


def has_credentials(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``WANDB_API_KEY`` is set or ``wandb login`` stored a key in the netrc file."""
    if environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = Path(environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return host is not None and netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def algorithm_tag(config: Config) -> str:
    """``algorithm.name`` (``maml_trpo``, ``reptile``), or the baseline's learner and method
    (``sb3_trpo_pretrained``)."""
    baseline = config.baseline
    if baseline is None:
        return config.algorithm.name
    return f"sb3_{baseline.algorithm}_{baseline.method}"


def saved_run(run_dir: Path) -> dict[str, Any]:
    """The W&B run recorded in ``run_dir`` (``id``, ``name``, ``project``, ``entity``), or an
    empty dict if none is."""
    path = run_dir / RUN_FILE
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        saved = first_line(error)
    if not isinstance(saved, dict) or not isinstance(saved.get("id"), str):
        raise UsageError(f"{path}: expected the W&B run's id, got {saved!r} (move it away)")
    return saved


@contextlib.contextmanager
def wandb_run(
    config: Config, preset: str, run_dir: Path, options: TrackingOptions
) -> Iterator[Any]:
    """The W&B run of the training run in ``run_dir``, for the block that starts the training
    run: the run recorded in ``RUN_FILE`` continued (same id, name, project and entity), else a
    new run, recorded there.  If W&B cannot start, :class:`TrackingError` (one line); if the
    block raises, the W&B run is closed as failed, without W&B's footer (it names the files
    that the caller removes)."""
    import wandb

    saved = saved_run(run_dir)
    resolved = config.to_dict()
    resolved["env"]["physics"] = preset
    try:
        run = wandb.init(
            project=options.project or saved.get("project") or DEFAULT_PROJECT,
            entity=options.entity or saved.get("entity"),
            group=options.group,
            name=saved.get("name") or run_name(config, preset),
            id=saved.get("id"),
            resume="allow" if saved else None,
            allow_val_change=bool(saved),
            tags=[config.env.family, preset, algorithm_tag(config), *options.tags],
            config=resolved,
            mode=options.mode,  # type: ignore[arg-type]
            dir=run_dir,
            job_type="train",
        )
    except (wandb.Error, ValueError, OSError) as error:
        _close_quietly(wandb, None)
        raise TrackingError(f"W&B: cannot start the run ({first_line(error)})") from None
    try:
        if not saved and options.mode != "disabled":
            recorded = {"id": run.id, "name": run.name, "project": run.project}
            recorded["entity"] = run.entity or None
            atomic_write_bytes(run_dir / RUN_FILE, (json.dumps(recorded) + "\n").encode())
        yield run
    except BaseException:
        _close_quietly(wandb, run)
        raise


def _close_quietly(wandb: Any, run: Any) -> None:
    """Finish ``run`` as failed (if any) and stop W&B, without the footer of a started run."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        if run is not None:
            run.finish(exit_code=1)
        wandb.teardown()


class WandbTracker:
    """Mirrors a training run into its W&B run (:class:`~metarl.outputs.Reporter`)."""

    def __init__(self, run: Any, trainer: TrainedRun, options: TrackingOptions) -> None:
        import wandb

        self.wandb = wandb
        self.run = run
        self.trainer = trainer
        self.options = options
        self.url = run.url if options.mode == "online" else None
        run.define_metric(grouped_name("env_steps"))
        run.define_metric("*", step_metric=grouped_name("env_steps"))
        self.env_steps = trainer.env_steps

    def log(self, record: dict[str, Any], video: VideoStats | None) -> None:
        """Log one iteration (with its video, if any) and the best return so far."""
        data: dict[str, Any] = {grouped_name(key): value for key, value in record.items()}
        new_steps = record["env_steps"] - self.env_steps
        data["time/env_steps_per_second"] = new_steps / max(record["time_iteration"], 1e-9)
        self.env_steps = record["env_steps"]
        if video is not None:
            data["video/adaptation"] = self.wandb.Video(str(video.path))
            data["time/video"] = video.seconds_total
        self.run.log(data, step=record["iteration"])
        self.run.summary.update(self.best())

    def best(self) -> dict[str, float]:
        """``best/{metric}`` (the return ``best.pt`` holds) and ``best/iteration``."""
        trainer = self.trainer
        if trainer.best is None or not math.isfinite(trainer.best_return):
            return {}
        return {
            f"best/{trainer.best_metric}": trainer.best_return,
            "best/iteration": trainer.best["iteration"],
        }

    def finish(self, evaluation: FinalEvaluation | None) -> None:
        """Log the final evaluation and (``--wandb-artifacts``) the artifacts, close the run."""
        if evaluation is not None:
            self.run.log(self.evaluation_data(evaluation), step=self.trainer.iteration)
        if self.options.artifacts:
            self.log_artifacts(evaluation)
        self.run.finish()
        self.wandb.teardown()  # wait until W&B has written (or uploaded) everything

    def fail(self) -> None:
        self.run.finish(exit_code=1)
        self.wandb.teardown()

    def evaluation_data(self, evaluation: FinalEvaluation) -> dict[str, Any]:
        result = evaluation.result
        table = self.wandb.Table(columns=["steps", "mean", "stderr"])
        for step, mean, stderr in zip(result.steps, result.mean, result.stderr):
            table.add_data(step, mean, stderr)
        data: dict[str, Any] = {
            f"eval/return_step{k}": m for k, m in zip(result.steps, result.mean)
        }
        data["eval/table"] = table
        data["eval/plot"] = self.wandb.Image(str(evaluation.paths[PLOT_FILE]))
        return data

    def log_artifacts(self, evaluation: FinalEvaluation | None) -> None:
        """``checkpoints-{id}`` (type ``model``: ``best.pt``, ``last.pt``) and, after a final
        evaluation, ``evaluation-{id}`` (its files); a resumed run adds a version of each."""
        names = ("best.pt", "last.pt")
        checkpoints = [self.trainer.checkpoint_path(name) for name in names]
        files = {
            ("checkpoints", "model"): [path for path in checkpoints if path.is_file()],
            ("evaluation", "evaluation"): list(evaluation.paths.values()) if evaluation else [],
        }
        aliases = [f"iteration-{self.trainer.iteration}"]  # and W&B's own "latest"
        for (name, kind), paths in files.items():
            if paths:
                artifact = self.wandb.Artifact(
                    f"{name}-{self.run.id}", type=kind, metadata=self.best()
                )
                for path in paths:
                    artifact.add_file(str(path))
                self.run.log_artifact(artifact, aliases=aliases)
