"""Metrics of a run: ``metrics.jsonl`` (one JSON object per meta-iteration) and the console."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

METRICS_FILE = "metrics.jsonl"
TIMING_PREFIX = "time_"  # wall-clock fields: the only ones that differ between identical runs

# Grouped names for dashboards (W&B); metrics.jsonl keeps the flat names.
METRIC_GROUPS = {
    "return_pre": "adapt/return_pre",
    "return_post": "adapt/return_post",
    "success_pre": "adapt/success_pre",
    "success_post": "adapt/success_post",
    "kl": "trpo/kl",
    "surrogate_before": "trpo/surrogate_before",
    "surrogate_after": "trpo/surrogate_after",
    "line_search_steps": "trpo/line_search_steps",
    "step_accepted": "trpo/step_accepted",
    "rejected_steps": "trpo/rejected_steps",
    "step_rejected_reason": "trpo/step_rejected_reason",
}


def grouped_name(key: str) -> str:
    """Dashboard name of a flat metric (``time_sampling`` -> ``time/sampling``)."""
    if key in METRIC_GROUPS:
        return METRIC_GROUPS[key]
    if key.startswith("time_"):
        return "time/" + key.removeprefix("time_")
    if key.startswith("return_step"):
        return "adapt/" + key
    return "progress/" + key


class MetricsLog:
    """Appends one line per iteration to ``metrics.jsonl``, flushed and fsynced."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE

    def truncate(self, num_lines: int) -> None:
        """Keep the first ``num_lines`` lines (drop iterations logged after a checkpoint) by one
        in-place truncation, so a crash meanwhile loses nothing.  Raises :class:`ValueError` if
        the file holds fewer complete lines."""
        if num_lines == 0 and not self.path.exists():
            return
        offset = 0
        with self.path.open("rb") as handle:
            for _ in range(num_lines):
                line = handle.readline()
                if not line.endswith(b"\n"):
                    raise ValueError(f"{self.path} holds fewer than {num_lines} complete lines")
                offset += len(line)
        os.truncate(self.path, offset)

    def append(self, metrics: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({k: _finite_or_none(v) for k, v in metrics.items()}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _finite_or_none(value: Any) -> Any:
    """NaN and ±Inf are written as ``null`` (JSON has no such numbers)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def deterministic_fields(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its wall-clock ``time_*`` fields: what a fixed seed reproduces exactly."""
    return {k: v for k, v in record.items() if not k.startswith(TIMING_PREFIX)}


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl``."""
    with (run_dir / METRICS_FILE).open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def summary_line(metrics: dict[str, Any]) -> str:
    """One console line per iteration."""
    status = "" if metrics.get("step_accepted", 1.0) else "  [step rejected]"
    if metrics.get("step_rejected_reason"):
        status = f"  [step rejected: non-finite {metrics['step_rejected_reason']}]"
    success = ""
    if "success_post" in metrics:
        success = f" | success pre {metrics['success_pre']:.2f} post {metrics['success_post']:.2f}"
    return (
        f"iter {metrics['iteration']:4d} | return pre {metrics['return_pre']:9.2f} "
        f"post {metrics['return_post']:9.2f}{success} | kl {metrics['kl']:.4f} "
        f"ls {metrics['line_search_steps']:2d} | "
        f"sample {metrics['time_sampling']:5.2f}s learn {metrics['time_learning']:5.2f}s{status}"
    )


class Progress:
    """A run's console: a progress bar (``bar``, on stderr) and one line per iteration (``lines``,
    on stdout, flushed: a batch job's log keeps them without the bar's carriage returns); a
    warning line is printed on stderr when the lines are off."""

    def __init__(self, total: int, initial: int, desc: str, bar: bool, lines: bool) -> None:
        self.bar = tqdm(
            total=total, initial=initial, disable=not bar, desc=desc, unit="it", dynamic_ncols=True
        )
        self.lines = lines

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()

    def advance(self, line: str, warning: bool = False) -> None:
        """One iteration done: the bar moves on and ``line`` is printed above it."""
        self.bar.update(1)
        if self.lines:
            self.bar.write(line, file=sys.stdout)
            sys.stdout.flush()
        elif warning:
            print(line, file=sys.stderr)
