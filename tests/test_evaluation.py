"""``metarl evaluate``: the paper's held-out adaptation protocol, its files and its errors."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from metarl.agents.common.sampling import BatchSampler
from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.cli import main
from metarl.config import load_config
from metarl.evaluation import (
    AdaptationSettings,
    best_score,
    evaluate,
    held_out_family,
    held_out_seeds,
    load_run,
    paper_curve,
)
from metarl.paper import later_steps
from metarl.training import Trainer
from tests.tiny_runs import train_tiny_run

SMALL = ["--tasks", "5", "--trajectories", "3", "--steps", "2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("evaluation") / "run")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_writes_json_table_and_plot(run_dir: Path, tmp_path: Path) -> None:
    assert main(["evaluate", str(run_dir), *SMALL, "--out", str(tmp_path)]) == 0
    data = read_json(tmp_path / "evaluation.json")
    assert data["steps"] == [0, 1, 2]
    assert [len(r) for r in data["returns"]] == [5, 5, 5]
    assert len(data["tasks"]) == 5
    assert data["step_sizes"] == [0.5, 0.25]  # config inner_lr, then half of it
    assert data["family"] == "Navigation2D" and data["preset"] == "original"
    assert data["checkpoint"] == str(run_dir / "checkpoints" / "best.pt")
    assert data["config"]["env"]["kwargs"] == {"horizon": 10}
    for returns, mean, stderr in zip(data["returns"], data["mean"], data["stderr"]):
        assert mean == pytest.approx(sum(returns) / 5)
        assert stderr == pytest.approx(statistics.stdev(returns) / math.sqrt(5))
        assert all(-10 * 1.5 < r < 0 for r in returns)  # 10 steps, distance below 1.5
    table = (tmp_path / "evaluation.md").read_text()
    row = f"| run | original | {data['mean'][0]:.2f} ± {data['stderr'][0]:.2f} |"
    assert row in table
    assert (tmp_path / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert imageio.imread(tmp_path / "evaluation.png").ndim == 3


def test_default_output_folder_is_in_the_run(run_dir: Path) -> None:
    assert main(["evaluate", str(run_dir), "--tasks", "2", "--trajectories", "2"]) == 0
    data = read_json(run_dir / "evaluation" / "evaluation.json")
    assert data["steps"] == [0, 1, 2, 3] and data["num_trajectories"] == 2


def test_seed_fixes_tasks_and_returns(run_dir: Path) -> None:
    run = load_run(run_dir)
    first, again = (evaluate(run, AdaptationSettings(4, 2, 1, seed=3)) for _ in range(2))
    other = evaluate(run, AdaptationSettings(4, 2, 1, seed=4))
    assert first.tasks == again.tasks and first.returns == again.returns
    assert first.tasks != other.tasks


def test_tasks_are_held_out_from_training(run_dir: Path) -> None:
    run = load_run(run_dir)
    training_tasks = Trainer(run.config, run_dir / "unused").family.sample_tasks(40)
    held_out = held_out_family(run.config, 0).sample_tasks(40)
    assert not {str(t) for t in training_tasks} & {str(t) for t in held_out}


def test_step_zero_is_a_plain_rollout_of_the_meta_policy(run_dir: Path) -> None:
    run = load_run(run_dir, "last")
    settings = AdaptationSettings(num_tasks=6, num_trajectories=4, num_steps=1, seed=7)
    evaluation = evaluate(run, settings)
    family = held_out_family(run.config, 7)
    tasks = family.sample_tasks(6)
    sampler = BatchSampler(family, 4, held_out_seeds(7)["sampler"])
    episodes = sampler.sample(tasks, run.policy, run.policy.meta_parameters())
    assert evaluation.tasks == tasks
    torch.testing.assert_close(torch.tensor(evaluation.returns[0]), episodes.returns_per_task())


def test_compare_overlays_other_runs(run_dir: Path, tmp_path: Path) -> None:
    assert main(["evaluate", str(run_dir), *SMALL, "--out", str(tmp_path / "a")]) == 0
    other = tmp_path / "a" / "evaluation.json"
    data = read_json(other)
    data["label"], data["preset"] = "baseline", "gymnasium"
    other.write_text(json.dumps(data))
    out = tmp_path / "b"
    args = ["evaluate", str(run_dir), *SMALL, "--checkpoint", "last", "--out", str(out)]
    assert main([*args, "--compare", str(other)]) == 0
    rows = [line for line in (out / "evaluation.md").read_text().splitlines() if "±" in line]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| run/last", "original"],
        ["| baseline", "gymnasium"],
    ]
    assert rows[1].endswith(f"{data['mean'][2]:.2f} ± {data['stderr'][2]:.2f} |")
    assert read_json(out / "evaluation.json")["label"] == "run/last"


def test_step_size_grid_is_scored_on_training_tasks_and_recorded(run_dir: Path) -> None:
    run = load_run(run_dir)
    settings = AdaptationSettings(num_tasks=4, num_trajectories=3, num_steps=2)
    plain = evaluate(run, settings)
    tuned = evaluate(run, settings, step_size_grid=[0.05, 0.3, 1.5])
    choice = tuned.step_size_choice
    assert choice is not None and choice["grid"] == [0.05, 0.3, 1.5]
    assert choice["chosen"] == choice["grid"][int(np.argmax(choice["scores"]))]
    assert tuned.step_sizes == [choice["chosen"], choice["chosen"] / 2]
    assert tuned.tasks == plain.tasks  # the reported tasks stay the held-out ones
    assert tuned.returns[0] == plain.returns[0]


def test_paper_curve_is_overlaid(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["evaluate", str(run_dir), *SMALL, "--out", str(out), "--paper"]) == 0
    rows = (out / "evaluation.md").read_text().splitlines()
    paper = (
        "| paper: maml | original | -40.40 ± 0.00 | -11.70 ± 0.00 | -3.30 ± 0.00 | -3.20 ± 0.00 |"
    )
    assert rows[-1] == paper


@pytest.mark.parametrize(
    ("family", "preset", "message"),
    [
        ("HalfCheetahVel", "gymnasium", "hold for the original preset, not 'gymnasium'"),
        ("AntGoal", "original", "reports no AntGoal numbers"),
    ],
)
def test_paper_curve_only_where_the_paper_has_numbers(family: str, preset: str, message: str):
    config = load_config(None, [f"env.family={family}"])
    with pytest.raises(ValueError, match=message):
        paper_curve(config, preset)
    settings = ["env.family=HalfCheetahVel", "baseline.method=oracle", "env.kwargs.oracle=true"]
    oracle = load_config(None, settings)
    assert paper_curve(oracle, "original").mean == [-54.5]


def test_step_sizes_follow_a_negative_inner_step() -> None:
    config = load_config(None, ["algorithm.inner_lr=-0.2"])
    assert AdaptationSettings(num_steps=3).step_sizes(config) == [-0.2, -0.1, -0.1]


def test_later_steps_follow_the_paper_s_test_unless_set() -> None:
    """The authors' test scripts step α/2 after the first step, α/100 for Ant direction."""
    for family, later in (("HalfCheetahVel", 0.05), ("AntDir", 0.001), ("AntGoal", 0.05)):
        config = load_config(None, [f"env.family={family}", "algorithm.inner_lr=0.1"])
        sizes = AdaptationSettings(num_steps=3).step_sizes(config)
        assert sizes == pytest.approx([0.1, later, later]), family
    ant_dir = load_config(None, ["env.family=AntDir", "algorithm.inner_lr=0.1"])
    assert AdaptationSettings(num_steps=2, later_ratio=0.5).step_sizes(ant_dir) == [0.1, 0.05]
    settings = AdaptationSettings(num_steps=2, inner_lr=1.0, later_inner_lr=0.3, later_ratio=0.01)
    assert settings.step_sizes(ant_dir) == [1.0, 0.3]
    assert (later_steps("AntDir"), later_steps("Navigation2D")) == ("α/100", "α/2")


def test_fill_steps_is_the_run_s_unless_a_flag_says_otherwise(tmp_path: Path) -> None:
    """A run trained with a step budget per task adapts with it (the rollout before any step
    is the filled sampler's); ``--no-fill-steps`` adapts without, ``--fill-steps`` with."""
    settings = ["--set", "sampler.fill_steps=true", "--set", "env.kwargs.goal_tolerance=0.3"]
    run_dir = train_tiny_run(tmp_path / "run", *settings)
    runs = {}
    for flags in ([], ["--no-fill-steps"], ["--fill-steps"]):
        out = tmp_path / ("default" if not flags else flags[0])
        assert (
            main(
                [
                    "evaluate",
                    str(run_dir),
                    "--tasks",
                    "6",
                    "--steps",
                    "1",
                    *flags,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        runs[flags[0] if flags else "default"] = read_json(out / "evaluation.json")
    assert [r["config"]["sampler"]["fill_steps"] for r in runs.values()] == [True, False, True]
    assert runs["default"]["returns"] == runs["--fill-steps"]["returns"]
    assert runs["default"]["returns"] != runs["--no-fill-steps"]["returns"]
    table = (tmp_path / "default" / "evaluation.md").read_text()
    assert "up to 8, until it has 2 × horizon steps" in table
    run = load_run(run_dir)
    family = held_out_family(run.config, 0)
    sampler = BatchSampler(family, 2, held_out_seeds(0)["sampler"], fill_steps=True)
    episodes = sampler.sample(family.sample_tasks(6), run.policy, run.policy.meta_parameters())
    assert runs["default"]["returns"][0] == episodes.returns_per_task().tolist()


def test_a_checkpoint_of_another_env_version_is_evaluated_with_a_note(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "older.pt"
    state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    save_checkpoint(checkpoint, {**state, "env_id": "metarl/Navigation2D-v7"})
    assert main(["evaluate", str(checkpoint), *SMALL, "--out", str(tmp_path / "older")]) == 0
    note = "note: older was trained on metarl/Navigation2D-v7, now metarl/Navigation2D-v0"
    assert note in capsys.readouterr().err
    partly = tmp_path / "partly.pt"  # resumed on this version after one iteration on v7
    before = [[1, "metarl/Navigation2D-v7", None]]
    save_checkpoint(partly, {**state, "iteration": 2, "env_before": before})
    assert main(["evaluate", str(partly), *SMALL, "--out", str(tmp_path / "partly")]) == 0
    note = "note: partly was trained on metarl/Navigation2D-v7 (iteration 1), now metarl/Nav"
    assert note in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), *SMALL, "--out", str(tmp_path / "same")]) == 0
    assert "note:" not in capsys.readouterr().err
    same, older = (read_json(tmp_path / name / "evaluation.json") for name in ("same", "older"))
    assert same["returns"] == older["returns"]  # the same policy, on the current version


def test_a_step_size_that_diverged_is_never_chosen() -> None:
    nan, inf = float("nan"), float("inf")
    assert best_score([nan, 3.0, 5.0, 4.0]) == 2  # max() would keep the NaN it saw first
    assert best_score([-1.0, inf, -2.0]) == 0
    with pytest.raises(ValueError, match="every step size of the grid gave a non-finite return"):
        best_score([nan, -inf])
