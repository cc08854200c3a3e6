"""What a training run writes besides its metrics and checkpoints, with or without W&B: an
adaptation video every ``--video-every`` iterations (``videos/adaptation_NNNNN.mp4``) and, when
training ends, a held-out evaluation of ``--eval-tasks`` tasks (``evaluation/``).  A
:class:`Reporter` (the W&B tracker of ``--track``) receives each iteration's record with its
video, then the evaluation."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from metarl.agents.common.policies import GaussianMLPPolicy
from metarl.components import make_family
from metarl.config import Config, run_method
from metarl.envs import TaskFamily
from metarl.evaluation import AdaptationSettings, Evaluation, LoadedRun, evaluate, write_evaluation
from metarl.training import IterationHook
from metarl.video import VideoStats, record_adaptation, render_slots

VIDEO_TASKS = 2
VIDEOS_DIR = "videos"


@dataclass(frozen=True)
class OutputOptions:
    """The ``--video-every`` and ``--eval-tasks`` flags."""

    video_every: int
    eval_tasks: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OutputOptions:
        return cls(args.video_every, args.eval_tasks)


class TrainedRun(Protocol):
    """What the outputs read of a run: a MAML :class:`~metarl.training.Trainer` or a
    :class:`~metarl.baselines.BaselineTrainer`."""

    config: Config
    family: TaskFamily
    policy: GaussianMLPPolicy
    run_dir: Path
    iteration: int
    env_steps: int
    best_metric: ClassVar[str]
    best_return: float
    best: dict[str, Any] | None

    def checkpoint_path(self, name: str) -> Path: ...

    def write_config(self) -> None: ...


@dataclass
class FinalEvaluation:
    """The held-out evaluation written when training ends, and its files."""

    result: Evaluation
    paths: dict[str, Path]


class Reporter(Protocol):
    """Where the outputs go besides the run directory (W&B)."""

    def log(self, record: dict[str, Any], video: VideoStats | None) -> None: ...

    def finish(self, evaluation: FinalEvaluation | None) -> None: ...

    def fail(self) -> None: ...


def is_oracle(config: Config) -> bool:
    """Whether the run is an oracle (told the task: never adapted)."""
    return run_method(config) == "oracle"


def check_rendering(config: Config) -> None:
    """Draw one frame of the config's family (a family of its own, so that the run's task stream
    is untouched): a :class:`~metarl.video.RenderError` before training rather than at the
    first video."""
    family = make_family(config, seed=0)
    env = family.make_batched_env(1)
    try:
        env.set_tasks(family.sample_tasks(1))
        env.reset(np.random.default_rng(0))
        render_slots(env, 8)
    finally:
        env.close()


@dataclass
class RunOutputs:
    """The videos and the final evaluation of ``trainer``'s run, per ``options``."""

    trainer: TrainedRun
    options: OutputOptions
    evaluation: FinalEvaluation | None = None  # once written

    def video(self, iteration: int) -> VideoStats | None:
        """Every ``video_every`` iterations: the current policy on a few held-out tasks, adapted
        with as many inner steps as in training."""
        every = self.options.video_every
        if every == 0 or iteration % every:
            return None
        config = self.trainer.config
        num_steps = 0 if is_oracle(config) else config.algorithm.num_inner_steps
        settings = AdaptationSettings(num_tasks=VIDEO_TASKS, num_steps=num_steps)
        path = self.trainer.run_dir / VIDEOS_DIR / f"adaptation_{iteration:05d}.mp4"
        return record_adaptation(config, self.trainer.policy, settings, path)

    def evaluate(self) -> FinalEvaluation | None:
        """The final policy on ``eval_tasks`` held-out tasks, after 0..3 steps (an oracle: 0),
        written to ``RUN_DIR/evaluation/``."""
        if self.options.eval_tasks == 0:
            return None
        trainer = self.trainer
        run = LoadedRun(trainer.config, trainer.policy, trainer.checkpoint_path("last.pt"))
        settings = AdaptationSettings(num_tasks=self.options.eval_tasks)
        if is_oracle(trainer.config):
            settings = replace(settings, num_steps=0)
        result = evaluate(run, settings)
        self.evaluation = FinalEvaluation(result, write_evaluation(result, run.output_dir()))
        return self.evaluation


@contextlib.contextmanager
def reporting(outputs: RunOutputs, reporter: Reporter | None) -> Iterator[IterationHook]:
    """The ``on_iteration`` hook of training: the iteration's video, then the record and video
    to ``reporter``.  When training ends, the final evaluation (to ``reporter`` too, which is
    then finished); if it fails, ``reporter`` is marked failed."""

    def on_iteration(record: dict[str, Any]) -> None:
        video = outputs.video(record["iteration"])
        if reporter is not None:
            reporter.log(record, video)

    try:
        yield on_iteration
        evaluation = outputs.evaluate()
    except BaseException:
        if reporter is not None:
            reporter.fail()
        raise
    if reporter is not None:
        reporter.finish(evaluation)
