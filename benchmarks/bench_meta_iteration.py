"""Time split of MAML-TRPO meta-iterations for a config, for several meta-gradient variants.

Runs the variants interleaved (round-robin) on the same tasks and prints, per variant, the median
time of each phase (sampling, inner adaptation, meta-gradient, conjugate gradient, line search),
the whole iteration, env steps/s, and ratios between variants, all measured in this one run.
For MuJoCo families it also times raw physics (``mujoco.rollout`` of the bare model, no policy,
see ``bench_sampler.py``) in the same rounds and prints each variant's iteration time divided by
the raw physics time of as many control steps under random controls, and divided by the time the
bare model takes to replay the iteration's own batches (same initial states, same controls: the
same physics work; a warning is printed if the replay does not reproduce them).

    python benchmarks/bench_meta_iteration.py --config navigation --iterations 5 \
        --set policy.hidden_sizes=[64,64] --set policy.nonlinearity=tanh
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from collections import defaultdict
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import envs  # noqa: E402
from agents.maml_trpo import MAMLTRPO  # noqa: E402
from metarl.cli import resolve_config_path  # noqa: E402
from metarl.config import Config, load_config  # noqa: E402
from metarl.sampling import BatchSampler  # noqa: E402
from metarl.training import build_policy, derived_seeds  # noqa: E402

VARIANTS = {
    "second-order (jacobian)": {"hessian_method": "jacobian", "first_order": False},
    "second-order (double-backprop)": {"hessian_method": "double_backprop", "first_order": False},
    "first-order": {"hessian_method": "jacobian", "first_order": True},
}
PHASES = ["sampling", "adaptation", "meta_gradient", "conjugate_gradient", "line_search"]


def make_variant(config: Config, overrides: dict[str, object]) -> tuple[MAMLTRPO, BatchSampler]:
    seeds = derived_seeds(config.train.seed)
    family = envs.make_family(config.env.family, seed=seeds["tasks"], **config.env.kwargs)
    torch.manual_seed(seeds["policy_init"])
    policy = build_policy(config, family).to(config.train.device)
    agent = MAMLTRPO(policy, config.algorithm.model_copy(update=overrides))
    return agent, BatchSampler(family, config.algorithm.num_trajectories, seeds["sampler"])


def raw_physics(config: Config, family: envs.TaskFamily) -> Any:
    """The raw-physics timer of ``bench_sampler.py`` for a MuJoCo family, else None."""
    from envs.mujoco_core import LocomotionFamily

    if not isinstance(family, LocomotionFamily):
        return None
    from bench_sampler import Case

    horizon = family.make_batched_env(1).horizon
    sizes = argparse.Namespace(
        tasks=config.algorithm.num_tasks,
        trajectories=config.algorithm.num_trajectories,
        steps=horizon,
    )
    return Case(config.env.family, family.preset, sizes)


def record_batches(sampler: BatchSampler, batches: list[Any]) -> None:
    """Make ``sampler`` keep what replaying each batch it samples needs (``Case.replay``): its
    reset stream as it was, the episodes and the final joint positions."""
    from bench_sampler import final_qpos

    sample = sampler.sample

    def recording(tasks: Any, policy: Any, params: Any) -> Any:
        stream = copy.deepcopy(sampler.env_rng)
        episodes = sample(tasks, policy, params)
        batches.append((stream, episodes, final_qpos(sampler)))
        return episodes

    sampler.sample = recording  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="navigation")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    config = load_config(resolve_config_path(args.config), args.overrides)
    family = envs.make_family(config.env.family, seed=0, **config.env.kwargs)
    tasks = family.sample_tasks(config.algorithm.num_tasks)
    runners = {name: make_variant(config, VARIANTS[name]) for name in args.variants}
    times: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in runners}
    raw = raw_physics(config, family)
    raw_rates: list[float] = []
    batches: dict[str, list[Any]] = {name: [] for name in runners}
    if raw is not None:
        for name, (_, sampler) in runners.items():
            record_batches(sampler, batches[name])
    for round_index in range(args.warmup + args.iterations):
        if raw is not None and round_index >= args.warmup:
            raw_rates.append(raw.time_raw())
        for name, (agent, sampler) in runners.items():
            batches[name].clear()
            metrics, _ = agent.train_iteration(tasks, sampler)
            if round_index < args.warmup:
                continue
            total = sum(metrics[f"time_{phase}"] for phase in PHASES)
            if raw is not None:
                replay = sum(raw.replay(*batch) for batch in batches[name])
                times[name]["replay_ratio"].append(total / replay)
            for phase in PHASES:
                times[name][phase].append(metrics[f"time_{phase}"])
            times[name]["iteration"].append(total)
            times[name]["env_steps_per_s"].append(metrics["env_steps"] / total)
            times[name]["env_steps"].append(metrics["env_steps"])
    print(
        f"config {args.config} {' '.join(args.overrides)}: {config.env.family}, "
        f"{config.algorithm.num_tasks} tasks x {config.algorithm.num_trajectories} trajectories, "
        f"policy {config.policy.hidden_sizes} {config.policy.nonlinearity}, "
        f"torch threads {torch.get_num_threads()}, medians of {args.iterations} iterations"
    )
    header = f"{'variant':32s}" + "".join(f"{p:>20s}" for p in [*PHASES, "iteration"])
    print(header + f"{'env steps/s':>14s}")
    medians = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    for name, median in medians.items():
        row = "".join(f"{median[p]:19.3f}s" for p in [*PHASES, "iteration"])
        print(f"{name:32s}{row}{median['env_steps_per_s']:14.0f}")
    names = list(medians)
    if raw_rates:
        rate = statistics.median(raw_rates)
        print(f"raw physics: {rate:,.0f} control steps/s (bare model, mujoco.rollout, no policy)")
        for name, median in medians.items():
            raw_time = median["env_steps"] / rate
            print(
                f"{name:32s} iteration / raw physics time of its {median['env_steps']:,.0f} "
                f"control steps ({raw_time:.2f}s): {median['iteration'] / raw_time:.2f}; "
                f"/ its own batches replayed: {median['replay_ratio']:.2f}"
            )
    for other in names[1:]:
        ratio = medians[names[0]]["iteration"] / medians[other]["iteration"]
        print(f"iteration time ratio  {names[0]} / {other}: {ratio:.2f}")


if __name__ == "__main__":
    main()
