"""The command line itself: ``--help`` without the heavy libraries, ``--version``, ``metarl
list``, and what ``metarl train`` prints: a progress bar and one line per iteration, the lines
alone with ``--no-progress``, nothing with ``--quiet``, and an end-of-run summary."""

from __future__ import annotations

import inspect
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from metarl.arguments import REPRODUCIBLE_TASKS
from metarl.cli import main
from metarl.config import bundled_configs
from metarl.envs import FAMILIES
from tests.tiny_runs import TINY_NAVIGATION

HEAVY = (
    "torch",
    "wandb",
    "pydantic",
    "stable_baselines3",
    "matplotlib",
    "imageio",
    "mujoco",
    "numba",
    "ray",
)
# TINY_NAVIGATION without its --no-progress: the console flags are the subject here
TINY = [flag for flag in TINY_NAVIGATION if flag != "--no-progress"]


@pytest.mark.parametrize(
    "argv", [["--help"], ["train", "--help"], ["--version"]], ids=["help", "train-help", "version"]
)
def test_help_and_version_import_no_heavy_library(argv: list[str]) -> None:
    """What keeps ``metarl --help`` fast: torch, W&B and the others are imported by the
    commands that use them, not by the parser."""
    code = (
        "import sys\nfrom metarl.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_reproduce_offers_every_row_of_the_table() -> None:
    """The parser names the rows without importing :mod:`metarl.reproduce`: the two lists must
    not drift apart."""
    from metarl.reproduce import TASKS

    assert REPRODUCIBLE_TASKS == tuple(TASKS)


def test_version_is_the_installed_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"metarl {version('metarl')}\n"


def test_list_names_every_family_preset_argument_and_bundled_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    families, configs = out.split("Bundled configs")
    for name, family in FAMILIES.items():
        (entry,) = [line for line in families.splitlines() if re.search(rf" {name}\b", line)]
        physics = "physics" in inspect.signature(family.__init__).parameters
        assert entry.endswith("presets original, gymnasium" if physics else "presets original")
        for argument in inspect.signature(family.__init__).parameters:
            if argument not in ("self", "seed"):
                assert f"    {argument}: " in families, (name, argument)
    assert [line.split()[0] for line in configs.splitlines()[1:]] == bundled_configs()
    assert re.search(r"\n  navigation +Navigation2D \(the default\)\n", configs)


def train(tmp_path: Path, *flags: str) -> tuple[str, str]:
    """``metarl train`` of a tiny run with ``flags``: its stdout and stderr, carriage returns
    kept."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "metarl", "train", "--run-dir", str(run_dir), *TINY, *flags],
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode(), result.stderr.decode()


ITERATION_LINES = ["iter    1 | return pre", "iter    2 | return pre"]


def test_progress_bar_and_lines_by_default(tmp_path: Path) -> None:
    out, err = train(tmp_path, "--eval-tasks", "0")
    assert [line[:22] for line in out.splitlines()] == ITERATION_LINES
    assert "meta-iterations: 100%" in err and "\r" in err


def test_no_progress_keeps_the_lines_without_carriage_returns(tmp_path: Path) -> None:
    out, err = train(tmp_path, "--no-progress", "--eval-tasks", "2")
    assert [line[:22] for line in out.splitlines()] == ITERATION_LINES
    assert "\r" not in out + err
    run = tmp_path / "run"
    lines = err.splitlines()
    assert lines[0] == f"run directory: {run}"
    assert lines[1].startswith("done: iteration 2, ") and "; best return_post " in lines[1]
    assert lines[2].startswith("held-out evaluation (2 tasks): return ")
    assert lines[3].startswith(f"files in {run}: checkpoints/, config.yaml, evaluation/")
    assert lines[4] == "next:"
    assert f"metarl evaluate {run} " in lines[5]
    assert any(f"metarl train --resume {run} --iterations N" in line for line in lines[5:])


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    assert train(tmp_path, "--quiet") == ("", "")


def test_a_reader_leaving_early_is_no_error() -> None:
    """``metarl list | true``: the pipe, closed before the listing is written, ends the
    command quietly with status 141, as for cat."""
    command = f"{shlex.quote(sys.executable)} -m metarl list | true; echo ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert result.stdout == "141\n" and result.stderr == ""


def test_overwrite_refuses_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("kept")
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--run-dir", ".", "--overwrite"]) == 2
    assert "--overwrite cannot replace the current directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
