"""Videos and the final evaluation of ``metarl train`` land in the run directory without W&B."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio

from tests.tiny_runs import train_tiny_run


def test_videos_and_final_evaluation_without_tracking(tmp_path: Path) -> None:
    run_dir = train_tiny_run(tmp_path / "run", "--video-every", "1", "--eval-tasks", "3")
    videos = sorted((run_dir / "videos").iterdir())
    assert [video.name for video in videos] == ["adaptation_00001.mp4", "adaptation_00002.mp4"]
    for video in videos:
        reader = imageio.get_reader(video)
        assert len(list(reader.iter_data())) == 10  # the horizon
        reader.close()
    evaluation = json.loads((run_dir / "evaluation" / "evaluation.json").read_text())
    assert len(evaluation["tasks"]) == 3 and evaluation["steps"] == [0, 1, 2, 3]
    assert not (run_dir / "wandb").exists()


def test_no_final_evaluation_with_zero_tasks(tmp_path: Path) -> None:
    run_dir = train_tiny_run(tmp_path / "run", "--eval-tasks", "0")
    assert not (run_dir / "evaluation").exists() and not (run_dir / "videos").exists()
