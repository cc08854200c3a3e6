"""``metarl train --track``: a real offline W&B run with config, metric history and videos."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest
import yaml
from wandb.proto import wandb_internal_pb2

from metarl.cli import main
from metarl.logging import read_metrics
from metarl.tracking import RUN_FILE, wandb_mode
from tests.tiny_runs import TINY_NAVIGATION, train_tiny_run

BLOCK_SIZE = 32768  # the .wandb file is a LevelDB-style log of 32 KiB blocks
HEADER_SIZE = 7  # ":W&B", 2-byte magic, 1-byte version; each chunk: crc32, length, type
FULL, LAST = 1, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """The protobuf records of a ``run-*.wandb`` transaction log."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, chunk, position = [], b"", HEADER_SIZE
    while position + HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < HEADER_SIZE:
            position += left_in_block
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        chunk += data[position + HEADER_SIZE : position + HEADER_SIZE + length]
        position += HEADER_SIZE + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def read_history(records: list[wandb_internal_pb2.Record]) -> list[dict]:
    """The logged history rows, nested keys joined with '/'."""
    return [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in record.history.item
        }
        for record in records
        if record.HasField("history")
    ]


def read_summary(records: list[wandb_internal_pb2.Record]) -> dict:
    """The run's summary: its updates in order."""
    return {
        item.key: json.loads(item.value_json)
        for record in records
        if record.HasField("summary")
        for item in record.summary.update
        if item.key
    }


def offline_folders(run_dir: Path) -> list[tuple[wandb_internal_pb2.RunRecord, list[dict]]]:
    """Each offline run folder's run record and history, oldest first."""
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    found = []
    for folder in folders:
        (log,) = folder.glob("run-*.wandb")
        records = read_records(log)
        (run,) = [r.run for r in records if r.HasField("run")]
        found.append((run, read_history(records)))
    return found


def md5_base64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry under ``folder``: a link's target, a file's bytes, None for a folder."""
    if not folder.exists():
        return {}
    entries: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            entries[str(path.relative_to(folder))] = ("link", os.readlink(path))
        else:
            entries[str(path.relative_to(folder))] = path.read_bytes() if path.is_file() else None
    return entries


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials, no network: W&B must choose offline mode by itself."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_offline_run_holds_config_metrics_videos_and_artifacts(
    tmp_path: Path, offline_wandb: None
) -> None:
    tracked = ["--track", "--video-every", "1", "--eval-tasks", "2", "--wandb-artifacts"]
    run_dir = train_tiny_run(tmp_path / "run", *tracked, "--wandb-tags", "sweep-7")
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    (log,) = folder.glob("run-*.wandb")
    records = read_records(log)

    (run,) = [r.run for r in records if r.HasField("run")]
    assert run.display_name.startswith("Navigation2D__original__1__")
    assert list(run.tags) == ["Navigation2D", "original", "maml_trpo", "sweep-7"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert {key: config[key] for key in saved} == saved

    history = read_history(records)
    metrics = read_metrics(run_dir)
    assert [h["_step"] for h in history] == [1, 2]
    for logged, record in zip(history, metrics):
        assert logged["adapt/return_post"] == pytest.approx(record["return_post"])
        assert logged["progress/env_steps"] == record["env_steps"]
        assert logged["time/env_steps_per_second"] > 0
    assert {f"eval/return_step{k}" for k in range(4)} <= set(history[-1])
    assert history[-1]["eval/plot/_type"] == "image-file"

    videos = sorted((folder / "files" / "media" / "videos").rglob("*.mp4"))
    assert [h["video/adaptation/path"] for h in history] == [
        str(v.relative_to(folder / "files")) for v in videos
    ]
    for video in videos:
        reader = imageio.get_reader(video)
        assert len(list(reader.iter_data())) == 10  # the horizon
        reader.close()

    best = max(metrics, key=lambda r: r["return_post"])
    summary = read_summary(records)
    assert summary["best/return_post"] == pytest.approx(best["return_post"])
    assert summary["best/iteration"] == best["iteration"]

    artifacts = {r.artifact.name: r.artifact for r in records if r.HasField("artifact")}
    ours = {f"checkpoints-{run.run_id}", f"evaluation-{run.run_id}"}
    assert ours <= set(artifacts)  # beside W&B's own artifact of the evaluation table
    for name, folder_name in (("checkpoints", "checkpoints"), ("evaluation", "evaluation")):
        artifact = artifacts[f"{name}-{run.run_id}"]
        files = {c.path: c.digest for c in artifact.manifest.contents}
        expected = sorted((run_dir / folder_name).iterdir())
        assert files == {path.name: md5_base64(path) for path in expected}
    assert artifacts[f"checkpoints-{run.run_id}"].type == "model"
    assert json.loads(artifacts[f"checkpoints-{run.run_id}"].metadata) == {
        "best/return_post": pytest.approx(best["return_post"]),
        "best/iteration": best["iteration"],
    }


def test_resumed_run_continues_the_same_wandb_run(tmp_path: Path, offline_wandb: None) -> None:
    run_dir = train_tiny_run(tmp_path / "run", "--track", "--eval-tasks", "0")
    resume = ["train", "--resume", str(run_dir), "--iterations", "4", "--track", "--no-progress"]
    assert main([*resume, "--eval-tasks", "0"]) == 0

    (first, history), (resumed, continued) = offline_folders(run_dir)
    assert resumed.run_id == first.run_id == json.loads((run_dir / RUN_FILE).read_text())["id"]
    assert resumed.display_name == first.display_name
    assert [h["_step"] for h in history + continued] == [1, 2, 3, 4]
    env_steps = [h["progress/env_steps"] for h in history + continued]
    assert env_steps == [r["env_steps"] for r in read_metrics(run_dir)]


def tracked_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a ``metarl`` process using W&B without credentials or network."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home = str(tmp_path / "wandb-home")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        environ[name] = home
    return {**environ, "NETRC": str(tmp_path / "no-netrc"), **settings}


def test_a_tracked_run_prints_no_warnings(tmp_path: Path) -> None:
    """W&B's own console output included (a video once warned about ``fps``)."""
    command = [sys.executable, "-m", "metarl", "train", "--run-dir", str(tmp_path / "run")]
    command += [*TINY_NAVIGATION, "--track", "--video-every", "1", "--eval-tasks", "2"]
    result = subprocess.run(
        command, env=tracked_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "wandb: Run data is saved locally" in result.stderr  # W&B's console, not silenced
    assert "warn" not in (result.stdout + result.stderr).lower()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["new", "overwrite", "resume"])
def test_wandb_that_cannot_start_leaves_the_run_directory_as_it_was(
    tmp_path: Path, case: str
) -> None:
    """Online W&B with a server that refuses connections (W&B gives up after ~12 s): one line of
    ours on stderr, and not one file of the run directory changed."""
    run_dir = tmp_path / "run"
    offline = tracked_env(tmp_path, WANDB_MODE="offline", WANDB_SILENT="true")
    if case != "new":
        command = [sys.executable, "-m", "metarl", "train", "--run-dir", str(run_dir)]
        subprocess.run([*command, *TINY_NAVIGATION, "--track"], env=offline, check=True)
    before = snapshot(run_dir)
    flags = {
        "new": ["--run-dir", str(run_dir), *TINY_NAVIGATION],
        "overwrite": ["--run-dir", str(run_dir), "--overwrite", *TINY_NAVIGATION],
        "resume": ["--resume", str(run_dir), "--iterations", "3"],
    }[case]
    unreachable = tracked_env(
        tmp_path,
        WANDB_API_KEY="x" * 40,
        WANDB_BASE_URL="http://127.0.0.1:9",
        WANDB_INIT_TIMEOUT="1",
    )
    command = [sys.executable, "-m", "metarl", "train", *flags, "--track", "--wandb-mode", "online"]
    result = subprocess.run(command, env=unreachable, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    ours = [line for line in result.stderr.splitlines() if not line.startswith("wandb:")]
    assert len(ours) == 1 and ours[0].startswith("metarl train: error: W&B: cannot start the run (")
    assert snapshot(run_dir) == before


def test_resume_failing_after_wandb_started_leaves_the_run_directory_as_it_was(
    tmp_path: Path, offline_wandb: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checkpoint does not fit the new policy: W&B's new folder is removed and its links
    (``latest-run``, ``debug.log``) point back to the first run."""
    run_dir = train_tiny_run(tmp_path / "run", "--track", "--eval-tasks", "0")
    before = snapshot(run_dir)
    change = ["--allow-config-change", "--set", "policy.hidden_sizes=[4]"]
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--track", *change]) == 2
    assert "does not fit this run" in capsys.readouterr().err
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        (["--wandb-tags", "x" * 65], {}, "--wandb-tags: expected 1 to 64 characters"),
        (["--wandb-project", "a/b"], {}, "--wandb-project: expected a name without any of /"),
        ([], {"WANDB_MODE": "bogus"}, "WANDB_MODE=bogus: expected one of online, offline"),
    ],
    ids=["long-tag", "project-with-slash", "unknown-wandb-mode"],
)
def test_bad_wandb_input_fails_with_one_line_before_any_work(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    environ: dict[str, str],
    message: str,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    try:
        status = main(["train", "--run-dir", str(tmp_path / "run"), "--track", *flags])
    except SystemExit as stop:  # argparse's usage errors
        status = int(stop.code or 0)
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


def test_offline_baseline_run_is_tagged_and_logs_its_updates(
    tmp_path: Path, offline_wandb: None
) -> None:
    run_dir = tmp_path / "oracle"
    flags = ["--steps", "800", "--steps-per-update", "400", "--set", "policy.hidden_sizes=[8]"]
    tracked = ["--track", "--eval-tasks", "2", "--no-progress", "--run-dir", str(run_dir)]
    assert main(["baseline", "oracle", *flags, *tracked]) == 0
    (log,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = read_records(log)
    (run,) = [r.run for r in records if r.HasField("run")]
    assert list(run.tags) == ["Navigation2D", "original", "sb3_trpo_oracle"]
    history = read_history(records)
    metrics = read_metrics(run_dir)
    assert [h["_step"] for h in history] == [1, 2]
    assert [h["progress/return"] for h in history] == pytest.approx([m["return"] for m in metrics])
    assert set(history[-1]) >= {"eval/return_step0", "eval/plot/_type"}
    assert "eval/return_step1" not in history[-1]  # the oracle is never adapted


@pytest.mark.parametrize(
    ("requested", "environ", "netrc_host", "expected"),
    [
        ("disabled", {"WANDB_API_KEY": "k"}, None, "disabled"),
        (None, {"WANDB_MODE": "offline", "WANDB_API_KEY": "k"}, None, "offline"),
        (None, {"WANDB_API_KEY": "k"}, None, "online"),
        (None, {}, "api.wandb.ai", "online"),
        (None, {}, "example.com", "offline"),
        (None, {}, None, "offline"),
    ],
    ids=["flag-wins", "env-mode", "api-key", "wandb-login", "other-netrc-host", "nothing"],
)
def test_mode_is_online_only_with_credentials(
    tmp_path: Path, requested: str | None, environ: dict, netrc_host: str | None, expected: str
) -> None:
    netrc = tmp_path / "netrc"
    if netrc_host is not None:
        netrc.write_text(f"machine {netrc_host}\n  login user\n  password secret\n")
        netrc.chmod(0o600)
    environ = {**environ, "NETRC": str(netrc)}
    assert wandb_mode(requested, environ) == expected
