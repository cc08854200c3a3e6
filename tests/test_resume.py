"""Resume: a run killed with SIGKILL and resumed repeats the uninterrupted run exactly, and a kill
during a checkpoint write leaves the previous checkpoint loadable."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.checkpoint import (
    FORMAT,
    environment_change,
    environments_before,
    find_checkpoint,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
    training_environment_change,
)
from metarl.cli import main
from metarl.logging import deterministic_fields, read_metrics
from metarl.training import STATE_KEYS
from tests.tiny_runs import tiny_flags

TINY = tiny_flags("env.kwargs={horizon: 20}", num_trajectories=3)
# One torch thread, like the test process (tests/conftest.py): same thread count, same floats.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def num_lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def kill_after_lines(command: list[str], metrics: Path, lines: int) -> int:
    """Start ``command``, SIGKILL it once ``metrics`` has ``lines`` lines; its line count then."""
    process = subprocess.Popen(command, env=ONE_THREAD, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while num_lines(metrics) < lines:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    return num_lines(metrics)


def assert_same_checkpoint(a: Path, b: Path) -> None:
    state_a, state_b = load_checkpoint(a), load_checkpoint(b)
    assert (state_a["iteration"], state_a["best_return"]) == (
        state_b["iteration"],
        state_b["best_return"],
    )
    for name, tensor in state_a["policy"].items():
        assert torch.equal(tensor, state_b["policy"][name]), name


VARIANTS = {
    "maml_trpo": [],
    "reptile": ["--set", "algorithm.name=reptile", "--set", "algorithm.num_inner_steps=2"],
    # episodes that end at the goal, and further ones sampled to fill each task's step budget
    "fill_steps": ["--set", "sampler.fill_steps=true", "--set", "env.kwargs.goal_tolerance=0.3"],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_run_killed_and_resumed_repeats_the_uninterrupted_run(tmp_path: Path, variant: str) -> None:
    # last.pt every 2 iterations: the kill usually leaves logged iterations to replay
    num_iterations, kill_after = 10, 3
    args = [*TINY, "--set", "train.checkpoint_every=2", *VARIANTS[variant]]
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "metarl", "train", "--run-dir", str(killed)]
    command += ["--iterations", str(num_iterations), *args]
    logged = kill_after_lines(command, killed / "metrics.jsonl", kill_after)
    assert kill_after <= logged < num_iterations  # really interrupted

    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    full = tmp_path / "full"
    assert main(["train", "--run-dir", str(full), "--iterations", str(num_iterations), *args]) == 0

    resumed, uninterrupted = read_metrics(killed), read_metrics(full)
    assert [r["iteration"] for r in resumed] == list(range(1, num_iterations + 1))
    assert [deterministic_fields(r) for r in resumed] == [
        deterministic_fields(r) for r in uninterrupted
    ]
    for name in ("last.pt", "best.pt"):
        assert_same_checkpoint(killed / "checkpoints" / name, full / "checkpoints" / name)
    if variant == "fill_steps":  # more steps than 3 episodes of 20 steps per task and phase
        steps = np.diff([0] + [r["env_steps"] for r in uninterrupted])
        assert steps.max() > 2 * 2 * 3 * 20


def test_resume_cleans_crash_leftovers_and_keeps_best_consistent(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--iterations", "2", *TINY]) == 0
    checkpoints = run / "checkpoints"
    state = load_checkpoint(checkpoints / "last.pt")
    assert (
        set(state) == {"format", "env_id", "env_before", *STATE_KEYS} and state["format"] == FORMAT
    )
    assert state["metrics_lines"] == 2 and state["config"]["train"]["num_iterations"] == 2
    # what a crash can leave: a half-written temporary file, and a best.pt of an iteration
    # logged after last.pt and discarded by the resume
    (checkpoints / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    ghost = {**state["best"], "iteration": 3, "best_return": 1e9}
    save_checkpoint(checkpoints / "best.pt", ghost)

    assert main(["train", "--resume", str(run), "--iterations", "3", "--no-progress"]) == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt"]
    records = read_metrics(run)
    best = max(records, key=lambda r: r["return_post"])
    restored = load_checkpoint(checkpoints / "best.pt")
    assert (restored["iteration"], restored["best_return"]) == (
        best["iteration"],
        best["return_post"],
    )
    assert load_checkpoint(checkpoints / "last.pt")["config"]["train"]["num_iterations"] == 3


def test_resume_with_allowed_config_change_uses_the_new_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--iterations", "1", *TINY]) == 0
    change = ["--allow-config-change", "--set", "algorithm.max_kl=0.02", "--iterations", "2"]
    assert main(["train", "--resume", str(run), "--no-progress", *change]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["algorithm"]["max_kl"] == 0.02
    assert "max_kl: 0.02" in (run / "config.yaml").read_text()
    assert len(read_metrics(run)) == 2


WRITER = """
import os, sys, time
from pathlib import Path
import torch
from metarl.checkpoint import save_checkpoint

path, slow_disk = Path(sys.argv[1]), sys.argv[2] == "slow-disk"
def write(i):
    policy = {"weight": torch.full((500_000,), float(i))}
    save_checkpoint(path, {"iteration": i, "config": {}, "policy": policy})
write(0)
if slow_disk:  # every later write hangs between writing its temporary file and renaming it
    def hang(fd):
        print("writing", flush=True)
        time.sleep(600)
    os.fsync = hang
print("ready", flush=True)
i = 1
while True:
    write(i)
    i += 1
"""


@pytest.mark.parametrize("moment", ["random-1", "random-2", "slow-disk"])
def test_kill_during_checkpoint_writes_leaves_a_loadable_checkpoint(
    tmp_path: Path, moment: str
) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), moment],
        stdout=subprocess.PIPE,
        text=True,
        env=ONE_THREAD,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    if moment == "slow-disk":
        assert process.stdout.readline() == "writing\n"
    else:
        time.sleep(random.Random(moment).uniform(0.0, 0.5))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    state = load_checkpoint(path)
    assert torch.equal(state["policy"]["weight"], torch.full((500_000,), float(state["iteration"])))
    assert find_checkpoint(tmp_path) == path
    leftovers = remove_stale_temp_files(path.parent)
    if moment == "slow-disk":
        assert state["iteration"] == 0 and len(leftovers) == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_baseline_killed_and_resumed_finishes_its_budget(tmp_path: Path) -> None:
    """A baseline run killed with SIGKILL resumes from its last update: one line per update,
    the budget reached, the checkpoint loadable and consistent with the metrics."""
    run_dir = tmp_path / "baseline"
    budget = ["--steps", "4000", "--steps-per-update", "400", "--set", "policy.hidden_sizes=[8]"]
    command = [sys.executable, "-m", "metarl", "baseline", "pretrained", *budget, "--no-progress"]
    killed_at = kill_after_lines(
        [*command, "--run-dir", str(run_dir)], run_dir / "metrics.jsonl", 3
    )
    assert 3 <= killed_at < 10
    assert main(["baseline", "pretrained", "--resume", str(run_dir), "--no-progress"]) == 0
    records = read_metrics(run_dir)
    assert [r["iteration"] for r in records] == list(range(1, 11))
    assert [r["env_steps"] for r in records] == [400 * i for i in range(1, 11)]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["iteration"] == 10 and last["env_steps"] == 4000
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["best_return"] == max(
        r["return"] for r in records
    )


def test_a_run_being_written_is_refused_to_a_second_process(tmp_path: Path, capsys) -> None:
    """While one process trains a run, another cannot resume it, replace it (``--overwrite``)
    or resume it from ``metarl baseline``: one line each, and the run goes on untouched; once
    the first process is killed, the run resumes."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "metarl", "train", "--run-dir", str(run), "--no-progress"]
    process = subprocess.Popen(
        [*command, "--iterations", "100000", *TINY], env=ONE_THREAD, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "last.pt").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        lines = num_lines(run / "metrics.jsonl")
        at = str(load_checkpoint(run / "checkpoints" / "last.pt")["iteration"])
        for argv in (
            ["train", "--resume", str(run), "--iterations", at],
            ["train", "--run-dir", str(run), "--overwrite", "--iterations", "1", *TINY],
            ["baseline", "pretrained", "--resume", str(run)],
        ):
            assert main(argv) == 2, argv
            error = capsys.readouterr().err
            assert error.count("\n") == 1 and "another process is writing this run" in error
        assert (run / "checkpoints" / "last.pt").exists()  # not moved away
        while num_lines(run / "metrics.jsonl") <= lines:  # not cut back: the first run goes on
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate()
    done = load_checkpoint(run / "checkpoints" / "last.pt")["iteration"]
    assert main(["train", "--resume", str(run), "--iterations", str(done + 1)]) == 0
    assert [r["iteration"] for r in read_metrics(run)] == list(range(1, done + 2))


def test_a_run_made_on_another_environment_version_resumes_only_when_allowed(
    tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), "--iterations", "1", *TINY]) == 0
    capsys.readouterr()
    last = run / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert state["env_id"] == "metarl/Navigation2D-v0"
    # dynamics since changed; a best return no iteration on these reaches
    save_checkpoint(last, {**state, "env_id": "metarl/Navigation2D-v7", "best_return": 1e9})
    assert main(["train", "--resume", str(run), "--iterations", "2"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "differs from the run's in the environment (metarl/Navigation2D-v7, now " in error
    assert num_lines(run / "metrics.jsonl") == 1
    assert main(["train", "--resume", str(run), "--iterations", "3", "--allow-config-change"]) == 0
    resumed = load_checkpoint(last)
    assert resumed["env_id"] == "metarl/Navigation2D-v0"
    assert resumed["env_before"] == [[1, "metarl/Navigation2D-v7", None]]  # the history is kept
    best = load_checkpoint(run / "checkpoints" / "best.pt")  # chosen on these dynamics only
    assert best["iteration"] >= 2 and resumed["best_return"] == best["best_return"] < 1e9
    assert training_environment_change(resumed) == (
        "metarl/Navigation2D-v7 (iteration 1), now metarl/Navigation2D-v0"
    )
    assert main(["train", "--resume", str(run), "--iterations", "4"]) == 0  # no change now
    assert load_checkpoint(last)["env_before"] == [[1, "metarl/Navigation2D-v7", None]]


def test_states_from_before_environment_ids_were_recorded_are_of_version_0() -> None:
    def state(family: str) -> dict:
        return {"config": {"env": {"family": family}}}

    assert environment_change(state("Navigation2D")) is None
    assert environment_change(state("AntDir")) == "metarl/AntDir-v0, now metarl/AntDir-v1"


def test_a_resume_on_another_version_records_the_one_left() -> None:
    """Also where the version left the run's preset as it was (it resumes without a flag)."""
    env = {"family": "AntDir", "kwargs": {"physics": "gymnasium"}}
    state = {"config": {"env": env}, "iteration": 30, "env_id": "metarl/AntDir-v0"}
    assert environments_before(state) == [[30, "metarl/AntDir-v0", "gymnasium"]]
    current = {**state, "env_id": "metarl/AntDir-v1", "env_before": [[9, "metarl/AntDir-v0", None]]}
    assert environments_before(current) == [[9, "metarl/AntDir-v0", None]]


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        ("original", "metarl/AntDir-v0 (iterations 1-200), now metarl/AntDir-v1"),
        ("gymnasium", None),  # v1 left this preset as it was
    ],
)
def test_the_whole_run_counts_in_the_change_an_evaluation_notes(
    before: str, expected: str | None
) -> None:
    """A run trained 200 iterations on v0 under the preset ``before``, then resumed on v1 under
    the original preset: resuming it again changes nothing, but its policy was partly trained on
    dynamics that have changed since, judged by the preset that part ran."""
    state = {
        "config": {"env": {"family": "AntDir", "kwargs": {"physics": "original"}}},
        "iteration": 500,
        "env_id": "metarl/AntDir-v1",
        "env_before": [[200, "metarl/AntDir-v0", before]],
    }
    assert environment_change(state) is None
    assert training_environment_change(state) == expected
    whole_run = {**state, "env_id": "metarl/AntDir-v0", "env_before": []}
    assert training_environment_change(whole_run) == "metarl/AntDir-v0, now metarl/AntDir-v1"


@pytest.mark.parametrize(
    ("kwargs", "changed"),
    [({}, True), ({"physics": "original"}, True), ({"physics": "gymnasium"}, False)],
    ids=["default-preset", "original", "gymnasium"],
)
def test_a_version_changes_only_the_runs_of_the_presets_it_changed(
    kwargs: dict, changed: bool
) -> None:
    """Ant v1 changed the original preset (the default) and left gymnasium's as it was."""
    config = {"env": {"family": "AntGoal", "kwargs": kwargs}}
    state = {"config": config, "env_id": "metarl/AntGoal-v0"}
    expected = "metarl/AntGoal-v0, now metarl/AntGoal-v1" if changed else None
    assert environment_change(state) == expected
    later = {**state, "env_id": "metarl/AntGoal-v2"}  # from a later metarl: changed, whatever
    assert environment_change(later) == "metarl/AntGoal-v2, now metarl/AntGoal-v1"
