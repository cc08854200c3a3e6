"""Sampling on Ray workers: the local sampler's batch for the same lanes, whatever happens to the
workers (a killed process, a worker that does not answer), and one line when none can be had.

One local Ray cluster for the module, started here: a head node without CPUs (the learner's, as
on a GPU node) and a node of 2 CPUs for the workers; batches are tiny."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from metarl import envs
from metarl.agents.common.episodes import Episodes
from metarl.agents.common.policies import GaussianMLPPolicy, Params
from metarl.agents.common.sampling import BatchSampler, SamplerConfig
from metarl.checkpoint import load_checkpoint
from metarl.cli import main
from metarl.logging import deterministic_fields, read_metrics
from tests.tiny_runs import tiny_flags

ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install -e '.[ray]'")
from ray.cluster_utils import Cluster  # noqa: E402

from metarl.agents.common.ray_sampling import RaySampler  # noqa: E402

WORKERS = SamplerConfig(backend="ray", num_workers=2)  # one worker per CPU: 2 lanes
TINY = tiny_flags(
    "env.family=HalfCheetahVel", "env.kwargs={horizon: 10}", "sampler.num_lanes=2"
) + ["--eval-tasks", "0"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.ERROR)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def case(
    name: str, num_tasks: int, **kwargs: Any
) -> tuple[envs.TaskFamily, list, GaussianMLPPolicy]:
    """A family, its tasks and a small policy with a wide action noise."""
    family = envs.make_family(name, seed=0, **kwargs)
    probe = family.make_batched_env(1)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(probe.observation_dim, probe.action_dim, (16,), init_std=2.0)
    return family, family.sample_tasks(num_tasks), policy


def per_task(policy: GaussianMLPPolicy, num_tasks: int) -> Params:
    """One parameter set per task, as after the inner step."""
    generator = torch.Generator().manual_seed(1)
    return {
        name: p.detach() + 0.3 * torch.randn((num_tasks, *p.shape), generator=generator)
        for name, p in policy.meta_parameters().items()
    }


def assert_same(a: Episodes, b: Episodes) -> None:
    for field in ("observations", "actions", "rewards", "mask"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert (a.success is None) == (b.success is None)
    assert a.success is None or torch.equal(a.success, b.success)


def cpu_ticks(pid: int) -> int:
    """CPU time a process has used so far (user + system, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.parametrize(
    ("family_name", "kwargs"),
    [
        ("HalfCheetahVel", {"physics": "original", "horizon": 20}),
        ("AntVel", {"physics": "original", "horizon": 10}),  # a probe pass at reset
        ("Navigation2D", {"goal_tolerance": 0.3, "horizon": 30}),  # a lane ends early
        ("MetaWorldML1", {"horizon": 10}),  # local: in worker processes; success reported
    ],
)
def test_ray_batches_are_the_local_sampler_s(
    cluster: Cluster, family_name: str, kwargs: dict
) -> None:
    family, tasks, policy = case(family_name, 5, **kwargs)
    remote = RaySampler(family, 3, seed=3, config=WORKERS)
    assert remote.num_lanes == 2 and remote.pool.size == 2
    local = BatchSampler(family, 3, seed=3, num_lanes=2)
    for params in (policy.meta_parameters(), per_task(policy, len(tasks))):
        assert_same(remote.sample(tasks, policy, params), local.sample(tasks, policy, params))
    assert remote.state_dict()["env_rng"] == local.state_dict()["env_rng"]
    assert torch.equal(remote.action_generator.get_state(), local.action_generator.get_state())


def test_ray_fills_steps_as_the_local_sampler(cluster: Cluster) -> None:
    family, tasks, policy = case("Navigation2D", 5, goal_tolerance=0.3, horizon=30)
    config = WORKERS.model_copy(update={"fill_steps": True})
    remote = RaySampler(family, 3, seed=3, config=config)
    local = BatchSampler(family, 3, seed=3, num_lanes=2, fill_steps=True)
    remote_batch = remote.sample(tasks, policy, per_task(policy, len(tasks)))
    assert_same(remote_batch, local.sample(tasks, policy, per_task(policy, len(tasks))))
    assert remote_batch.mask.shape[2] > 3  # episodes were added
    assert remote.state_dict()["env_rng"] == local.state_dict()["env_rng"]
    wanted = [2, 1, 3, 1, 2]  # a fill round's: the workers end the surplus slots at the reset
    rounds = [
        sampler.sample_round(tasks, policy, per_task(policy, 5), sampler.fill_runner(3), wanted)
        for sampler in (remote, local)
    ]
    assert_same(*rounds)
    assert torch.all(rounds[0].mask[0].sum(1) == torch.tensor(wanted))


def test_a_worker_killed_while_sampling_is_replaced_and_the_batch_is_the_same(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    family, tasks, policy = case("HalfCheetahVel", 8, physics="original", horizon=200)
    params = per_task(policy, len(tasks))
    remote = RaySampler(family, 25, seed=5, config=WORKERS)
    expected = BatchSampler(family, 25, seed=5, num_lanes=2).sample(tasks, policy, params)
    victim = remote.pool.workers[0]
    before = cpu_ticks(victim.pid)
    with ThreadPoolExecutor(1) as executor:
        sampling = executor.submit(remote.sample, tasks, policy, params)
        while cpu_ticks(victim.pid) < before + 5:  # 50 ms of CPU: it is stepping its lanes
            assert not sampling.done()
            time.sleep(0.005)
        assert not sampling.done()
        os.kill(victim.pid, signal.SIGKILL)
        episodes = sampling.result(timeout=300)
    assert_same(episodes, expected)
    assert f"lost the Ray worker with pid {victim.pid}" in caplog.text
    remote.sample(tasks[:2], policy, params)  # by now, a new worker has replaced it
    assert len(remote.pool.workers) == 2 and victim not in remote.pool.workers


def test_a_worker_that_does_not_answer_in_time_is_treated_as_lost(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    family, tasks, policy = case("HalfCheetahVel", 4, physics="original", horizon=20)
    config = WORKERS.model_copy(update={"worker_timeout": 2.0})
    remote, local = RaySampler(family, 3, 7, config), BatchSampler(family, 3, 7, num_lanes=2)
    params = policy.meta_parameters()
    assert_same(remote.sample(tasks, policy, params), local.sample(tasks, policy, params))
    expected = local.sample(tasks, policy, params)
    victim = remote.pool.workers[1]
    os.kill(victim.pid, signal.SIGSTOP)  # alive, and silent
    try:
        assert_same(remote.sample(tasks, policy, params), expected)
    finally:  # Ray has killed it; if not yet, the stopped worker is ended here
        if Path(f"/proc/{victim.pid}").exists() and "SamplingWorker" in Path(
            f"/proc/{victim.pid}/cmdline"
        ).read_text(errors="replace"):
            os.kill(victim.pid, signal.SIGKILL)
    assert f"lost the Ray worker with pid {victim.pid} (no answer within 2 s)" in caplog.text


def test_a_resumed_ray_run_is_the_uninterrupted_local_run(cluster: Cluster, tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["train", "--run-dir", str(local), "--iterations", "2", *TINY]) == 0
    ray_flags = [*TINY, "--set", "sampler.backend=ray", "--set", "sampler.num_workers=2"]
    assert main(["train", "--run-dir", str(remote), "--iterations", "1", *ray_flags]) == 0
    assert main(["train", "--resume", str(remote), "--iterations", "2", "--no-progress"]) == 0
    fields = [[deterministic_fields(r) for r in read_metrics(run)] for run in (local, remote)]
    assert fields[0] == fields[1] and len(fields[0]) == 2
    params = [load_checkpoint(run / "checkpoints" / "last.pt")["policy"] for run in (local, remote)]
    assert all(torch.equal(params[0][name], params[1][name]) for name in params[0])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("sampler.num_workers=5", "sampler.num_workers: 5 workers of 1 CPUs need 5 free CPUs"),
        ("sampler.cpus_per_worker=3", "sampler.cpus_per_worker: 3 CPUs per worker, but the"),
    ],
)
def test_workers_the_cluster_cannot_hold_are_one_line_before_any_work(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str
) -> None:
    run_dir = tmp_path / "run"
    argv = ["train", "--run-dir", str(run_dir), *TINY, "--set", "sampler.backend=ray"]
    assert main([*argv, "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("metarl train: error: ") and message in err
    assert not run_dir.exists()


def test_with_no_worker_to_be_had_training_stops_with_one_line_and_its_checkpoint(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    argv = [*TINY, "--set", "sampler.backend=ray", "--set", "sampler.num_workers=2"]
    assert main(["train", "--run-dir", str(run_dir), "--iterations", "1", *argv]) == 0
    last = run_dir / "checkpoints" / "last.pt"
    saved, metrics = last.read_bytes(), (run_dir / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    (node,) = [node for node in cluster.worker_nodes]
    cluster.remove_node(node)  # the workers' node is lost: no CPU left in the cluster
    try:
        status = main(["train", "--resume", str(run_dir), "--iterations", "3", "--no-progress"])
        err = capsys.readouterr().err
    finally:
        cluster.add_node(num_cpus=2)
    assert status == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("metarl train: error: ")]
    assert errors == [err.splitlines()[-1]] and errors[0].startswith(
        "metarl train: error: sampler:"
    )
    assert last.read_bytes() == saved and (run_dir / "metrics.jsonl").read_bytes() == metrics
