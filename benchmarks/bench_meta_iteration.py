"""Time split of MAML-TRPO meta-iterations for a config, for several meta-gradient variants.

Runs the variants interleaved (round-robin) on the same tasks and prints, per variant, the median
time of each phase (sampling, inner adaptation, meta-gradient, conjugate gradient, line search),
the whole iteration, env steps/s, and ratios between variants, all measured in this one run.

    python benchmarks/bench_meta_iteration.py --config navigation --iterations 5 \
        --set policy.hidden_sizes=[64,64] --set policy.nonlinearity=tanh
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

import torch

import envs
from agents.maml_trpo import MAMLTRPO
from metarl.cli import resolve_config_path
from metarl.config import Config, load_config
from metarl.sampling import BatchSampler
from metarl.training import build_policy, derived_seeds

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
    for round_index in range(args.warmup + args.iterations):
        for name, (agent, sampler) in runners.items():
            metrics, _ = agent.train_iteration(tasks, sampler)
            if round_index < args.warmup:
                continue
            for phase in PHASES:
                times[name][phase].append(metrics[f"time_{phase}"])
            total = sum(metrics[f"time_{phase}"] for phase in PHASES)
            times[name]["iteration"].append(total)
            times[name]["env_steps_per_s"].append(metrics["env_steps"] / total)
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
    for other in names[1:]:
        ratio = medians[names[0]]["iteration"] / medians[other]["iteration"]
        print(f"iteration time ratio  {names[0]} / {other}: {ratio:.2f}")


if __name__ == "__main__":
    main()
