"""Tiny training runs (seconds) for the tests of evaluation, videos and tracking."""

from __future__ import annotations

from pathlib import Path

from metarl.cli import main


def tiny_flags(*settings: str, num_trajectories: int = 2) -> list[str]:
    """``metarl train`` flags for a tiny batch (2 tasks, an 8-unit policy, no progress bar),
    plus ``--set`` for each of ``settings`` (e.g. ``"env.kwargs={horizon: 10}"``)."""
    base = [
        "algorithm.num_tasks=2",
        f"algorithm.num_trajectories={num_trajectories}",
        "policy.hidden_sizes=[8]",
        *settings,
    ]
    return [flag for setting in base for flag in ("--set", setting)] + ["--no-progress"]


TINY_NAVIGATION = [*tiny_flags("env.kwargs={horizon: 10}"), "--iterations", "2"]


def train_tiny_run(run_dir: Path, *extra: str) -> Path:
    """``metarl train`` on navigation with a 10-step horizon and a tiny batch, 2 iterations."""
    assert main(["train", "--run-dir", str(run_dir), *TINY_NAVIGATION, *extra]) == 0
    return run_dir
