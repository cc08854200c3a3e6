"""End to end: ``metarl train`` on a small navigation batch learns to adapt."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.logging import read_metrics
from tests.tiny_runs import tiny_flags, train_tiny_run

SMALL = [
    "--set",
    "algorithm.num_tasks=10",
    "--set",
    "algorithm.num_trajectories=10",
    "--set",
    "policy.hidden_sizes=[32, 32]",
    "--no-progress",
]
REQUIRED = {
    "iteration",
    "env_steps",
    "return_pre",
    "return_post",
    "kl",
    "surrogate_before",
    "surrogate_after",
    "line_search_steps",
    "time_sampling",
    "time_learning",
}


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "metarl", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_short_navigation_run_improves_post_adaptation_return(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli("train", "--run-dir", run_dir, "--iterations", 12, *SMALL)
    assert result.returncode == 0, result.stderr
    records = read_metrics(run_dir)
    assert [r["iteration"] for r in records] == list(range(1, 13))
    assert all(REQUIRED <= set(r) for r in records)
    assert all(r["kl"] <= 0.01 + 1e-6 for r in records)
    first, last = records[0], records[-3:]
    post = sum(r["return_post"] for r in last) / 3
    pre = sum(r["return_pre"] for r in last) / 3
    assert post > pre + 8, (pre, post)  # one inner step clearly helps ...
    # ... and more so after meta-training
    assert post > first["return_post"] + 15, (first["return_post"], post)
    assert records[-1]["env_steps"] > records[0]["env_steps"] > 0
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["algorithm"]["num_tasks"] == 10 and resolved["env"]["physics"] == "original"
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["best_return"] == max(r["return_post"] for r in records)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == 12


def test_short_reptile_run_adapts_and_evaluates_like_maml(tmp_path: Path) -> None:
    """Reptile through the same loop, checkpoints and ``metarl evaluate``: the inner steps help,
    more so after meta-training, and its checkpoint adapts to held-out tasks."""
    run_dir = tmp_path / "run"
    reptile = ["algorithm.name=reptile", "algorithm.num_inner_steps=2", "algorithm.outer_lr=0.5"]
    flags = [flag for setting in reptile for flag in ("--set", setting)]
    assert main(["train", "--run-dir", str(run_dir), "--iterations", "12", *SMALL, *flags]) == 0
    records = read_metrics(run_dir)
    assert [r["iteration"] for r in records] == list(range(1, 13))
    assert all(REQUIRED | {"return_step1"} <= set(r) for r in records)
    assert all(r["line_search_steps"] == 0 and math.isfinite(r["kl"]) for r in records)
    first, last = records[0], records[-3:]
    post = sum(r["return_post"] for r in last) / 3
    pre = sum(r["return_pre"] for r in last) / 3
    assert post > pre + 5, (pre, post)
    assert post > first["return_post"] + 15, (first["return_post"], post)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["algorithm"]["name"] == "reptile"
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["best_return"] == max(r["return_post"] for r in records)

    evaluate = ["evaluate", str(run_dir), "--tasks", "10", "--trajectories", "10", "--steps", "1"]
    assert main(evaluate) == 0
    evaluation = json.loads((run_dir / "evaluation" / "evaluation.json").read_text())
    assert evaluation["method"] == "reptile"
    before, after = evaluation["mean"]
    assert after > before, (before, after)  # one step helps on held-out tasks ...
    assert after > first["return_post"] + 15, (first["return_post"], after)  # ... trained


LOCOMOTION = ["halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir", "ant_goal"]


@pytest.mark.parametrize(
    "name,physics,algorithm",
    [("navigation", None, "maml_trpo"), ("navigation", None, "reptile")]
    + [(name, physics, "maml_trpo") for name in LOCOMOTION for physics in ("original", "gymnasium")]
    + [(name, "original", "reptile") for name in LOCOMOTION],
)
def test_every_bundled_config_trains(
    tmp_path: Path, name: str, physics: str | None, algorithm: str
) -> None:
    """One tiny meta-iteration of each config and preset, through the whole pipeline (and with
    Reptile, by its name alone)."""
    kwargs = "{horizon: 10}" if physics is None else f"{{horizon: 10, physics: {physics}}}"
    flags = tiny_flags(f"env.kwargs={kwargs}", f"algorithm.name={algorithm}")
    args = ["train", "--config", name, "--run-dir", str(tmp_path), "--iterations", "1"]
    assert main([*args, *flags]) == 0
    (record,) = read_metrics(tmp_path)
    assert record["env_steps"] > 0 and math.isfinite(record["return_post"])
    if algorithm == "reptile":
        assert record["step_accepted"] == 1.0 and record["kl"] > 0


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_run_files_are_readable_as_the_umask_allows(tmp_path: Path, umask: int) -> None:
    run_dir = tmp_path / "run"
    previous = os.umask(umask)
    try:
        train_tiny_run(run_dir)
    finally:
        os.umask(previous)
    files = ["config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt"]
    for name in files:
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o666 & ~umask, name
