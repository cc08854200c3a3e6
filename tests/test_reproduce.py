"""``metarl reproduce``: a task's row trained (or resumed), evaluated and written into
results.md, on a tiny budget."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from metarl.checkpoint import load_checkpoint, save_checkpoint
from metarl.cli import main
from metarl.config import bundled_config_path, validate_config
from metarl.errors import ConfigError
from metarl.logging import read_metrics
from metarl.reproduce import (
    TASKS,
    baseline_run_configs,
    criterion_line,
    evaluate_run,
    replace_section,
    run_config,
    saved_state,
    update_results,
)
from metarl.rundir import claimed

TINY = [
    "algorithm.num_tasks=2",
    "algorithm.num_trajectories=2",
    "policy.hidden_sizes=[8]",
    "env.kwargs={horizon: 10}",
]
TINY_FLAGS = [part for setting in TINY for part in ("--set", setting)]
FILL = "sampler:\n  fill_steps: true\n"


def reproduce(tmp_path: Path, *settings: str, seeds: tuple[str, ...] = ("1", "2")) -> int:
    flags = [*TINY_FLAGS, *(part for setting in settings for part in ("--set", setting))]
    return main(
        ["reproduce", "navigation", "--seeds", *seeds, *flags]
        + ["--runs-dir", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")]
    )


@pytest.mark.slow
def test_tiny_reproduction_trains_resumes_and_rewrites_its_section(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").write_text(
        "# Results\n\n## 2D navigation\n\nold text\n\n## Other\n\nkept\n"
    )
    assert reproduce(tmp_path, "train.num_iterations=1") == 0
    assert reproduce(tmp_path, "train.num_iterations=2") == 0  # resumes both runs to 2
    assert reproduce(tmp_path, "train.num_iterations=1") == 0  # keeps the longer runs
    for seed in (1, 2):
        records = read_metrics(tmp_path / "runs" / "navigation" / f"maml-seed{seed}")
        assert [r["iteration"] for r in records] == [1, 2]
    text = (docs / "results.md").read_text()
    assert text.count("## 2D navigation") == 1 and "old text" not in text
    assert text.count("<!-- reproduce navigation -->") == 1 and text.endswith("## Other\n\nkept\n")
    record = json.loads((docs / "results" / "navigation.json").read_text())
    assert [s["iterations"] for s in record["seeds"]] == [2, 2]
    assert record["config"]["train"]["num_iterations"] == 2  # the runs', not the request's
    assert record["config"]["algorithm"]["num_tasks"] == 2
    per_seed = [s["mean"] for s in record["seeds"]]
    assert record["mean"] == pytest.approx([sum(m) / 2 for m in zip(*per_seed)])
    assert f"| MAML, metarl (± standard deviation over 2 seeds) | {record['mean'][0]:.1f}" in text
    assert set(record["baselines"]) == {"pretrained", "oracle", "random"}
    oracle = record["baselines"]["oracle"]
    assert len(oracle["mean"]) == 1  # told the task: no adaptation
    assert (
        f"| oracle, metarl | {oracle['mean'][0]:.1f} ± {oracle['stderr'][0]:.1f} |  |  |  |" in text
    )
    runs = sorted(p.name for p in (tmp_path / "runs" / "navigation").iterdir())
    assert runs == ["maml-seed1", "maml-seed2", "oracle-seed1", "pretrained-seed1", "random-seed1"]
    oracle_config = (tmp_path / "runs" / "navigation" / "oracle-seed1" / "config.yaml").read_text()
    assert "oracle: true" in oracle_config and "num_inner_steps: 0" in oracle_config
    for figure in ("navigation_adaptation.png", "navigation_learning_curve.png"):
        assert (docs / "results" / figure).stat().st_size > 10_000


@pytest.mark.slow
def test_locomotion_baselines_are_stable_baselines3_runs(tmp_path: Path) -> None:
    settings = ["train.num_iterations=1", *TINY]
    flags = [part for setting in settings for part in ("--set", setting)]
    budget = ["baseline.total_steps=400", "baseline.steps_per_update=200"]
    flags += [part for setting in budget for part in ("--baseline-set", setting)]
    argv = ["reproduce", "halfcheetah_vel", *flags, "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--docs", str(tmp_path / "docs")]) == 0
    runs = tmp_path / "runs" / "halfcheetah_vel"
    for method in ("pretrained", "oracle"):
        state = load_checkpoint(runs / f"{method}-seed1" / "checkpoints" / "last.pt")
        assert state["config"]["baseline"]["method"] == method and state["env_steps"] == 400
    record = json.loads((tmp_path / "docs" / "results" / "halfcheetah_vel.json").read_text())
    choice = record["baselines"]["pretrained"]["step_size_choice"]
    assert choice["grid"] == list(TASKS["halfcheetah_vel"].step_size_grid)
    assert record["baselines"]["pretrained"]["step_sizes"][0] == choice["chosen"]
    assert record["baselines"]["oracle"]["step_size_choice"] is None
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "`pretrained`: TRPO (sb3-contrib) on all tasks, 400 steps" in text
    assert "--baseline-set baseline.total_steps=400" in text
    assert record["fill_steps"] is False and "horizon steps" not in text

    # metarl's sampler setting is the MAML run's, not the stable-baselines3 runs'
    task = TASKS["halfcheetah_vel"]
    filled = [*settings, "sampler.fill_steps=true"]
    for method, config in baseline_run_configs(task, 1, filled, budget).items():
        assert saved_state(config, runs / f"{method}-seed1") is not None, method
    with pytest.raises(ConfigError, match=r"differs in sampler\.fill_steps\)"):
        saved_state(run_config(task, 1, filled), runs / "maml-seed1")

    # the row's protocol is its bundled config's sampler, whatever each run was trained with
    bundled = tmp_path / "filled.yaml"
    bundled.write_text(bundled_config_path("halfcheetah_vel").read_text() + FILL)
    evaluation = evaluate_run(replace(task, config=str(bundled)), runs / "random-seed1", 1)
    assert evaluation.config["sampler"]["fill_steps"] is True
    assert record["baselines"]["pretrained"]["config"]["sampler"]["fill_steps"] is False


def test_a_run_of_another_config_is_refused(tmp_path: Path, capsys) -> None:
    assert reproduce(tmp_path, "train.num_iterations=1", seeds=("1",)) == 0
    assert (
        reproduce(tmp_path, "train.num_iterations=1", "algorithm.inner_lr=0.3", seeds=("1",)) == 2
    )
    error = capsys.readouterr().err
    assert "holds a run of another config (differs in algorithm.inner_lr)" in error
    assert error.count("\n") == 2  # the first call's "wrote ..." line, then the error


def test_a_run_another_process_writes_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    with claimed(tmp_path / "runs" / "navigation" / "oracle-seed1", "--run-dir"):
        assert reproduce(tmp_path, "train.num_iterations=1", seeds=("1",)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--runs-dir" in error and "another process" in error
    assert not (tmp_path / "runs").exists() and not (tmp_path / "docs").exists()


def test_a_run_made_on_another_environment_version_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--iterations", "1", *TINY_FLAGS]) == 0
    last = run / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    config = validate_config(state["config"])
    assert saved_state(config, run) is not None
    save_checkpoint(last, {**state, "env_id": "metarl/Navigation2D-v7"})
    with pytest.raises(ConfigError, match=r"differs in the environment \(metarl/Navigation2D-v7"):
        saved_state(config, run)
    # resumed on this version after a first part on v7: not a run of this row either
    save_checkpoint(last, {**state, "env_before": [[1, "metarl/Navigation2D-v7", None]]})
    with pytest.raises(ConfigError, match=r"environment \(metarl/Navigation2D-v7 \(iteration 1\)"):
        saved_state(config, run)


def test_criteria_are_the_issues_thresholds() -> None:
    criteria = {name: task.paper.one_step_criterion for name, task in TASKS.items() if task.paper}
    expected = {
        "navigation": -17.3,
        "halfcheetah_vel": -98.6,
        "halfcheetah_dir": 251.1,  # the issue rounds it to 251
        "ant_vel": 79.6,
        "ant_dir": 447.7,
    }
    assert criteria == pytest.approx(expected, abs=0.06)


def test_the_criterion_line_shows_the_digits_its_verdict_needs() -> None:
    assert criterion_line(447.64, 447.65).endswith("447.65): **not met** (447.64).")
    assert criterion_line(447.65, 447.65).endswith("447.65): met (447.65).")
    assert criterion_line(300.62, 447.65).endswith("447.65): **not met** (300.6).")
    assert criterion_line(447.646, 447.65).endswith("447.650): **not met** (447.646).")
    assert criterion_line(-98.5499, -98.55).endswith("-98.55): met (-98.55).")
    assert criterion_line(-98.5501, -98.55).endswith("-98.5500): **not met** (-98.5501).")


def test_results_md_is_rewritten_where_it_links_to(tmp_path: Path) -> None:
    shared = tmp_path / "shared.md"
    shared.write_text("# Results\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.md").symlink_to(shared)
    update_results(docs, lambda text: text + "\nnew\n")
    assert (docs / "results.md").is_symlink() and shared.read_text() == "# Results\n\nnew\n"


def test_replace_section_finds_markers_then_titles_then_appends() -> None:
    block = "<!-- reproduce ant_goal -->\nnew\n<!-- /reproduce ant_goal -->\n"
    marked = "# R\n\n## Ant goal position\n\n" + block.replace("new", "old")
    assert replace_section(marked, "ant_goal", "new") == "# R\n\n## Ant goal position\n\n" + block
    titled = "# R\n\n## Ant goal position\n\nold\n\n## Next\n"
    assert (
        replace_section(titled, "ant_goal", "new")
        == f"# R\n\n## Ant goal position\n\n{block}\n## Next\n"
    )
    assert replace_section("# R\n", "ant_goal", "new") == f"# R\n\n## Ant goal position\n\n{block}"
