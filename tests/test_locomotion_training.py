"""A short HalfCheetahDir meta-training run: adaptation clearly improves the return."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarl.config import load_config, resolve_config_path
from metarl.training import Trainer


@pytest.mark.slow
def test_halfcheetah_direction_post_adaptation_return_exceeds_pre(tmp_path: Path) -> None:
    config = load_config(
        resolve_config_path("halfcheetah_dir"),
        [
            "algorithm.num_tasks=10",
            "algorithm.num_trajectories=20",
            "algorithm.inner_lr=0.2",
            "policy.hidden_sizes=[32, 32]",
            "env.kwargs={physics: gymnasium, horizon: 50}",
        ],
    )
    trainer = Trainer(config, tmp_path / "run")
    trainer.write_config()
    records = trainer.train(12, progress=False)
    gains = [r["return_post"] - r["return_pre"] for r in records]
    # One inner step must find the direction: a clear average gain, in nearly every iteration.
    assert sum(gains) / len(gains) > 2.0, gains
    assert sum(gain > 0 for gain in gains) >= 9, gains
