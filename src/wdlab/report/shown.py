"""Which runs a report's curve figures draw: the answer's runs, or a spread of every run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wdlab.records import Result, RunResult, is_reference, use_wd
from wdlab.selection import zero_runs

MAX_SHOWN = 18  # runs drawn in the curve figures (one colour each, none grey: palette.py)


def shown(result: Result) -> list[RunResult]:
    """The runs the curve figures draw: :func:`answer_runs` (the first :data:`MAX_SHOWN`,
    :func:`left_out` says how many more), or, where nothing was chosen, every run (a spread of
    them where there are more)."""
    if result.selection:
        return answer_runs(result.runs, result.selection)[:MAX_SHOWN]
    return result.runs if len(result.runs) <= MAX_SHOWN else representative(result.runs)


def left_out(result: Result) -> int:
    """How many of the answer's runs the curve figures leave out (beyond :data:`MAX_SHOWN`)."""
    if not result.selection:
        return 0
    return max(0, len(answer_runs(result.runs, result.selection)) - MAX_SHOWN)


def answer_runs(runs: Sequence[RunResult], rows: Sequence[Mapping[str, Any]]) -> list[RunResult]:
    """For the first seed: wd = 0 once per lr, then each (mode, lr)'s run at the weight decay
    to use (:func:`~wdlab.records.use_wd`); where that is wd = 0, the run at the nearest swept
    weight decay that trained to its end instead (not one pruned at a rung: its last value is
    an early epoch's), so the curves still compare decay with none."""
    if not runs:
        return []
    seed = min(r.config.seed for r in runs)
    first = [r for r in runs if r.config.seed == seed]
    picked: list[RunResult] = []
    for lr in dict.fromkeys(row["lr"] for row in rows):
        picked += zero_runs(first, None, lr)
    for row in rows:
        if is_reference(row):
            continue
        own = [r for r in first if (r.config.mode, r.config.lr) == (row["mode"], row["lr"])]
        swept = [w for r in own if (w := r.config.weight_decay) > 0 and r.status != "pruned"]
        wd = use_wd(row) or min(swept, default=None)
        picked += [
            r for r in own if r.config.weight_decay == wd and all(r is not p for p in picked)
        ]
    return picked


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
