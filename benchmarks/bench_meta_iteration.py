"""Time split of meta-iterations for a config, for several meta-gradient variants and Reptile.

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
import statistics
from collections import defaultdict

import torch
from helpers import RawPhysics, Recorded, bench_config, make_variant, record_batches

from metarl.components import make_family
from metarl.envs.mujoco_core import LocomotionFamily
from metarl.training import TIMED_PHASES, meta_iteration

VARIANTS = {
    "second-order (jacobian)": {"hessian_method": "jacobian", "first_order": False},
    "second-order (double-backprop)": {"hessian_method": "double_backprop", "first_order": False},
    "first-order": {"hessian_method": "jacobian", "first_order": True},
    "cg-subsample-0.2": {"hessian_method": "jacobian", "first_order": False, "cg_subsample": 0.2},
    "first-order-cg-subsample-0.2": {"first_order": True, "cg_subsample": 0.2},
    "anil": {"hessian_method": "jacobian", "first_order": False, "inner_parameters": "head"},
    "negative-lr": {"hessian_method": "jacobian", "first_order": False, "inner_lr": -0.1},
    "no-inner-step": {"hessian_method": "jacobian", "first_order": False, "num_inner_steps": 0},
    "reptile": {"name": "reptile"},  # the config's inner steps, no meta-gradient or TRPO step
}
PHASES = list(TIMED_PHASES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="navigation")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    config = bench_config(args.config, args.overrides)
    family = make_family(config, seed=0)
    tasks = family.sample_tasks(config.algorithm.num_tasks)
    runners = {name: make_variant(config, VARIANTS[name]) for name in args.variants}
    times: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in runners}
    raw = None
    if isinstance(family, LocomotionFamily):
        num_envs = config.algorithm.num_tasks * config.algorithm.num_trajectories
        raw = RawPhysics(family, num_envs)
    raw_rates: list[float] = []
    batches: dict[str, list[Recorded]] = {name: [] for name in runners}
    if raw is not None:
        for name, (_, sampler) in runners.items():
            record_batches(sampler, batches[name])
    for round_index in range(args.warmup + args.iterations):
        if raw is not None and round_index >= args.warmup:
            raw_rates.append(raw.random_rate(family.horizon))  # type: ignore[attr-defined]
        for name, (agent, sampler) in runners.items():
            batches[name].clear()
            metrics, _ = meta_iteration(agent, tasks, sampler)
            if round_index < args.warmup:
                continue
            total = sum(metrics[f"time_{phase}"] for phase in PHASES)
            if raw is not None:
                replay = sum(raw.replay(batch) for batch in batches[name])
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
