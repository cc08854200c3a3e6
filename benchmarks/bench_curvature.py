"""Cost of the exact meta-KL Hessian-vector product against the matmuls it cannot avoid.

On a config's real meta-batch, times in interleaved rounds (medians reported):

* product: one conjugate-gradient product ``(mean_k J_kᵀ F_k J_k + damping·I) v``
  (``MAMLTRPO.meta_gradient``), and its parts, run per task as the product runs them: one
  inner-loss Hessian product ``H u`` (twice per product with one inner step) and one Fisher
  product ``F u``;
* first-order product: the same with ``J = I`` (first-order MAML: one Fisher product);
* GEMM: one matmul of the widest hidden layer over the post-update batch, ``[K, N, h] x
  [K, h, h]``: the unit of work, timed two ways: ``torch.bmm`` of all tasks at once, and one
  task at a time through the products' own ``gemm.matmul``, shared among the threads as the
  products share their tasks.  An exact product needs at least 12 of them (a Hessian product
  at least 4 with the first-layer moments, a Fisher product 4: forward tangents and reverse pass
  through the hidden-to-hidden layer), so ``product / GEMM`` against the faster of the two shows
  how close to that floor it runs.

    python benchmarks/bench_curvature.py --config navigation --rounds 5
    python benchmarks/bench_curvature.py --config halfcheetah_vel --set env.kwargs.physics=gymnasium
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from helpers import bench_config, make_variant, timed

from metarl.agents.common.curvature import GaussianFisher, num_threads, split_parameters
from metarl.agents.common.episodes import live_samples
from metarl.agents.common.gemm import matmul
from metarl.agents.common.runtime import run_shared
from metarl.components import make_family


def per_task(function: Callable[[int], object], num_tasks: int) -> Callable[[], object]:
    """``function`` of every task, the tasks shared among torch's threads as in a product."""
    threads = torch.get_num_threads()
    return lambda: run_shared(lambda tasks: [function(k) for k in tasks], range(num_tasks), threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", default="navigation")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--repeats", type=int, default=3, help="calls per workload per round")
    args = parser.parse_args()
    config = bench_config(args.config, args.overrides)
    family = make_family(config, seed=0)
    tasks = family.sample_tasks(config.algorithm.num_tasks)
    agent, sampler = make_variant(config, {"first_order": False})
    first_order, _ = make_variant(config, {"first_order": True})
    batch = agent.collect(tasks, sampler)

    with torch.no_grad():
        meta = agent.meta_gradient(batch)
        meta_first_order = first_order.meta_gradient(batch)
        vector = torch.randn_like(meta.gradient)
        num_tasks = batch.valid.num_tasks
        params = [p.detach().expand(num_tasks, *p.shape) for p in agent.policy.parameters()]
        loss = agent.log_likelihood(params, live_samples(batch.train[0]), -1.0, True)
        post = agent.log_likelihood(params, live_samples(batch.valid), -1.0, False)
        tangents = [torch.randn_like(g[:1]) for g in loss.gradient]
        fisher_weights = torch.ones(post.rho.shape[:2])
        fisher = GaussianFisher(post.network, split_parameters(params)[2], fisher_weights)
        hidden = post.network.output
        width = max(w.shape[1] for w in post.network.weights[:-1])
        inputs = torch.randn(*hidden.shape[:2], width)
        weight = torch.randn(hidden.shape[0], width, width)
        losses = [loss.part(slice(k, k + 1)) for k in range(num_tasks)]
        fishers = [fisher.part(slice(k, k + 1)) for k in range(num_tasks)]
        workloads: dict[str, Callable[[], object]] = {
            "product": lambda: meta.kl_hessian_vector_product(vector),
            "first-order product": lambda: meta_first_order.kl_hessian_vector_product(vector),
            "Hessian product H u": per_task(
                lambda k: losses[k].hessian_product(tangents), num_tasks
            ),
            "Fisher product F u": per_task(lambda k: fishers[k].product(tangents), num_tasks),
            "GEMM, torch.bmm": lambda: torch.bmm(inputs, weight),
            "GEMM, gemm.matmul": per_task(
                lambda k: matmul(inputs[k : k + 1], weight[k : k + 1]), num_tasks
            ),
        }
        for work in workloads.values():
            work()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in workloads}
        for _ in range(args.rounds):
            for name, work in workloads.items():
                times[name].append(timed(work, args.repeats))

    medians = {name: statistics.median(values) for name, values in times.items()}
    bmm, per_task_gemm = medians["GEMM, torch.bmm"], medians["GEMM, gemm.matmul"]
    gemm = min(bmm, per_task_gemm)
    num_tasks, num_samples = inputs.shape[:2]
    print(
        f"config {args.config} {' '.join(args.overrides)}: {config.env.family}, "
        f"K={num_tasks} tasks x N={num_samples} post-update samples, policy "
        f"{list(config.policy.hidden_sizes)} {config.policy.nonlinearity}, "
        f"torch threads {torch.get_num_threads()} (products on {num_threads(vector)}), "
        f"medians of {args.rounds} rounds"
    )
    print(f"{'workload':24s} {'ms':>9s} {'/ GEMM':>8s} {'/ bmm':>8s}")
    for name, value in medians.items():
        print(f"{name:24s} {value * 1e3:9.1f} {value / gemm:8.2f} {value / bmm:8.2f}")
    flops = 2 * num_tasks * num_samples * width * width
    print(
        f"GEMM = [K, N, {width}] x [K, {width}, {width}], the faster of: torch.bmm "
        f"{flops / bmm / 1e9:.0f} GFLOP/s, gemm.matmul per task {flops / per_task_gemm / 1e9:.0f} "
        f"GFLOP/s; floor of an exact product: 12 GEMMs = {12 * gemm * 1e3:.1f} ms; "
        f"product / floor {medians['product'] / (12 * gemm):.2f}"
    )


if __name__ == "__main__":
    main()
