"""``metarl plot`` and the learning curve ``metarl train`` leaves in the run directory."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

from metarl.cli import main
from metarl.logging import read_metrics
from metarl.plotting import group_curve, group_runs, labelled_groups, moving_average, read_run
from tests.tiny_runs import train_tiny_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plot")
    return {
        "seed-1": train_tiny_run(root / "nav-seed-1", "--seed", "1"),
        "seed-2": train_tiny_run(root / "nav-seed-2", "--seed", "2", "--iterations", "3"),
        "other": train_tiny_run(root / "wide", "--set", "policy.hidden_sizes=[4]"),
    }


def test_moving_average_by_hand() -> None:
    values = np.array([1.0, 2.0, 6.0, 3.0])
    np.testing.assert_allclose(moving_average(values, 2), [1.0, 1.5, 4.0, 4.5])
    np.testing.assert_allclose(moving_average(values, 1), values)
    gap = np.array([1.0, np.nan, 3.0, 5.0])  # a null return in metrics.jsonl
    np.testing.assert_allclose(moving_average(gap, 2), [1.0, 1.0, 3.0, 4.0])


def test_train_leaves_a_learning_curve(runs: dict[str, Path]) -> None:
    image = imageio.imread(runs["seed-1"] / "learning_curve.png")
    assert 300 < image.shape[0] < 600 and image.shape[1] > 800  # returns only: no success rate


def test_seeds_of_one_config_are_one_curve(runs: dict[str, Path]) -> None:
    curves = [read_run(runs[name]) for name in ("seed-1", "other", "seed-2")]
    groups = group_runs(curves)
    assert [[run.name for run in group] for group in groups] == [
        ["nav-seed-1", "nav-seed-2"],
        ["wide"],
    ]
    post = group_curve(groups[0], "return_post")
    first, second = (read_metrics(runs[name]) for name in ("seed-1", "seed-2"))
    assert list(post.iterations) == [1, 2]  # the iterations both runs reached
    expected = [[r["return_post"] for r in records[:2]] for records in (first, second)]
    np.testing.assert_allclose(post.mean, np.mean(expected, axis=0))
    np.testing.assert_allclose(post.low, np.min(expected, axis=0))
    np.testing.assert_allclose(post.high, np.max(expected, axis=0))
    assert not np.array_equal(post.low, post.high)  # two seeds, two curves


def test_plot_command_overlays_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    assert main(["plot", *map(str, runs.values()), "--out", str(out), "--smooth", "2"]) == 0
    assert imageio.imread(out).shape[1] > 800


def test_labels_name_the_curves_in_the_order_first_met(runs: dict[str, Path]) -> None:
    curves = [read_run(runs[name]) for name in ("other", "seed-1", "seed-2")]
    named = labelled_groups(curves, ["wider", "narrow"])
    assert [(label, [run.name for run in group]) for label, group in named] == [
        ("wider", ["wide"]),
        ("narrow", ["nav-seed-1", "nav-seed-2"]),
    ]
    assert [label for label, _ in labelled_groups(curves)] == ["wide", "nav-seed (2 runs)"]


def test_plot_command_rejects_a_label_count_unlike_the_curves(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "curves.png"
    arguments = ["plot", *map(str, runs.values()), "--out", str(out), "--labels", "a", "b", "c"]
    assert main(arguments) == 2
    assert "--labels: 3 labels for 2 curves" in capsys.readouterr().err
    assert not out.exists()
    assert main([*arguments[:-1]]) == 0 and out.exists()
