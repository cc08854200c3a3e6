"""Determinism: the same config and seed give the same metrics.jsonl (all but the ``time_*``
fields) and the same parameters, whatever the state of the global random generators."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.logging import TIMING_PREFIX, deterministic_fields, read_metrics
from metarl.training import derived_seeds
from tests.tiny_runs import tiny_flags

TINY = tiny_flags()
FAMILIES = {
    "navigation": ["--set", "env.kwargs={horizon: 20}"],
    "ant-dir": ["--set", "env.family=AntDir", "--set", "env.kwargs={horizon: 10}"],
    "metaworld-ml10": ["--set", "env.family=MetaWorldML10", "--set", "env.kwargs={horizon: 10}"],
}


def train(run_dir: Path, seed: int, family: str, global_seed: int) -> list[dict]:
    """A tiny run after scrambling every global generator (none of which it may use)."""
    torch.manual_seed(global_seed)
    np.random.seed(global_seed)
    random.seed(global_seed)
    args = ["train", "--run-dir", str(run_dir), "--seed", str(seed), "--iterations", "2"]
    assert main([*args, *TINY, *FAMILIES[family]]) == 0
    return read_metrics(run_dir)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_same_seed_gives_identical_metrics_and_parameters(tmp_path: Path, family: str) -> None:
    first = train(tmp_path / "a", 7, family, global_seed=0)
    second = train(tmp_path / "b", 7, family, global_seed=12345)
    assert [deterministic_fields(r) for r in first] == [deterministic_fields(r) for r in second]
    assert any(key.startswith(TIMING_PREFIX) for key in first[0])  # they exist, and vary
    params_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["policy"]
    params_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["policy"]
    assert all(torch.equal(params_a[name], params_b[name]) for name in params_a)


def test_another_seed_gives_other_metrics(tmp_path: Path) -> None:
    first = train(tmp_path / "a", 7, "navigation", global_seed=0)
    other = train(tmp_path / "b", 8, "navigation", global_seed=0)
    assert first[0]["return_pre"] != other[0]["return_pre"]


def test_every_stream_has_its_own_seed_derived_from_the_run_seed() -> None:
    seeds = derived_seeds(7)
    assert seeds == derived_seeds(7)
    assert len(set(seeds.values())) == len(seeds) == 3
    assert all(a != b for a, b in zip(seeds.values(), derived_seeds(8).values()))
