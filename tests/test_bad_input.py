"""Every bad input fails before any work with one line on stderr naming the problem, a non-zero
exit status and nothing written: configs, flags, run directories, checkpoints, devices."""

from __future__ import annotations

import importlib.util
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from metarl.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from metarl.cli import main
from metarl.config import load_config
from tests.tiny_runs import tiny_flags

TINY = tiny_flags("env.kwargs={horizon: 5}")
NEW = ["train", "--run-dir", "{tmp}/new", "--no-progress"]
RESUME = ["train", "--resume", "{tmp}/run", "--no-progress"]
Setup = Callable[[Path, Path], None]  # (workspace, a finished 2-iteration run)


def write(name: str, content: str | bytes) -> Setup:
    def setup(tmp: Path, finished: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return setup


def copy_run(damage: Callable[[Path], object] | None = None) -> Setup:
    """The finished run copied to ``{tmp}/run``, then damaged."""

    def setup(tmp: Path, finished: Path) -> None:
        shutil.copytree(finished, tmp / "run")
        if damage is not None:
            damage(tmp / "run")

    return setup


def copy_run_to(folder: str) -> Setup:
    """The finished run copied to ``{tmp}/FOLDER``."""
    return lambda tmp, finished: shutil.copytree(finished, tmp / folder)


def last(run: Path) -> Path:
    return run / "checkpoints" / "last.pt"


def truncate_checkpoint(run: Path) -> None:
    data = last(run).read_bytes()
    last(run).write_bytes(data[: len(data) // 2])


def drop_sampler_state(run: Path) -> None:
    state = load_checkpoint(last(run))
    del state["sampler"]
    save_checkpoint(last(run), state)


def corrupt_saved_config(run: Path) -> None:
    state = load_checkpoint(last(run))
    state["config"]["algorithm"]["inner_rl"] = 0.1
    save_checkpoint(last(run), state)


def garble_environment_history(run: Path) -> None:
    state = load_checkpoint(last(run))
    state["env_before"] = [["1", "metarl/Navigation2D-v7", None]]  # the iteration as text
    save_checkpoint(last(run), state)


def shorten_metrics(run: Path) -> None:
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])


def make_reptile_run(run: Path) -> None:
    best = run / "checkpoints" / "best.pt"
    state = load_checkpoint(best)
    state["config"]["algorithm"]["name"] = "reptile"
    save_checkpoint(best, state)


def baseline_checkpoint(method: str) -> Setup:
    """``{tmp}/METHOD/checkpoints/last.pt``: a checkpoint whose config is that baseline's."""

    def setup(tmp: Path, finished: Path) -> None:
        config = load_config(None, [f"baseline.method={method}"]).to_dict()
        state = {"iteration": 1, "config": config, "policy": {}}
        save_checkpoint(tmp / method / "checkpoints" / "last.pt", state)

    return setup


class CodePayload:
    """A pickle that would run code when loaded."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def torch_file(content: object) -> Callable[[Path], object]:
    def damage(run: Path) -> None:
        torch.save(content, last(run))

    return damage


@dataclass
class Case:
    argv: list[str]
    message: str  # a substring of the error line
    setup: Setup | None = None
    status: int = 2


CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available here")
RAY = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray, an optional extra, is not installed"
)

CASES = {
    # configs
    "unknown-key": Case(
        [*NEW, "--set", "algorithm.inner_rl=0.1"],
        "algorithm.inner_rl: unknown key (did you mean 'inner_lr'?)",
    ),
    "unknown-section": Case([*NEW, "--set", "trainer.seed=1"], "trainer: unknown key"),
    "wrong-type": Case([*NEW, "--set", "algorithm.num_tasks=many"], "algorithm.num_tasks: "),
    "out-of-range": Case([*NEW, "--set", "algorithm.gamma=1.5"], "algorithm.gamma: "),
    "zero-tasks": Case([*NEW, "--set", "algorithm.num_tasks=0"], "algorithm.num_tasks: "),
    "unknown-inner-parameters": Case(
        [*NEW, "--set", "algorithm.inner_parameters=body"], "algorithm.inner_parameters: "
    ),
    "negative-inner-steps": Case(
        [*NEW, "--set", "algorithm.num_inner_steps=-1"], "algorithm.num_inner_steps: "
    ),
    "unknown-algorithm": Case(
        [*NEW, "--set", "algorithm.name=reptil"],
        "algorithm.name: Input should be 'maml_trpo' or 'reptile' (got 'reptil')",
    ),
    "zero-outer-lr": Case(
        [*NEW, "--set", "algorithm.outer_lr=0"], "outer_lr: Input should be greater than 0"
    ),
    "reptile-without-inner-step": Case(
        [*NEW, "--set", "algorithm.name=reptile", "--set", "algorithm.num_inner_steps=0"],
        "algorithm.num_inner_steps: Reptile needs at least one inner step",
    ),
    "infinite-outer-lr": Case(
        [*NEW, "--set", "algorithm.outer_lr=.inf"], "outer_lr: Input should be a finite number"
    ),
    "zero-horizon": Case([*NEW, "--set", "env.kwargs={horizon: 0}"], "horizon must be > 0"),
    "bad-nonlinearity": Case(
        [*NEW, "--set", "policy.nonlinearity=sigmoid"], "policy.nonlinearity: "
    ),
    "zero-rejection-limit": Case(
        [*NEW, "--set", "train.max_consecutive_rejections=0"], "train.max_consecutive_rejections"
    ),
    "not-key-value": Case([*NEW, "--set", "algorithm.inner_lr"], "expected KEY=VALUE"),
    "missing-config": Case([*NEW, "--config", "{tmp}/missing.yaml"], "missing.yaml: cannot read"),
    "config-is-a-folder": Case(
        [*NEW, "--config", "{tmp}/folder.yaml"],
        "folder.yaml: cannot read",
        write("folder.yaml/inside", ""),
    ),
    "binary-config": Case(
        [*NEW, "--config", "{tmp}/bad.yaml"],
        "not a UTF-8 text file",
        write("bad.yaml", b"\xff\xfe"),
    ),
    "invalid-yaml": Case(
        [*NEW, "--config", "{tmp}/bad.yaml"], "invalid YAML at line", write("bad.yaml", "a: [1\n")
    ),
    "top-level-list": Case(
        [*NEW, "--config", "{tmp}/bad.yaml"], "mapping of sections", write("bad.yaml", "- 1\n")
    ),
    "empty-config": Case(
        [*NEW, "--config", "{tmp}/empty.yaml"],
        "empty.yaml: empty; expected a mapping of sections (env, policy, algorithm, train",
        write("empty.yaml", ""),
    ),
    "config-of-comments-only": Case(
        [*NEW, "--config", "{tmp}/c.yaml"], "c.yaml: empty;", write("c.yaml", "# env: {}\n")
    ),
    "unknown-bundled-config": Case([*NEW, "--config", "navigaton"], "navigaton: no such file"),
    "unknown-family": Case(
        [*NEW, "--set", "env.family=Navigation3D"],
        "unknown task family 'Navigation3D' (did you mean 'Navigation2D'?)",
    ),
    "unknown-physics-preset": Case(
        [*NEW, "--set", "env.family=HalfCheetahVel", "--set", "env.kwargs={physics: bogus}"],
        "env.kwargs.physics must be one of ['gymnasium', 'original'], got 'bogus'",
    ),
    "non-boolean-oracle": Case(
        [*NEW, "--set", "env.kwargs={oracle: 5}"], "env.kwargs.oracle must be true or false, got 5"
    ),
    "unknown-env-argument": Case(
        [*NEW, "--set", "env.kwargs={goal_rang: 1}"], "env.kwargs.goal_rang: unknown argument"
    ),
    "cuda-without-cuda": Case(
        [*NEW, "--device", "cuda"], "'cuda' requested but no CUDA device is available"
    ),
    # sampling
    "unknown-sampler-backend": Case(
        [*NEW, "--set", "sampler.backend=spark"],
        "sampler.backend: Input should be 'local' or 'ray' (got 'spark')",
    ),
    "zero-lanes": Case([*NEW, "--set", "sampler.num_lanes=0"], "sampler.num_lanes: "),
    "zero-worker-timeout": Case(
        [*NEW, "--set", "sampler.worker_timeout=0"],
        "sampler.worker_timeout: Input should be greater than 0",
    ),
    "ray-address-with-local-sampler": Case(
        [*NEW, "--ray-address", "auto"],
        "--ray-address: the run samples in this process (sampler.backend: local); add --set "
        "sampler.backend=ray",
    ),
    "bad-ray-address": Case(
        [*NEW, "--set", "sampler.backend=ray", "--ray-address", "nowhere"],
        "--ray-address: cannot join a Ray cluster at nowhere: Invalid address format",
    ),
    "evaluate-bad-ray-address": Case(
        ["evaluate", "{tmp}/run", "--ray-address", "nowhere"],
        "--ray-address: cannot join a Ray cluster at nowhere",
        copy_run(),
    ),
    # flags
    "unknown-flag": Case([*NEW, "--bogus"], "unrecognized arguments: --bogus"),
    "zero-iterations": Case([*NEW, "--iterations", "0"], "--iterations: expected an integer >= 1"),
    "negative-seed": Case([*NEW, "--seed", "-1"], "--seed: expected an integer >= 0"),
    "negative-iterations": Case([*NEW, "--iterations", "-3"], "--iterations"),
    # baselines
    "baseline-unknown-method": Case(["baseline", "sac"], "invalid choice: 'sac'"),
    "baseline-unknown-algo": Case(["baseline", "oracle", "--algo", "sac"], "invalid choice"),
    "baseline-zero-steps": Case(
        ["baseline", "pretrained", "--steps", "0"], "--steps: expected an integer >= 1"
    ),
    "baseline-bad-batch": Case(
        [
            "baseline",
            "pretrained",
            "--run-dir",
            "{tmp}/new",
            "--set",
            "baseline.steps_per_update=0",
        ],
        "baseline.steps_per_update",
    ),
    "baseline-resume-of-maml-run": Case(
        ["baseline", "pretrained", "--resume", "{tmp}/run"], "a MAML run", copy_run()
    ),
    "baseline-zero-steps-per-update": Case(
        ["baseline", "oracle", "--steps-per-update", "0"], "--steps-per-update: expected an integer"
    ),
    "evaluate-zero-in-step-size-grid": Case(
        ["evaluate", "{tmp}/run", "--inner-lr-grid", "0.1", "0"],
        "--inner-lr-grid: expected a number > 0",
        copy_run(),
    ),
    "reproduce-unknown-task": Case(["reproduce", "cartpole"], "invalid choice: 'cartpole'"),
    "reproduce-bad-baseline-set": Case(
        ["reproduce", "ant_vel", "--baseline-set", "baseline.total_steps"], "expected KEY=VALUE"
    ),
    "reproduce-baseline-set-without-sb3-baselines": Case(
        ["reproduce", "navigation", "--baseline-set", "baseline.total_steps=5"],
        "--baseline-set: navigation has no stable-baselines3 baselines",
    ),
    "reproduce-alternatives-with-baseline-set": Case(
        ["reproduce", "ant_vel", "--alternatives", "--baseline-set", "baseline.total_steps=5"],
        "--baseline-set: --alternatives trains no stable-baselines3 baseline",
    ),
    "reproduce-alternatives-over-another-run": Case(
        ["reproduce", "navigation", "--alternatives", "--runs-dir", "{tmp}/runs"],
        "holds a run of another config (differs in algorithm.inner_parameters",
        copy_run_to("runs/navigation/anil-seed1"),
    ),
    "baseline-resume-as-another-method": Case(
        ["baseline", "oracle", "--resume", "{tmp}/pretrained"],
        "a pretrained run, not oracle",
        baseline_checkpoint("pretrained"),
    ),
    "baseline-resume-with-set": Case(
        ["baseline", "oracle", "--resume", "{tmp}/run", "--set", "train.seed=2"],
        "--resume: --set cannot be combined with it",
        copy_run(),
    ),
    "oracle-baseline-without-oracle-observation": Case(
        [*NEW, "--set", "baseline.method=oracle"], "env.kwargs.oracle: must be true"
    ),
    "plot-a-baseline-run": Case(
        ["plot", "{tmp}/baseline"],
        "a baseline run (plot draws MAML runs' returns)",
        write("baseline/metrics.jsonl", '{"iteration": 1, "return": -1.0}\n'),
    ),
    "evaluate-grid-without-steps": Case(
        ["evaluate", "{tmp}/run", "--inner-lr-grid", "0.1", "--steps", "0"],
        "--inner-lr-grid: needs --steps >= 1",
        copy_run(),
    ),
    "train-with-baseline-section": Case(
        [*NEW, "--set", "baseline.method=pretrained"], "baseline: a section for metarl baseline"
    ),
    "evaluate-grid-and-inner-lr": Case(
        ["evaluate", "{tmp}/run", "--inner-lr-grid", "0.1", "0.2", "--inner-lr", "0.1"],
        "--inner-lr-grid: cannot be combined with --inner-lr",
        copy_run(),
    ),
    # run directories
    "existing-run-dir": Case(NEW, "pass --overwrite to replace it", write("new/metrics.jsonl", "")),
    "run-dir-is-a-file": Case(NEW, "exists and is not a directory", write("new", "")),
    "run-dir-links-to-nothing": Case(
        NEW, "/new: is a link to nothing", lambda tmp, _: (tmp / "new").symlink_to("gone")
    ),
    "run-dir-not-writable": Case(
        ["train", "--run-dir", "/proc/metarl/run", "--no-progress"], "/proc/metarl"
    ),
    # resume
    "resume-missing-dir": Case(RESUME, "no such run directory"),
    "resume-without-checkpoints": Case(
        RESUME, "no checkpoint to resume from", write("run/metrics.jsonl", "")
    ),
    "resume-empty-checkpoint": Case(
        RESUME, "unreadable or truncated", copy_run(lambda run: last(run).write_bytes(b""))
    ),
    "resume-truncated-checkpoint": Case(
        RESUME, "unreadable or truncated", copy_run(truncate_checkpoint)
    ),
    "resume-garbage-checkpoint": Case(
        RESUME, "unreadable (not a torch file", copy_run(lambda run: last(run).write_text("x" * 99))
    ),
    "resume-foreign-checkpoint": Case(
        RESUME, f"not a metarl checkpoint (expected {FORMAT})", copy_run(torch_file([1, 2]))
    ),
    "resume-code-payload": Case(
        RESUME,
        "unreadable (not a torch file of tensors and plain data)",
        copy_run(lambda run: last(run).write_bytes(pickle.dumps(CodePayload(), protocol=2))),
    ),
    "resume-incomplete-checkpoint": Case(RESUME, "missing sampler", copy_run(drop_sampler_state)),
    "resume-invalid-saved-config": Case(
        RESUME, "invalid config (algorithm.inner_rl: unknown key", copy_run(corrupt_saved_config)
    ),
    "resume-garbled-environment-history": Case(
        RESUME,
        "env_before: expected [last iteration, env id, physics preset] in increasing order",
        copy_run(garble_environment_history),
    ),
    "evaluate-garbled-environment-history": Case(
        ["evaluate", "{tmp}/run", "--checkpoint", "last"],
        "env_before: expected [last iteration, env id, physics preset]",
        copy_run(garble_environment_history),
    ),
    "resume-config-changed": Case(
        [*RESUME, "--set", "algorithm.inner_lr=0.3"],
        "config differs from the run's in algorithm.inner_lr (pass --allow-config-change",
        copy_run(),
    ),
    "resume-policy-mismatch": Case(
        [*RESUME, "--allow-config-change", "--set", "policy.hidden_sizes=[4]"],
        "does not fit this run (Error(s) in loading state_dict",
        copy_run(),
    ),
    "resume-with-run-dir": Case(
        [*RESUME, "--run-dir", "{tmp}/other"], "cannot be combined", copy_run()
    ),
    "resume-fewer-iterations": Case(
        [*RESUME, "--iterations", "1"], "the run is already at iteration 2", copy_run()
    ),
    "resume-short-metrics": Case(RESUME, "fewer than 2 complete lines", copy_run(shorten_metrics)),
    # evaluation
    "evaluate-without-checkpoints": Case(
        ["evaluate", "{tmp}/run"], "no checkpoint found", write("run/metrics.jsonl", "")
    ),
    "evaluate-truncated-checkpoint": Case(
        ["evaluate", "{tmp}/run", "--checkpoint", "last"],
        "unreadable or truncated",
        copy_run(truncate_checkpoint),
    ),
    "evaluate-missing-compare-file": Case(
        ["evaluate", "{tmp}/run", "--compare", "{tmp}/missing.json"], "--compare", copy_run()
    ),
    "evaluate-unknown-checkpoint": Case(
        ["evaluate", "{tmp}/run", "--checkpoint", "worst"], "invalid choice", copy_run()
    ),
    "evaluate-zero-tasks": Case(
        ["evaluate", "{tmp}/run", "--tasks", "0"], "expected an integer >= 1", copy_run()
    ),
    "evaluate-paper-for-reptile": Case(
        ["evaluate", "{tmp}/run", "--paper"],
        "--paper: the MAML paper reports no reptile numbers",
        copy_run(make_reptile_run),
    ),
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--run-dir", str(run_dir), "--iterations", "2", *TINY]) == 0
    return run_dir


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's usage errors
        return int(stop.code or 0)


def test_there_are_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


MARKS = {"cuda-without-cuda": CUDA, "bad-ray-address": RAY, "evaluate-bad-ray-address": RAY}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=MARKS[n]) if n in MARKS else n for n in CASES]
)
def test_bad_input_fails_with_one_line_and_writes_nothing(
    name: str,
    tmp_path: Path,
    finished_run: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    case = CASES[name]
    if case.setup is not None:
        case.setup(tmp_path, finished_run)
    before = snapshot(tmp_path)
    status = run_main([arg.replace("{tmp}", str(tmp_path)) for arg in case.argv])
    out, err = capsys.readouterr()
    assert status == case.status and out == ""
    assert err.count("\n") == 1 and re.match(r"metarl( \w+)?: error: ", err), err
    assert case.message in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("argv", "source"),
    [
        ([*NEW, "--set", "sampler.backend=ray"], "sampler.backend"),
        (["evaluate", "{tmp}/run", "--ray-address", "auto"], "--ray-address"),
        (["video", "{tmp}/run", "--ray-address", "auto"], "--ray-address"),
    ],
    ids=["train", "evaluate", "video"],
)
def test_sampling_on_ray_without_ray_installed_is_one_line(
    argv: list[str],
    source: str,
    tmp_path: Path,
    finished_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy_run()(tmp_path, finished_run)
    before = snapshot(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without ray imports
    status = run_main([arg.replace("{tmp}", str(tmp_path)) for arg in argv])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert err.endswith(
        f": error: {source}: sampling on Ray needs the ray package: pip install 'metarl[ray]'\n"
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        ([*NEW, "--set", "algorithm.inner_rl=0.1"], "algorithm.inner_rl: unknown key"),
        (RESUME, "unreadable or truncated"),
    ],
    ids=["config", "checkpoint"],
)
def test_a_real_process_prints_no_traceback(
    argv: list[str], message: str, tmp_path: Path, finished_run: Path
) -> None:
    copy_run(truncate_checkpoint)(tmp_path, finished_run)
    before = snapshot(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "metarl", *(arg.replace("{tmp}", str(tmp_path)) for arg in argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert snapshot(tmp_path) == before
