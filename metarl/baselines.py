"""``metarl baseline``: the paper's pretrained, oracle and random baselines as run directories.

A baseline run directory looks like a MAML run's: ``config.yaml`` (with its ``baseline``
section), ``metrics.jsonl`` (one line per update: ``return`` of the episodes that ended in it,
``env_steps``, ``kl``, seconds), and ``checkpoints/last.pt`` and ``best.pt`` holding the actor
as a metarl policy, so ``metarl evaluate`` adapts a baseline exactly as it adapts MAML.
``last.pt`` also holds the SB3 learner and the task and noise streams, for ``--resume``, which
continues from the last update (episodes in flight start again, and SB3's loading re-seeds the
action noise: unlike a MAML run, a resumed run is not the uninterrupted one).  ``metarl plot``
draws MAML runs only.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import torch

from metarl import envs
from metarl.agents.common.vec_env import TaskVecEnv
from metarl.agents.sb3_baselines import copy_actor, load_model, make_model
from metarl.checkpoint import (
    CheckpointError,
    environments_before,
    remove_stale_temp_files,
    save_checkpoint,
)
from metarl.components import build_policy, derived_seeds, make_family
from metarl.config import BaselineConfig, Config, ConfigError
from metarl.logging import MetricsLog, Progress
from metarl.training import IterationHook, write_resolved_config

STATE_KEYS = ("iteration", "env_steps", "best_return", "config", "policy", "task_rng", "best")
NEVER_DUMP_LOGS = 2**31  # SB3 keeps its last logged values for us to read instead
# Updates of the paper's baselines ("up to 1000 iterations for HalfCheetah and 2000 for Ant"); for
# navigation, whose paper baseline was MAML's own code, 100 updates like its MAML run.
PAPER_UPDATES = {"Navigation2D": 100, "HalfCheetah": 1000, "Ant": 2000}


def total_steps(config: Config) -> int:
    """Environment steps of the baseline run: ``baseline.total_steps``, else the paper's budget
    for the config's family."""
    baseline = _baseline(config)
    if baseline.total_steps is not None:
        return baseline.total_steps
    robot = next((name for name in PAPER_UPDATES if config.env.family.startswith(name)), None)
    if robot is None:
        raise ConfigError(
            f"baseline.total_steps: needed for {config.env.family}, which the paper's budget "
            "does not cover"
        )
    return PAPER_UPDATES[robot] * baseline.steps_per_update


def _baseline(config: Config) -> BaselineConfig:
    if config.baseline is None:
        raise ValueError("not a baseline config (no baseline section)")
    return config.baseline


class BaselineTrainer:
    """Trains (or, for ``random``, only initialises) the baseline of ``config`` in ``run_dir``."""

    best_metric: ClassVar[str] = "return"  # the metrics.jsonl key that best.pt maximises

    def __init__(self, config: Config, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.baseline = _baseline(config)
        seeds = derived_seeds(config.train.seed)
        self.family = make_family(config, seed=seeds["tasks"])
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seeds["policy_init"])
        self.policy = build_policy(config, self.family)  # the random baseline; then the actor's
        torch.random.set_rng_state(generator_state)
        self.total_steps = total_steps(config)
        self.metrics = MetricsLog(run_dir)
        self.iteration = 0
        self.env_steps = 0
        self.best_return = -math.inf
        self.best: dict[str, Any] | None = None  # the content of best.pt
        self.env_before: list[list[Any]] = []  # as Trainer's
        self.model = None
        if self.baseline.method != "random":
            horizon = self.family.make_batched_env(1).horizon
            num_envs = max(1, round(self.baseline.steps_per_update / horizon))
            # SB3 seeds the VecEnv's reset noise with the run seed (``env.seed``)
            self.env = TaskVecEnv(self.family, num_envs)
            self.steps_per_update = num_envs * horizon
            self.model = make_model(
                self.baseline.algorithm,
                self.env,
                list(config.policy.hidden_sizes),
                config.policy.nonlinearity,
                config.policy.init_std,
                config.algorithm.gamma,
                config.algorithm.max_kl,
                config.train.seed,
                horizon,
            )

    def checkpoint_path(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / name

    def write_config(self) -> None:
        write_resolved_config(self.run_dir, self.config, self.family.preset)

    def _snapshot(self) -> dict[str, Any]:
        """Counters, config, the actor as a metarl policy, the task and reset-noise streams and
        (``model``) the stable-baselines3 learner itself, as the bytes of its zip."""
        state: dict[str, Any] = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "best_return": self.best_return,
            "config": self.config.to_dict(),
            "env_id": envs.env_id(self.config.env.family),
            "env_before": [list(span) for span in self.env_before],
            "policy": {k: v.detach().clone() for k, v in self.policy.state_dict().items()},
            "task_rng": self.family.rng.bit_generator.state,
        }
        if self.model is not None:
            buffer = io.BytesIO()
            self.model.save(buffer)
            state["model"] = buffer.getvalue()
            state["env_rng"] = self.env.rng.bit_generator.state
            state["episode_tasks"] = self.env.episode_tasks
        return state

    def state_dict(self) -> dict[str, Any]:
        """The whole state, ``best.pt``'s content included (one file, written atomically)."""
        return {**self._snapshot(), "best": self.best}

    def save(self, episode_return: float) -> None:
        """``best.pt`` when ``episode_return`` is the best so far, then ``last.pt``, which holds
        ``best.pt``'s content too, so that a resume restores a consistent pair."""
        if self.model is not None:
            copy_actor(self.model.policy, self.policy)
        if self.best is None or episode_return > self.best_return:
            self.best_return = max(episode_return, self.best_return)
            self.best = self._snapshot()
            save_checkpoint(self.checkpoint_path("best.pt"), self.best)
        save_checkpoint(self.checkpoint_path("last.pt"), self.state_dict())

    @classmethod
    def resume(cls, run_dir: Path, config: Config, state: dict[str, Any]) -> BaselineTrainer:
        """Continue ``run_dir`` from ``state`` (its ``last.pt``): the learner, counters and
        streams restored, ``metrics.jsonl`` cut back to it, ``best.pt`` and ``config.yaml``
        rewritten.  Episodes in flight at the checkpoint start again."""
        trainer = cls(config, run_dir)
        missing = [key for key in STATE_KEYS if key not in state]
        if trainer.model is not None:
            missing += [key for key in ("model", "env_rng", "episode_tasks") if key not in state]
        last = trainer.checkpoint_path("last.pt")
        if missing:
            raise CheckpointError(f"checkpoint {last}: missing {', '.join(missing)}")
        trainer.iteration, trainer.env_steps = state["iteration"], state["env_steps"]
        trainer.best_return, trainer.best = state["best_return"], state["best"]
        trainer.env_before = environments_before(state)
        try:
            trainer.policy.load_state_dict(state["policy"])
            trainer.family.rng.bit_generator.state = state["task_rng"]
            trainer.metrics.truncate(trainer.iteration)
        except (RuntimeError, ValueError, TypeError, KeyError) as error:
            reason = " ".join(str(error).split())
            raise CheckpointError(f"checkpoint {last}: does not fit this run ({reason})") from None
        if trainer.model is not None:
            algorithm = trainer.baseline.algorithm
            trainer.model = load_model(algorithm, io.BytesIO(state["model"]), trainer.env)
            # loading re-seeds the VecEnv with the config's seed: restore its streams after
            trainer.env.rng.bit_generator.state = state["env_rng"]
            trainer.env.episode_tasks = state["episode_tasks"]
        remove_stale_temp_files(last.parent)
        if trainer.best is not None:
            save_checkpoint(trainer.checkpoint_path("best.pt"), trainer.best)
        trainer.write_config()
        return trainer

    def train(
        self,
        progress: bool = True,
        on_iteration: IterationHook | None = None,
        lines: bool = True,
    ) -> None:
        """Update until ``total_steps`` environment steps (``random``: save the initial policy),
        calling ``on_iteration`` with each update's record; a progress bar (``progress``) and
        one line per update (``lines``)."""
        if self.model is None:
            self.save(-math.inf)
            return
        total = math.ceil(self.total_steps / self.steps_per_update)
        with Progress(total, self.iteration, "updates", progress, lines) as bar:
            while self.iteration < total:
                record = self.update()
                bar.advance(
                    f"update {record['iteration']:5d} | return {record['return']:9.2f} | "
                    f"kl {record['kl']:.4f} | {record['time_iteration']:.1f}s"
                )
                if on_iteration is not None:
                    on_iteration(record)

    def update(self) -> dict[str, Any]:
        """One rollout of ``steps_per_update`` steps and one learner update, logged and saved."""
        assert self.model is not None
        start = time.perf_counter()
        self.env.finished_returns.clear()
        self.model.learn(
            self.steps_per_update, reset_num_timesteps=False, log_interval=NEVER_DUMP_LOGS
        )
        returns = self.env.finished_returns
        episode_return = sum(returns) / len(returns) if returns else math.nan
        logged = self.model.logger.name_to_value
        kl = logged.get("train/kl_divergence_loss", logged.get("train/approx_kl", math.nan))
        self.iteration += 1
        self.env_steps += self.steps_per_update
        record = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "return": episode_return,
            "episodes": len(returns),
            "kl": float(kl),
            "time_iteration": time.perf_counter() - start,
        }
        self.metrics.append(record)
        self.save(episode_return if returns else -math.inf)
        return record
