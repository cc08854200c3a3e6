"""Weights & Biases tracking of a training run (``metarl train --track``).

Hooked into :meth:`Trainer.train` through its ``on_iteration`` callback: each meta-iteration's
metrics (grouped names, :func:`metarl.logging.grouped_name`) plus env steps per second, logged at
step = iteration with ``progress/env_steps`` as every metric's x-axis; an adaptation video every
``--video-every`` iterations; a short held-out evaluation (table, plot) when training ends.

Without ``--wandb-mode`` the run is *online* only when W&B credentials are configured
(``WANDB_API_KEY`` or a ``wandb login`` entry in ``~/.netrc``) and *offline* otherwise, so training
never needs the network; ``wandb sync`` uploads offline runs later.
"""

from __future__ import annotations

import argparse
import contextlib
import netrc
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from metarl.agents.common.policies import GaussianMLPPolicy
from metarl.config import Config, run_method, run_name
from metarl.envs import TaskFamily
from metarl.evaluation import PLOT_FILE, AdaptationSettings, LoadedRun, evaluate, write_evaluation
from metarl.logging import grouped_name
from metarl.training import IterationHook
from metarl.video import record_adaptation

MODES = ("online", "offline", "disabled")
VIDEO_TASKS = 2


@dataclass(frozen=True)
class TrackingOptions:
    """The ``--track`` flags of ``metarl train``."""

    project: str
    entity: str | None
    group: str | None
    mode: str
    video_every: int
    eval_tasks: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrackingOptions:
        return cls(
            args.wandb_project,
            args.wandb_entity,
            args.wandb_group,
            wandb_mode(args.wandb_mode),
            args.video_every,
            args.eval_tasks,
        )


def wandb_mode(requested: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """``requested``, else ``WANDB_MODE``, else online with credentials and offline without."""
    if requested is not None:
        return requested
    if environ.get("WANDB_MODE"):
        return environ["WANDB_MODE"]
    return "online" if has_credentials(environ) else "offline"


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


class TrackedRun(Protocol):
    """What tracking reads of a run: a MAML :class:`~metarl.training.Trainer` or a
    :class:`~metarl.baselines.BaselineTrainer`."""

    config: Config
    family: TaskFamily
    policy: GaussianMLPPolicy
    run_dir: Path
    iteration: int
    env_steps: int

    def checkpoint_path(self, name: str) -> Path: ...


def algorithm_tag(config: Config) -> str:
    """``algorithm.name`` (``maml_trpo``, ``reptile``), or the baseline's learner and method
    (``sb3_trpo_pretrained``)."""
    baseline = config.baseline
    if baseline is None:
        return config.algorithm.name
    return f"sb3_{baseline.algorithm}_{baseline.method}"


def is_oracle(config: Config) -> bool:
    """Whether the run is an oracle (told the task: never adapted)."""
    return run_method(config) == "oracle"


class WandbTracker:
    """One W&B run mirroring a training run's metrics, videos and final evaluation."""

    def __init__(self, trainer: TrackedRun, options: TrackingOptions) -> None:
        import wandb

        self.wandb = wandb
        self.trainer = trainer
        self.options = options
        config = trainer.config.to_dict()
        config["env"]["physics"] = trainer.family.preset
        self.run = wandb.init(
            project=options.project,
            entity=options.entity,
            group=options.group,
            name=run_name(trainer.config, trainer.family.preset),
            tags=[trainer.config.env.family, trainer.family.preset, algorithm_tag(trainer.config)],
            config=config,
            mode=options.mode,  # type: ignore[arg-type]
            dir=trainer.run_dir,
            job_type="train",
        )
        self.run.define_metric(grouped_name("env_steps"))
        self.run.define_metric("*", step_metric=grouped_name("env_steps"))
        self.env_steps = trainer.env_steps

    def on_iteration(self, record: dict[str, Any]) -> None:
        """Log one meta-iteration (and a video every ``video_every`` iterations)."""
        data: dict[str, Any] = {grouped_name(key): value for key, value in record.items()}
        new_steps = record["env_steps"] - self.env_steps
        data["time/env_steps_per_second"] = new_steps / max(record["time_iteration"], 1e-9)
        self.env_steps = record["env_steps"]
        iteration = record["iteration"]
        every = self.options.video_every
        if every > 0 and iteration % every == 0:
            data.update(self.video(iteration))
        self.run.log(data, step=iteration)

    def video(self, iteration: int) -> dict[str, Any]:
        """An adaptation video of the current policy on a few held-out tasks, adapted with as many
        inner steps as in training."""
        path = self.trainer.run_dir / "videos" / f"adaptation_{iteration:05d}.mp4"
        config = self.trainer.config
        num_steps = 0 if is_oracle(config) else config.algorithm.num_inner_steps
        settings = AdaptationSettings(num_tasks=VIDEO_TASKS, num_steps=num_steps)
        stats = record_adaptation(self.trainer.config, self.trainer.policy, settings, path)
        return {
            "video/adaptation": self.wandb.Video(str(path), fps=stats.fps, format="mp4"),
            "time/video": stats.seconds_total,
        }

    def finish(self) -> None:
        """Evaluate the final policy on held-out tasks, log the results and close the run."""
        if self.options.eval_tasks > 0:
            self.run.log(self.evaluation(), step=self.trainer.iteration)
        self.run.finish()

    def evaluation(self) -> dict[str, Any]:
        trainer = self.trainer
        run = LoadedRun(trainer.config, trainer.policy, trainer.checkpoint_path("last.pt"))
        settings = AdaptationSettings(num_tasks=self.options.eval_tasks)  # 0..3 steps
        if is_oracle(trainer.config):
            settings = replace(settings, num_steps=0)
        result = evaluate(run, settings)
        paths = write_evaluation(result, run.output_dir())
        table = self.wandb.Table(columns=["steps", "mean", "stderr"])
        for step, mean, stderr in zip(result.steps, result.mean, result.stderr):
            table.add_data(step, mean, stderr)
        data: dict[str, Any] = {
            f"eval/return_step{k}": m for k, m in zip(result.steps, result.mean)
        }
        data["eval/table"] = table
        data["eval/plot"] = self.wandb.Image(str(paths[PLOT_FILE]))
        return data


@contextlib.contextmanager
def tracking(
    trainer: TrackedRun, options: TrackingOptions | None
) -> Iterator[IterationHook | None]:
    """The ``on_iteration`` hook of a W&B run (None without ``options``); the run is finished
    (with the final evaluation) when training ends, or marked failed on an error."""
    if options is None:
        yield None
        return
    tracker = WandbTracker(trainer, options)
    try:
        yield tracker.on_iteration
    except BaseException:
        tracker.run.finish(exit_code=1)
        raise
    else:
        tracker.finish()
    finally:
        tracker.wandb.teardown()  # wait until W&B has written (or uploaded) everything
