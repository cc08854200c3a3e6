"""The training loop: config -> task family -> sampler -> agent -> metrics and checkpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml

from metarl import envs
from metarl.agents.common.numerics import NonFiniteError
from metarl.agents.common.sampling import BatchSampler
from metarl.agents.maml_trpo import MetaStepInfo
from metarl.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    comparable_best_return,
    environments_before,
    remove_stale_temp_files,
    save_checkpoint,
)
from metarl.components import (
    Agent,
    build_agent,
    build_policy,
    build_sampler,
    derived_seeds,
    make_family,
)
from metarl.config import Config
from metarl.errors import RejectionLimitError
from metarl.logging import MetricsLog, Progress, summary_line

CONFIG_FILE = "config.yaml"
STATE_KEYS = (
    "iteration",
    "env_steps",
    "best_return",
    "rejected_steps",
    "consecutive_rejections",
    "config",
    "policy",
    "task_rng",
    "sampler",
    "metrics_lines",
    "best",
)
IterationHook = Callable[[dict[str, Any]], None]
LEARNING_PHASES = ("adaptation", "meta_gradient", "conjugate_gradient", "line_search")
TIMED_PHASES = ("sampling", *LEARNING_PHASES)


def meta_iteration(
    agent: Agent, tasks: Sequence[envs.Task], sampler: BatchSampler
) -> tuple[dict[str, float], MetaStepInfo]:
    """Collect, adapt and meta-update once; returns the iteration's metrics (env steps,
    returns before and after adaptation, the meta-step's outcome, seconds per phase) and
    the meta-step.  A meta-step that meets a NaN or an Inf is rejected, not raised."""
    agent.timer.pop()
    batch = agent.collect(tasks, sampler)
    try:
        step = agent.meta_step(batch)
    except NonFiniteError as error:  # rejected before the meta-parameters changed
        step = MetaStepInfo.rejected(error.stage)
    seconds = agent.timer.pop()
    before = batch.train[0] if batch.train else batch.valid
    metrics: dict[str, float] = {
        "env_steps": sum(e.env_steps for e in batch.train) + batch.valid.env_steps,
        "return_pre": before.mean_return(),
        "return_post": batch.valid.mean_return(),
        "kl": step.kl,
        "surrogate_before": step.surrogate_before,
        "surrogate_after": step.surrogate_after,
        "line_search_steps": step.line_search_steps,
        "step_accepted": float(step.accepted),
        **{f"time_{phase}": seconds.get(phase, 0.0) for phase in TIMED_PHASES},
    }
    metrics["time_learning"] = sum(seconds.get(phase, 0.0) for phase in LEARNING_PHASES)
    for i, episodes in enumerate(batch.train[1:], start=1):
        metrics[f"return_step{i}"] = episodes.mean_return()
    if batch.valid.success is not None:  # families that report success (Meta-World)
        metrics["success_pre"] = before.success_rate()
        metrics["success_post"] = batch.valid.success_rate()
    return metrics, step


class Trainer:
    """Meta-trains a policy per ``config``, writing ``run_dir``:

    * ``config.yaml`` — the resolved config (physics preset included);
    * ``metrics.jsonl`` — one JSON object per meta-iteration;
    * ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (by ``return_post``), atomic.

    ``last.pt`` holds the whole training state (see :meth:`state_dict`), ``best.pt`` included,
    so a resumed run repeats the uninterrupted one exactly and restores a consistent ``best.pt``.
    """

    best_metric: ClassVar[str] = "return_post"  # the metrics.jsonl key that best.pt maximises

    def __init__(self, config: Config, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        seeds = derived_seeds(config.train.seed)
        self.family = make_family(config, seed=seeds["tasks"])
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seeds["policy_init"])
        self.policy = build_policy(config, self.family).to(config.train.device)
        torch.random.set_rng_state(generator_state)
        self.agent = build_agent(config, self.policy)
        self.sampler = build_sampler(
            config, self.family, config.algorithm.num_trajectories, seeds["sampler"]
        )
        self.metrics = MetricsLog(run_dir)
        self.iteration = 0
        self.env_steps = 0
        self.best_return = -float("inf")
        self.best: dict[str, Any] | None = None  # the content of best.pt
        self.rejected_steps = 0  # meta-steps rejected for a NaN or an Inf, in total ...
        self.consecutive_rejections = 0  # ... and in a row up to now
        # earlier versions of the family's environment, where a resume accepted a change:
        # [last iteration trained on it, its gymnasium id, the physics preset]
        self.env_before: list[list[Any]] = []

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The whole training state: meta-parameters, every random stream, counters, the config,
        the environment versions trained on (``env_id``, ``env_before``), the number of lines of
        ``metrics.jsonl`` it matches, and the content of ``best.pt``."""
        return {**self._snapshot(), "best": self.best}

    def _snapshot(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "best_return": self.best_return,
            "rejected_steps": self.rejected_steps,
            "consecutive_rejections": self.consecutive_rejections,
            "config": self.config.to_dict(),
            "env_id": envs.env_id(self.config.env.family),
            "env_before": [list(span) for span in self.env_before],
            "policy": {k: v.detach().clone() for k, v in self.policy.state_dict().items()},
            "task_rng": self.family.rng.bit_generator.state,
            "sampler": self.sampler.state_dict(),
            "metrics_lines": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, the state's environment version added to ``env_before``
        where it is not this metarl's; a state that does not fit raises :class:`CheckpointError`."""
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise CheckpointError(f"missing {', '.join(missing)}")
        try:
            self.policy.load_state_dict(state["policy"])
            self.family.rng.bit_generator.state = state["task_rng"]
            self.sampler.load_state_dict(state["sampler"])
            self.metrics.truncate(state["metrics_lines"])
        except (RuntimeError, ValueError, TypeError, KeyError) as error:
            reason = " ".join(line.strip() for line in str(error).splitlines())
            raise CheckpointError(f"does not fit this run ({reason})") from None
        self.iteration = state["iteration"]
        self.env_steps = state["env_steps"]
        self.best_return = comparable_best_return(state)
        self.best = state["best"]
        self.rejected_steps = state["rejected_steps"]
        self.consecutive_rejections = state["consecutive_rejections"]
        self.env_before = environments_before(state)

    def checkpoint_path(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / name

    def write_config(self) -> None:
        write_resolved_config(self.run_dir, self.config, self.family.preset)

    @classmethod
    def resume(cls, run_dir: Path, config: Config, state: dict[str, Any]) -> Trainer:
        """A trainer continuing ``run_dir`` from ``state`` (its ``checkpoints/last.pt``):
        stale temporary files are removed, ``metrics.jsonl`` is cut back to the checkpoint and
        ``best.pt`` is rewritten from it (it may hold an iteration the crash discarded)."""
        trainer = cls(config, run_dir)
        last = trainer.checkpoint_path("last.pt")
        try:
            trainer.load_state_dict(state)
        except CheckpointError as error:
            raise CheckpointError(f"checkpoint {last}: {error}") from None
        remove_stale_temp_files(last.parent)
        if trainer.best is not None:
            save_checkpoint(trainer.checkpoint_path("best.pt"), trainer.best)
        else:
            trainer.checkpoint_path("best.pt").unlink(missing_ok=True)
        trainer.write_config()
        return trainer

    # ------------------------------------------------------------------ loop
    def train(
        self,
        num_iterations: int,
        progress: bool = True,
        on_iteration: IterationHook | None = None,
        lines: bool = True,
    ) -> list[dict[str, Any]]:
        """Run meta-iterations until ``num_iterations`` are done in total, with a progress bar
        (``progress``) and one line per iteration (``lines``; rejected steps' lines always)."""
        records = []
        with Progress(num_iterations, self.iteration, "meta-iterations", progress, lines) as bar:
            while self.iteration < num_iterations:
                record = self.step()
                records.append(record)
                bar.advance(
                    summary_line(record), warning=record["step_rejected_reason"] is not None
                )
                if on_iteration is not None:
                    on_iteration(record)
        return records

    def step(self) -> dict[str, Any]:
        """One meta-iteration, logged and checkpointed; raises :class:`RejectionLimitError`
        (after both) once ``train.max_consecutive_rejections`` meta-steps in a row were rejected
        for a NaN or an Inf."""
        start = time.perf_counter()
        tasks = self.family.sample_tasks(self.config.algorithm.num_tasks)
        metrics, step = meta_iteration(self.agent, tasks, self.sampler)
        self.iteration += 1
        self.env_steps += int(metrics.pop("env_steps"))
        rejected = step.rejected_reason is not None
        self.rejected_steps += rejected
        self.consecutive_rejections = self.consecutive_rejections + 1 if rejected else 0
        record: dict[str, Any] = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            **metrics,
            "rejected_steps": self.rejected_steps,
            "step_rejected_reason": step.rejected_reason,
            "time_iteration": time.perf_counter() - start,
        }
        self.metrics.append(record)
        limit = self.config.train.max_consecutive_rejections
        stop = self.consecutive_rejections >= limit
        self.save_checkpoints(record["return_post"], final=stop)
        if stop:
            raise RejectionLimitError(
                f"stopped at iteration {self.iteration}: {limit} meta-steps in a row rejected "
                f"(last: non-finite {step.rejected_reason}; train.max_consecutive_rejections="
                f"{limit}); {self.checkpoint_path('last.pt')} keeps the parameters from before them"
            )
        return record

    def save_checkpoints(self, return_post: float, final: bool = False) -> None:
        """``best.pt`` when ``return_post`` beats the best so far; ``last.pt`` every
        ``train.checkpoint_every`` iterations, at the last one and when ``final``."""
        improved = return_post > self.best_return
        if improved:
            self.best_return = return_post
            self.best = self._snapshot()
            save_checkpoint(self.checkpoint_path("best.pt"), self.best)
        final = final or self.iteration >= self.config.train.num_iterations
        if final or self.iteration % self.config.train.checkpoint_every == 0:
            save_checkpoint(self.checkpoint_path("last.pt"), self.state_dict())


def write_resolved_config(run_dir: Path, config: Config, preset: str) -> None:
    """``run_dir/config.yaml``: the config with the physics preset the family resolved."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = config.to_dict()
    resolved["env"]["physics"] = preset
    atomic_write_bytes(run_dir / CONFIG_FILE, _to_yaml(resolved).encode())


def _to_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False)
