"""``metarl train --track``: a real offline W&B run with config, metric history and videos."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import pytest
import yaml
from wandb.proto import wandb_internal_pb2

from metarl.cli import main
from metarl.logging import read_metrics
from metarl.tracking import wandb_mode
from tests.tiny_runs import train_tiny_run

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


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials, no network: W&B must choose offline mode by itself."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_offline_run_holds_config_metrics_and_videos(tmp_path: Path, offline_wandb: None) -> None:
    run_dir = train_tiny_run(tmp_path / "run", "--track", "--video-every", "1", "--eval-tasks", "2")
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    (log,) = folder.glob("run-*.wandb")
    records = read_records(log)

    (run,) = [r.run for r in records if r.HasField("run")]
    assert run.display_name.startswith("Navigation2D__original__1__")
    assert list(run.tags) == ["Navigation2D", "original", "maml_trpo"]
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
