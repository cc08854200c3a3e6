"""``metarl reproduce TASK --alternatives``: every method trained (or resumed), evaluated and
written into its block of results.md, on a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarl.alternatives import METHODS, SECTION, place_block
from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.logging import read_metrics

TINY = [
    "algorithm.num_tasks=2",
    "algorithm.num_trajectories=2",
    "policy.hidden_sizes=[8]",
    "env.kwargs={horizon: 10}",
]


def compare(tmp_path: Path, iterations: int) -> int:
    settings = [*TINY, f"train.num_iterations={iterations}"]
    flags = [part for setting in settings for part in ("--set", setting)]
    return main(
        ["reproduce", "navigation", "--alternatives", "--seeds", "1", *flags]
        + ["--runs-dir", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")]
    )


@pytest.mark.slow
def test_tiny_comparison_trains_resumes_and_writes_its_block(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    kept = "# Results\n\n## 2D navigation\n\n<!-- reproduce navigation -->\nrow\n"
    (docs / "results.md").write_text(kept + "<!-- /reproduce navigation -->\n")
    assert compare(tmp_path, 1) == 0
    assert compare(tmp_path, 2) == 0  # resumes every run to 2 iterations
    runs = tmp_path / "runs" / "navigation"
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"{m}-seed1" for m in METHODS)
    for method in METHODS:
        assert [r["iteration"] for r in read_metrics(runs / f"{method}-seed1")] == [1, 2]
    algorithm = {
        method: load_checkpoint(runs / f"{method}-seed1" / "checkpoints" / "last.pt")["config"][
            "algorithm"
        ]
        for method in METHODS
    }
    assert algorithm["negative-lr"]["inner_lr"] == -algorithm["maml"]["inner_lr"]
    assert algorithm["first-order"]["first_order"] and not algorithm["maml"]["first_order"]
    assert algorithm["anil"]["inner_parameters"] == "head"
    assert (
        algorithm["reptile"]["name"] == "reptile" and algorithm["reptile"]["num_inner_steps"] == 2
    )
    assert algorithm["zero-steps"]["num_inner_steps"] == 0
    record = json.loads((docs / "results" / "alternatives_navigation.json").read_text())
    assert list(record["methods"]) == list(METHODS)
    negative = record["methods"]["negative-lr"]
    assert negative["training_inner_lr"] == -0.5
    evaluated = json.loads(
        (runs / "negative-lr-seed1" / "evaluation" / "evaluation.json").read_text()
    )
    assert evaluated["step_size_choice"]["grid"] == [0.1, 0.25, 0.5, 1.0, 2.0]  # a positive α
    assert negative["test_inner_lr"] == [evaluated["step_sizes"][0]]
    maml_evaluation = runs / "maml-seed1" / "evaluation" / "evaluation.json"
    assert json.loads(maml_evaluation.read_text())["step_size_choice"] is None
    text = (docs / "results.md").read_text()
    assert text.startswith(kept) and text.count(SECTION) == 1
    assert text.count("<!-- alternatives navigation -->") == 1
    maml = record["methods"]["maml"]
    assert f"| exact MAML (Finn et al. 2017) | 0.5, 0.5 | {maml['mean'][0]:.1f} ± " in text
    assert (docs / "results" / "alternatives_navigation.png").stat().st_size > 10_000


def test_blocks_of_several_tasks_share_the_section() -> None:
    text = place_block("# Results\n\n## Other\n\nkept\n", "navigation", "nav v1")
    text = place_block(text, "halfcheetah_dir", "cheetah")
    text = place_block(text, "navigation", "nav v2")
    assert text.count(SECTION) == 1 and "nav v1" not in text
    assert text.index("### 2D navigation") < text.index("### HalfCheetah direction")
    assert "<!-- alternatives navigation -->\nnav v2\n<!-- /alternatives navigation -->" in text
    assert text.startswith("# Results\n\n## Other\n\nkept\n")
