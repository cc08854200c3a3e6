"""The end of ``metarl train`` and ``metarl baseline``: the best return, where the files are and
what to run next, in a few lines."""

from __future__ import annotations

import math
import shlex

from metarl.outputs import RunOutputs, is_oracle
from metarl.rundir import WANDB_DIR
from metarl.tracking import WandbTracker


def run_summary(outputs: RunOutputs, tracker: WandbTracker | None) -> str:
    """The summary of the run behind ``outputs``, tracked by ``tracker`` if not None."""
    trainer = outputs.trainer
    done = f"done: iteration {trainer.iteration}, {trainer.env_steps} env steps"
    if trainer.best is not None and math.isfinite(trainer.best_return):
        done += (
            f"; best {trainer.best_metric} {trainer.best_return:.2f} at iteration "
            f"{trainer.best['iteration']} (checkpoints/best.pt)"
        )
    lines = [done]
    if outputs.evaluation is not None:
        result = outputs.evaluation.result
        returns = " / ".join(f"{mean:.2f}" for mean in result.mean)
        steps = " / ".join(map(str, result.steps))
        success = result.success_curve()
        rates = (
            "" if success is None else ", success " + " / ".join(f"{m:.2f}" for m in success.mean)
        )
        lines.append(
            f"held-out evaluation ({len(result.tasks)} tasks): return {returns}{rates} after "
            f"{steps} steps (evaluation/)"
        )
    names = sorted(p.name + "/" if p.is_dir() else p.name for p in trainer.run_dir.iterdir())
    lines.append(f"files in {trainer.run_dir}: {', '.join(names)}")
    if tracker is not None and tracker.url is not None:
        lines.append(f"W&B run: {tracker.url}")
    commands = next_commands(outputs, tracker)
    width = max(len(command) for command, _ in commands)
    lines += ["next:", *(f"  {command:{width}}  # {why}" for command, why in commands)]
    return "\n".join(lines)


def next_commands(outputs: RunOutputs, tracker: WandbTracker | None) -> list[tuple[str, str]]:
    """Commands worth running next, each with what it does."""
    config = outputs.trainer.config
    run = shlex.quote(str(outputs.trainer.run_dir))
    steps = " --steps 0" if is_oracle(config) else ""
    commands = [
        (f"metarl evaluate {run}{steps}", "the paper's protocol: 40 held-out tasks"),
        (f"metarl video {run}{steps}", "rollouts before and after adaptation"),
    ]
    if config.baseline is None:
        commands.append((f"metarl train --resume {run} --iterations N", "train on to N iterations"))
    elif config.baseline.method != "random":
        method = config.baseline.method
        resume = f"metarl baseline {method} --resume {run} --steps N"
        commands.append((resume, "train on to N environment steps"))
    if tracker is not None and tracker.options.mode == "offline":
        sync = f"wandb sync {run}/{WANDB_DIR}/offline-run-*"
        commands.append((sync, "upload the offline W&B run (resumed parts as one run)"))
    return commands
