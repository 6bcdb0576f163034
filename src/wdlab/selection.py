"""Choosing weight decay on validation: the metric, the choice per (mode, lr), what to plot.

The choice is made on the validation split only (never on test) and reported on test. The
metric is the task's headline metric (accuracy, RMSE; :mod:`wdlab.tasks`), at the final
evaluation, averaged over seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from wdlab.records import RunResult
from wdlab.tasks import get_task


def metric_for(task: str) -> tuple[str, str, bool]:
    """(metric key, display name, higher is better) used to choose on validation."""
    t = get_task(task)
    return t.metric, t.metric_name, t.higher


def eval_split(runs: Sequence[RunResult]) -> str:
    """The split curves are drawn against: ``val`` where the runs have one, else ``test``."""
    return "val" if any("val_loss" in r.curves for r in runs) else "test"


def select(runs: Sequence[RunResult], task: str) -> list[dict[str, Any]]:
    """For each (mode, lr): the weight decay with the best mean validation metric over seeds
    (final epoch), its test metric mean ± std, and the test metric at wd = 0.

    Without a validation split nothing is chosen (an empty list): never on test.
    """
    key, _, higher = metric_for(task)
    split = "val"
    if not any(f"val_{key}" in r.final for r in runs):
        return []
    by: dict[tuple, dict[float, list[RunResult]]] = {}
    for r in runs:
        c = r.config
        by.setdefault((c.mode, c.lr), {}).setdefault(c.weight_decay, []).append(r)
    zero = {lr: wds[0.0] for (_mode, lr), wds in by.items() if 0.0 in wds}
    rows = []
    for (mode, lr), wds in sorted(by.items()):
        scored = []
        for wd, rs in wds.items():
            vals = _finite(r.final.get(f"{split}_{key}", math.nan) for r in rs)
            if vals:
                scored.append((statistics.fmean(vals), wd))
        if not scored:
            continue
        best_val, best_wd = (max if higher else min)(scored)
        tests = [r.final.get(f"test_{key}", math.nan) for r in wds[best_wd]]
        base = [r.final.get(f"test_{key}", math.nan) for r in zero.get(lr, [])]
        rows.append(
            {
                "mode": mode,
                "lr": lr,
                "best_wd": best_wd,
                "chosen_on": split,
                f"{split}_{key}": best_val,
                f"test_{key}_mean": statistics.fmean(tests),
                f"test_{key}_std": statistics.pstdev(tests) if len(tests) > 1 else 0.0,
                f"test_{key}_at_wd0": statistics.fmean(base) if base else math.nan,
                "seeds": len(tests),
            }
        )
    return rows


def _finite(values: Any) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def representative(runs: Sequence[RunResult]) -> list[RunResult]:
    """At most 8 runs to plot: for seed 0, the smallest and largest wd of each mode."""
    if len(runs) <= 8:
        return list(runs)
    picked: list[RunResult] = []
    for mode in dict.fromkeys(r.config.mode for r in runs):
        rs = sorted(
            (r for r in runs if r.config.mode == mode and r.config.seed == runs[0].config.seed),
            key=lambda r: r.config.weight_decay,
        )
        picked += [rs[0], rs[-1]] if len(rs) > 1 else rs
    return picked[:8]
