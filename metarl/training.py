"""The training loop: config -> task family -> sampler -> agent -> metrics and checkpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

import envs
from agents.maml_trpo import MAMLTRPO
from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.config import Config
from metarl.logging import MetricsLog, summary_line
from metarl.policies import GaussianMLPPolicy
from metarl.sampling import BatchSampler

CONFIG_FILE = "config.yaml"
IterationHook = Callable[[dict[str, Any]], None]


def derived_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for every random stream of a run, all derived from the run seed."""
    names = ("tasks", "sampler", "policy_init")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {n: int(c.generate_state(1, dtype=np.uint32)[0]) for n, c in zip(names, children)}


def build_policy(config: Config, family: envs.TaskFamily) -> GaussianMLPPolicy:
    """The Gaussian MLP policy sized for ``family``."""
    probe = family.make_batched_env(1)
    return GaussianMLPPolicy(
        probe.observation_dim,
        probe.action_dim,
        tuple(config.policy.hidden_sizes),
        config.policy.nonlinearity,
        config.policy.init_std,
    )


class Trainer:
    """Meta-trains a policy per ``config``, writing ``run_dir``:

    * ``config.yaml`` — the resolved config (physics preset included);
    * ``metrics.jsonl`` — one JSON object per meta-iteration;
    * ``checkpoints/last.pt`` and ``checkpoints/best.pt`` (by ``return_post``), atomic.
    """

    def __init__(self, config: Config, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        seeds = derived_seeds(config.train.seed)
        self.family = envs.make_family(config.env.family, seed=seeds["tasks"], **config.env.kwargs)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seeds["policy_init"])
        self.policy = build_policy(config, self.family).to(config.train.device)
        torch.random.set_rng_state(generator_state)
        self.agent = MAMLTRPO(self.policy, config.algorithm)
        self.sampler = BatchSampler(
            self.family, config.algorithm.num_trajectories, seeds["sampler"]
        )
        self.metrics = MetricsLog(run_dir)
        self.iteration = 0
        self.env_steps = 0
        self.best_return = -float("inf")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "best_return": self.best_return,
            "config": self.config.to_dict(),
            "policy": self.policy.state_dict(),
            "task_rng": self.family.rng.bit_generator.state,
            "sampler": self.sampler.state_dict(),
            "metrics_lines": self.iteration,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.iteration = state["iteration"]
        self.env_steps = state["env_steps"]
        self.best_return = state["best_return"]
        self.family.rng.bit_generator.state = state["task_rng"]
        self.sampler.load_state_dict(state["sampler"])
        self.metrics.truncate(state["metrics_lines"])

    def checkpoint_path(self, name: str) -> Path:
        return self.run_dir / "checkpoints" / name

    def write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resolved = self.config.to_dict()
        resolved["env"]["physics"] = self.family.preset
        (self.run_dir / CONFIG_FILE).write_text(_to_yaml(resolved))

    @classmethod
    def resume(cls, run_dir: Path, config: Config) -> Trainer:
        """A trainer restored from ``run_dir/checkpoints/last.pt``."""
        trainer = cls(config, run_dir)
        trainer.load_state_dict(load_checkpoint(trainer.checkpoint_path("last.pt")))
        return trainer

    # ------------------------------------------------------------------ loop
    def train(
        self,
        num_iterations: int,
        progress: bool = True,
        on_iteration: IterationHook | None = None,
    ) -> list[dict[str, Any]]:
        """Run meta-iterations until ``num_iterations`` are done in total."""
        records = []
        bar = tqdm(
            total=num_iterations,
            initial=self.iteration,
            disable=not progress,
            desc="meta-iterations",
            unit="it",
            dynamic_ncols=True,
        )
        with bar:
            while self.iteration < num_iterations:
                record = self.step()
                records.append(record)
                bar.update(1)
                if progress:
                    bar.write(summary_line(record))
                if on_iteration is not None:
                    on_iteration(record)
        return records

    def step(self) -> dict[str, Any]:
        """One meta-iteration, logged and checkpointed."""
        start = time.perf_counter()
        tasks = self.family.sample_tasks(self.config.algorithm.num_tasks)
        metrics, _ = self.agent.train_iteration(tasks, self.sampler)
        self.iteration += 1
        self.env_steps += int(metrics.pop("env_steps"))
        elapsed = time.perf_counter() - start
        record = {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            **metrics,
            "time_iteration": elapsed,
        }
        self.metrics.append(record)
        improved = record["return_post"] > self.best_return
        if improved:
            self.best_return = record["return_post"]
            save_checkpoint(self.checkpoint_path("best.pt"), self.state_dict())
        if self.iteration % self.config.train.checkpoint_every == 0 or improved:
            save_checkpoint(self.checkpoint_path("last.pt"), self.state_dict())
        return record


def _to_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False)
