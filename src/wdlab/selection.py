"""Choosing weight decay on validation: the metric, the choice per (mode, lr), the verdict.

The rule (documented in the README, tested in ``tests/test_selection.py``):

* **Split.** The choice is made on the validation split only, never on test, and reported on
  test. Without a validation split nothing is chosen.
* **Metric** (``select=``, config ``train.select``): ``"auto"`` is the task's headline metric
  (accuracy, RMSE), ``"loss"`` the validation loss, or a metric key the runs recorded
  (``"acc"``, ``"rmse"``, ``"r2"``…). Each weight decay's score is its **mean over seeds**.
* **Epoch** (config ``train.early_stopping``): by default every run is scored at its last
  evaluation. With early stopping each run is scored at its own best validation evaluation
  (the earliest one on ties) and its test metric is read at that same epoch.
* **Candidates.** The weight decays swept for that (mode, lr), wd = 0 among them only when the
  grid lists it (the ``none`` reference is the yardstick, not a candidate). A weight decay
  competes only if every seed finished (status ``done``) with a finite score: a setting that
  diverged for one seed is not chosen on its lucky seeds.
* **Noise.** Seeds are paired: seed *s* has the same initial weights and data order at every
  weight decay. The noise of a comparison between weight decays *a* and *b* is the standard
  error of their seed-by-seed differences, ``SE = stdev(a_s − b_s) / √n`` (sample standard
  deviation, n − 1), over the seeds both have. With fewer than two common seeds the SE is
  undefined: ties are then exact ties only, and no gain counts as measurable.
* **Ties.** Two weight decays tie when their means differ by at most one SE. Among the weight
  decays that tie with the best mean, the **smallest** is chosen (wd = 0 included when the
  mode's grid has it): the burden of proof is on decay, so a larger weight decay is chosen only
  when the data tell it apart from a smaller one. When the best mean is measurably better than
  wd = 0, only weight decays that are themselves measurably better than wd = 0 may take its
  place, so a tie-break never turns a measured gain into "no gain".
* **Better than zero.** ``better_than_zero`` is true when the chosen weight decay's mean
  validation score beats wd = 0's (the ``none`` reference at that lr, or the mode's own wd = 0)
  by more than one SE of their seed-by-seed differences. Otherwise the row's verdict is "no
  measurable gain from weight decay here".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wdlab.records import RunResult
from wdlab.tasks import get_task

NO_GAIN = "no measurable gain from weight decay here"
GAIN = "better than wd = 0"
REFERENCE = "wd = 0 reference"
#: Whether higher is better, for the metric keys wdlab records.
HIGHER = {"acc": True, "r2": True, "loss": False, "rmse": False}
#: Display names of the metric keys.
NAMES = {"acc": "accuracy", "r2": "R²", "loss": "loss", "rmse": "RMSE"}

Scores = dict[int, tuple[float, float, int | None]]  # seed -> (val, test, epoch)


@dataclass(frozen=True)
class Criterion:
    """What the choice is made on: a metric key, its name, its direction, which epoch."""

    key: str
    name: str
    higher: bool
    early_stopping: bool = False


def metric_for(task: str) -> tuple[str, str, bool]:
    """(metric key, display name, higher is better) of the task's headline metric."""
    t = get_task(task)
    return t.metric, t.metric_name, t.higher


def eval_split(runs: Sequence[RunResult]) -> str:
    """The split curves are drawn against: ``val`` where the runs have one, else ``test``."""
    return "val" if any("val_loss" in r.curves for r in runs) else "test"


def criterion(
    task: str,
    metric: str | None = "auto",
    early_stopping: bool = False,
    higher: bool | None = None,
) -> Criterion:
    """The criterion for ``select=metric`` (``auto``, ``loss`` or a metric key) on ``task``.

    ``higher`` gives the direction of a metric wdlab does not know (a custom one).
    """
    key, name, task_higher = metric_for(task)
    if metric not in (None, "auto", key):
        key = str(metric)
        if higher is None:
            higher = HIGHER.get(key)
        if higher is None:
            raise ValueError(
                f"select={metric!r}: is higher better? wdlab knows {', '.join(HIGHER)}; "
                "give the direction for another metric"
            )
        name = NAMES.get(key, key)
    return Criterion(key, name, task_higher if higher is None else higher, bool(early_stopping))


def settings(config: Mapping[str, Any]) -> tuple[str, bool]:
    """(``train.select``, ``train.early_stopping``) of a config dict, defaults ("auto", False)."""
    train = config.get("train") or {}
    return train.get("select") or "auto", bool(train.get("early_stopping", False))


def describe(c: Criterion, seeds: int = 0) -> str:
    """The rule a selection followed, in one sentence (for the terminal and the report)."""
    epoch = "at its best validation epoch" if c.early_stopping else "at the final epoch"
    over = f"mean over {seeds} seeds" if seeds > 1 else "one seed: no noise estimate"
    return (
        f"chosen on validation {c.name} ({over}, each run {epoch}) among the weight decays "
        "swept for each mode; those within one standard error of the best mean tie, and the "
        "smallest of them is chosen; 'better than wd = 0' needs a gain larger than one "
        "standard error of the seed-by-seed differences"
    )


def selection_criterion(selection: Sequence[Mapping[str, Any]]) -> Criterion:
    """The criterion a stored selection (its rows, non-empty) was made on."""
    s = selection[0]
    return Criterion(s["metric"], s["metric_name"], s["higher"], s["early_stopping"])


def selection_rule(selection: Sequence[Mapping[str, Any]]) -> str:
    """:func:`describe` for a stored selection (its rows, non-empty)."""
    return describe(selection_criterion(selection), max(s["seeds"] for s in selection))


def has_timescale(selection: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any row's τ_epoch is defined (a table then shows the column)."""
    return any(math.isfinite(s.get("tau_epoch", math.nan)) for s in selection)


def run_scores(run: RunResult, c: Criterion) -> tuple[float, float, int | None]:
    """(validation, test, epoch) of one run under ``c``: at its last evaluation, or at its
    best validation evaluation (the earliest on ties) with early stopping. NaN for a run that
    did not finish."""
    val_key, test_key = f"val_{c.key}", f"test_{c.key}"
    if run.status != "done":
        return math.nan, math.nan, None
    epochs = list(run.curves.eval_epoch)
    if not c.early_stopping or val_key not in run.curves.series:
        return _num(run.final.get(val_key)), _num(run.final.get(test_key)), _last(epochs)
    vals = run.curves[val_key]
    finite = [i for i, v in enumerate(vals) if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, None
    pick = max if c.higher else min
    best = pick(vals[i] for i in finite)
    i = next(i for i in finite if vals[i] == best)
    tests = run.curves.series.get(test_key)
    test = _num(tests[i]) if tests is not None else math.nan
    return best, test, epochs[i] if i < len(epochs) else None


def _num(v: Any) -> float:
    """``v`` as a float if a finite number, else ``math.nan`` itself (so rows compare equal)."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


def _last(epochs: list[int]) -> int | None:
    return epochs[-1] if epochs else None


def _mean(scores: Scores, part: int = 0) -> float:
    vals = [s[part] for s in scores.values() if math.isfinite(s[part])]
    return statistics.fmean(vals) if vals else math.nan


def se_diff(a: Scores, b: Scores) -> float:
    """The standard error of the seed-by-seed differences of validation scores a − b
    (sample std over √n, over the seeds both have); NaN with fewer than two."""
    d = [a[s][0] - b[s][0] for s in sorted(set(a) & set(b))]
    d = [x for x in d if math.isfinite(x)]
    return statistics.stdev(d) / math.sqrt(len(d)) if len(d) >= 2 else math.nan


def _ties(a: Scores, b: Scores) -> bool:
    """Whether a's and b's mean validation scores differ by at most one SE (exactly equal,
    to float rounding, when the SE is undefined)."""
    ma, mb = _mean(a), _mean(b)
    se = se_diff(a, b)
    tol = se if math.isfinite(se) else 1e-12 * max(1.0, abs(ma), abs(mb))
    return abs(ma - mb) <= tol


def gain(a: Scores, ref: Scores, higher: bool) -> tuple[float, float, bool]:
    """(gain of a over ref in the better direction, its SE, whether it exceeds one SE)."""
    g = _mean(a) - _mean(ref)
    g = g if higher else -g
    se = se_diff(a, ref)
    return g, se, bool(math.isfinite(se) and math.isfinite(g) and g > se)


def choose(by_wd: Mapping[float, Scores], ref: Scores | None, higher: bool) -> tuple[float, float]:
    """(chosen weight decay, the weight decay with the best mean) among candidates whose every
    seed has a finite validation score, by the rule of this module."""
    cands = {w: s for w, s in by_wd.items() if s and all(math.isfinite(v[0]) for v in s.values())}
    if not cands:
        raise ValueError("no weight decay has a finite validation score for every seed")
    best = min(cands, key=lambda w: ((-1 if higher else 1) * _mean(cands[w]), w))
    tied = [w for w in cands if _ties(cands[w], cands[best])]
    if ref is not None and gain(cands[best], ref, higher)[2]:
        tied = [w for w in tied if gain(cands[w], ref, higher)[2]]
    return min(tied), best


def _groups(runs: Sequence[RunResult]) -> dict[tuple[str, float], dict[float, list[RunResult]]]:
    by: dict[tuple[str, float], dict[float, list[RunResult]]] = {}
    for r in runs:
        c = r.config
        by.setdefault((c.mode, c.lr), {}).setdefault(c.weight_decay, []).append(r)
    return by


def _reference(
    groups: Mapping[tuple[str, float], Mapping[float, list[RunResult]]], mode: str, lr: float
) -> list[RunResult] | None:
    """wd = 0's runs for (mode, lr): the mode's own, else the ``none`` reference, else any
    mode's wd = 0 at that lr."""
    order = [(mode, lr), ("none", lr), *[k for k in groups if k[1] == lr]]
    for k in order:
        if 0.0 in groups.get(k, {}):
            return groups[k][0.0]
    return None


def select(
    runs: Sequence[RunResult],
    task: str,
    metric: str | None = "auto",
    early_stopping: bool = False,
    higher: bool | None = None,
) -> list[dict[str, Any]]:
    """For each (mode, lr): the weight decay chosen on validation by this module's rule, its
    test metric (mean ± std over seeds), wd = 0's beside it, and whether it beat wd = 0.

    Without a validation split nothing is chosen (an empty list): never on test.
    """
    c = criterion(task, metric, early_stopping, higher)
    if not any(f"val_{c.key}" in r.final for r in runs):
        if metric not in (None, "auto") and any(
            k.startswith("val_") for r in runs for k in r.final
        ):
            have = sorted({k[4:] for r in runs for k in r.final if k.startswith("val_")})
            raise ValueError(f"select={metric!r}: no run recorded it; valid: {', '.join(have)}")
        return []
    groups = _groups(runs)
    rows = []
    for (mode, lr), wds in sorted(groups.items()):
        by_wd = {w: {r.config.seed: run_scores(r, c) for r in rs} for w, rs in wds.items()}
        zero = _reference(groups, mode, lr)
        ref = {r.config.seed: run_scores(r, c) for r in zero} if zero else None
        try:
            chosen, best = choose(by_wd, ref, c.higher)
        except ValueError:
            continue  # every weight decay diverged for some seed: nothing to choose
        rows.append(_row(mode, lr, chosen, best, by_wd[chosen], ref, wds[chosen], c))
    return rows


def _row(
    mode: str,
    lr: float,
    chosen: float,
    best: float,
    scores: Scores,
    ref: Scores | None,
    runs: Sequence[RunResult],
    c: Criterion,
) -> dict[str, Any]:
    """One selection row: the issue's names, the legacy ones, the verdict and its numbers."""
    tests = [s[1] for s in scores.values()]
    test_std = statistics.stdev(tests) if len(tests) > 1 else 0.0
    g, se, measured = gain(scores, ref, c.higher) if ref is not None else (math.nan,) * 2 + (False,)
    if mode == "none":
        verdict, measured = REFERENCE, False
    elif ref is None:
        verdict = "no wd = 0 run to compare with"
    elif measured:
        verdict = GAIN
    else:
        verdict = NO_GAIN if math.isfinite(se) else f"{NO_GAIN} (one seed: no noise estimate)"
    val, test_mean = _mean(scores), statistics.fmean(tests)
    test_zero = _mean(ref, 1) if ref is not None else math.nan
    tau = {k: _num(runs[0].final.get(k)) for k in ("tau_iter", "tau_epoch")}
    return {
        "mode": mode,
        "lr": lr,
        "weight_decay": chosen,
        "val": val,
        "test_mean": test_mean,
        "test_std": test_std,
        "test_at_zero": test_zero,
        "better_than_zero": measured,
        "verdict": verdict,
        "val_at_zero": _mean(ref) if ref is not None else math.nan,
        "gain": _num(g),  # NaN itself when not finite
        "gain_se": _num(se),
        "best_mean_wd": best,
        "metric": c.key,
        "metric_name": c.name,
        "higher": c.higher,
        "early_stopping": c.early_stopping,
        "epochs": [s[2] for _, s in sorted(scores.items())],
        **tau,
        # the names wdlab 0.2 wrote, kept for readers of older results
        "best_wd": chosen,
        "chosen_on": "val",
        f"val_{c.key}": val,
        f"test_{c.key}_mean": test_mean,
        f"test_{c.key}_std": test_std,
        f"test_{c.key}_at_wd0": test_zero,
        "seeds": len(tests),
    }


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


def zero_runs(runs: Sequence[RunResult], mode: str, lr: float) -> list[RunResult]:
    """The wd = 0 runs (every seed) that (mode, lr) is compared with: the mode's own, else the
    ``none`` reference, else any mode's wd = 0 at that lr; empty if there is none."""
    return _reference(_groups(runs), mode, lr) or []
