"""Tiny training runs (seconds) for the tests of evaluation, videos and tracking."""

from __future__ import annotations

from pathlib import Path

from metarl.cli import main

TINY_NAVIGATION = [
    "--set",
    "algorithm.num_tasks=2",
    "--set",
    "algorithm.num_trajectories=2",
    "--set",
    "policy.hidden_sizes=[8]",
    "--set",
    "env.kwargs={horizon: 10}",
    "--iterations",
    "2",
    "--no-progress",
]


def train_tiny_run(run_dir: Path, *extra: str) -> Path:
    """``metarl train`` on navigation with a 10-step horizon and a tiny batch, 2 iterations."""
    assert main(["train", "--run-dir", str(run_dir), *TINY_NAVIGATION, *extra]) == 0
    return run_dir
