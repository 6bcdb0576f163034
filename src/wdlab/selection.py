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
  competes only if every seed finished (status ``done``) with a finite score (not on the lucky
  seeds of a setting that diverged for one).
* **Noise.** Seeds are paired: seed *s* has the same initial weights and data order at every
  weight decay. Weight decay *a* is compared with *b* by a **one-sided paired t-test** on their
  seed-by-seed differences (over the seeds both have): ``t = mean(d) / (stdev(d) / √n)`` with
  n − 1 degrees of freedom (:mod:`wdlab.stats`, no scipy). Differences with no spread beyond
  float32 rounding: the same lead on every seed takes the exact sign-flip test, p = 1/2^n; no
  lead is a tie (p = 1). Two seeds with the same weights are refused at the start.
* **Ties.** A weight decay ties with the best mean unless the best beats it in that test at
  level :data:`ALPHA` (with one seed: unless the means differ at all). Among the weight decays
  that tie with the best mean, the **smallest** is chosen (wd = 0 included when the mode's grid
  has it): the burden of proof is on decay. When the best mean is better than wd = 0 (below),
  only weight decays themselves better than wd = 0 may take its place, so a tie-break never
  turns a measured gain into "no gain".
* **Pruned runs** (successive halving) do not compete; they count in m below.
* **Better than zero.** ``better_than_zero`` is true when the chosen weight decay beats wd = 0
  (the ``none`` reference at that lr, or the mode's own wd = 0) in that test at level
  :data:`ALPHA` / m, m the number of weight decays > 0 competing for that (mode, lr)
  (Bonferroni). So whatever weight decay the choice picks, the chance that a (mode, lr) row
  says "better than wd = 0" for a weight decay that is not better is at most 5% (given
  roughly normal seed-by-seed differences, the t-test's assumption). With fewer than
  :data:`MIN_SEEDS` seeds the verdict is "too few seeds to tell" and names how many are needed;
  otherwise a gain the test does not support is "no measurable gain from weight decay here".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from wdlab.decay.modes import get_mode
from wdlab.records import ALL_PRUNED, NO_REFERENCE, NONE_SWEPT, NOT_YET, TOO_FEW, RunResult, use_wd
from wdlab.stats import Paired, paired
from wdlab.tasks import get_task

NO_GAIN = "no measurable gain from weight decay here"
GAIN = "better than wd = 0"
REFERENCE = "wd = 0 reference"
#: The error rate of "better than wd = 0" per (mode, lr) row, and the level of the tie test.
ALPHA = 0.05
#: Seeds a verdict needs: with two, the t-test has one degree of freedom and no way to see
#: whether the differences are anywhere near normal; below it the verdict is "too few seeds".
MIN_SEEDS = 3
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


def study_metric(
    config: Mapping[str, Any], data: Mapping[str, Any]
) -> tuple[str, bool, bool | None]:
    """(metric, early stopping, direction) a study chooses on (:func:`select`'s arguments):
    its config's ``train.select`` and ``early_stopping``, a user's own metric's from the data."""
    metric, early = settings(config)
    custom = data.get("metric") or {}  # a user's own metric: its key and direction
    if custom and metric == "auto":
        metric = custom["key"]
    higher = custom.get("higher") if metric == custom.get("key") else None
    return metric, early, higher


def describe(c: Criterion, seeds: int = 0, pruned: int = 0) -> str:
    """The rule a selection followed, in one sentence (for the terminal and the report);
    ``pruned``: mode × lr × weight-decay cells stopped at a rung by successive halving."""
    epoch = "at its best validation epoch" if c.early_stopping else "at the final epoch"
    over = f"mean over {seeds} seeds" if seeds > 1 else "one seed: no noise estimate"
    among = "among the weight decays swept for each mode" + bool(pruned) * (
        f" whose runs finished (successive halving stopped {pruned} mode × lr × weight-decay "
        f"cell{'s' if pruned != 1 else ''} at a rung; they count in the test's number of "
        "weight decays swept)"
    )
    return (
        f"chosen on validation {c.name} ({over}, each run {epoch}) {among}: the smallest one "
        f"that the best mean does not beat in a one-sided paired t-test over seeds ({ALPHA:.0%}); "
        f"'better than wd = 0' needs at least {MIN_SEEDS} seeds and that test at {ALPHA:.0%} / "
        "(the number of weight decays swept), "
        f"so at most a {ALPHA:.0%} chance per (mode, lr) of claiming a gain that is not there"
    )


def selection_criterion(selection: Sequence[Mapping[str, Any]]) -> Criterion:
    """The criterion a stored selection (its rows, non-empty) was made on."""
    s = selection[0]
    return Criterion(s["metric"], s["metric_name"], s["higher"], s["early_stopping"])


def selection_rule(
    selection: Sequence[Mapping[str, Any]], others: Sequence[Mapping[str, Any]] = ()
) -> str:
    """:func:`describe` for a stored selection (rows, non-empty) and its :func:`unanswered`."""
    pruned = sum(s.get("pruned", 0) for s in [*selection, *others])
    return describe(selection_criterion(selection), max(s["seeds"] for s in selection), pruned)


def use_tau(row: Mapping[str, Any]) -> float:
    """τ_epoch of the weight decay a row recommends (:func:`~wdlab.records.use_wd`): its
    chosen one's where that beat wd = 0; NaN where it recommends wd = 0 (no decay, no
    timescale), whatever the chosen one's. (The row's ``tau_epoch`` is the chosen one's.)"""
    return _finite_or_nan(row.get("tau_epoch")) if use_wd(row) != 0 else math.nan


def has_timescale(selection: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any row's :func:`use_tau` is defined (a table then shows the column)."""
    return any(math.isfinite(use_tau(s)) for s in selection)


def run_scores(run: RunResult, c: Criterion) -> tuple[float, float, int | None]:
    """(validation, test, epoch) of one run under ``c``: at its last evaluation, or at its
    best validation evaluation (the earliest on ties) with early stopping. NaN for a run that
    did not finish."""
    val_key, test_key = f"val_{c.key}", f"test_{c.key}"
    if run.status != "done":
        return math.nan, math.nan, None
    epochs = list(run.curves.eval_epoch)
    if not c.early_stopping or val_key not in run.curves.series:
        return (
            _finite_or_nan(run.final.get(val_key)),
            _finite_or_nan(run.final.get(test_key)),
            _last(epochs),
        )
    vals = run.curves[val_key]
    finite = [i for i, v in enumerate(vals) if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, None
    pick = max if c.higher else min
    best = pick(vals[i] for i in finite)
    i = next(i for i in finite if vals[i] == best)
    tests = run.curves.series.get(test_key)
    test = _finite_or_nan(tests[i]) if tests is not None else math.nan
    return best, test, epochs[i] if i < len(epochs) else None


def _finite_or_nan(v: Any) -> float:
    """``v`` as a float if a finite number, else ``math.nan`` itself (so rows compare equal)."""
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


def _last(epochs: list[int]) -> int | None:
    return epochs[-1] if epochs else None


def _mean(scores: Scores, part: int = 0) -> float:
    vals = [s[part] for s in scores.values() if math.isfinite(s[part])]
    return statistics.fmean(vals) if vals else math.nan


def _ties(a: Scores, best: Scores, higher: bool) -> bool:
    """Whether a ties with the best: the best does not beat it in the paired test at level
    ALPHA (with one seed: their means are equal, to float rounding)."""
    test = paired(best, a, higher)
    if test.n >= 2:
        return not test.p < ALPHA
    ma, mb = _mean(a), _mean(best)
    return abs(ma - mb) <= 1e-12 * max(1.0, abs(ma), abs(mb))


def beats_zero(a: Scores, ref: Scores, higher: bool, m: int = 1) -> bool:
    """Whether a beats wd = 0's scores ``ref``: at least MIN_SEEDS common seeds and the paired
    test's p-value below ALPHA / m (m: the weight decays competing, Bonferroni)."""
    test = paired(a, ref, higher)
    return test.n >= MIN_SEEDS and test.p < ALPHA / max(m, 1)


def _candidates(by_wd: Mapping[float, Scores]) -> dict[float, Scores]:
    """The weight decays whose every seed has a finite validation score."""
    return {w: s for w, s in by_wd.items() if s and all(math.isfinite(v[0]) for v in s.values())}


def family(by_wd: Mapping[float, Scores], pruned: int = 0) -> int:
    """m, the Bonferroni divisor: the weight decays > 0 competing and ``pruned`` ones, >= 1."""
    return max(1, sum(w != 0 for w in _candidates(by_wd)) + pruned)


def choose(
    by_wd: Mapping[float, Scores], ref: Scores | None, higher: bool, pruned: int = 0
) -> tuple[float, float]:
    """(chosen weight decay, the one with the best mean) among candidates whose every seed has
    a finite validation score, by this module's rule (``pruned``: wd > 0 stopped at a rung)."""
    cands = _candidates(by_wd)
    if not cands:
        raise ValueError("no weight decay has a finite validation score for every seed")
    best = min(cands, key=lambda w: ((-1 if higher else 1) * _mean(cands[w]), w))
    tied = [w for w in cands if _ties(cands[w], cands[best], higher)]
    m = family(cands, pruned)
    if ref is not None and beats_zero(cands[best], ref, higher, m):
        tied = [w for w in tied if beats_zero(cands[w], ref, higher, m)]
    return min(tied), best


def by_setting(
    runs: Sequence[RunResult],
) -> dict[tuple[str, float], dict[float, list[RunResult]]]:
    """The runs by (mode, lr), then by weight decay."""
    by: dict[tuple[str, float], dict[float, list[RunResult]]] = {}
    for r in runs:
        c = r.config
        by.setdefault((c.mode, c.lr), {}).setdefault(c.weight_decay, []).append(r)
    return by


def decays(mode: str) -> bool:
    """Whether ``mode`` decays (the wd = 0 reference ``none`` does not): the registry's fact."""
    return get_mode(mode).decays


def reference_runs(
    groups: Mapping[tuple[str, float], Mapping[float, list[RunResult]]], mode: str | None, lr: float
) -> list[RunResult] | None:
    """wd = 0's runs for (mode, lr): the mode's own, else the reference's (a mode that does
    not decay: ``none``), else any mode's wd = 0 at that lr. ``mode`` None: the reference's."""
    at_lr = [k for k in groups if k[1] == lr]
    order = [*([(mode, lr)] if mode else []), *[k for k in at_lr if not decays(k[0])], *at_lr]
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
    waiting: Set[float] = frozenset(),
) -> list[dict[str, Any]]:
    """For each (mode, lr): the weight decay chosen on validation by this module's rule, its
    test metric (mean ± std over seeds), wd = 0's beside it, and whether it beat wd = 0.
    Without a validation split nothing is chosen (an empty list): never on test. ``waiting``:
    a partial study's weight decays > 0 (a row missing one has none finished yet)."""
    c = criterion(task, metric, early_stopping, higher)
    if not any(f"val_{c.key}" in r.final for r in runs):
        if metric not in (None, "auto") and any(
            k.startswith("val_") for r in runs for k in r.final
        ):
            have = sorted({k[4:] for r in runs for k in r.final if k.startswith("val_")})
            raise ValueError(f"select={metric!r}: no run recorded it; valid: {', '.join(have)}")
        return []
    groups = by_setting(runs)
    rows = []
    for (mode, lr), wds in sorted(groups.items()):
        by_wd = {w: {r.config.seed: run_scores(r, c) for r in rs} for w, rs in wds.items()}
        zero = reference_runs(groups, mode, lr)
        ref = {r.config.seed: run_scores(r, c) for r in zero} if zero else None
        pruned = pruned_cells(wds)
        try:
            chosen, best = choose(by_wd, ref, c.higher, pruned)
        except ValueError:
            continue  # every weight decay diverged for some seed: nothing to choose
        m = family(by_wd, pruned)
        row = _row(mode, lr, (chosen, best, m), by_wd[chosen], ref, wds[chosen], c)
        row["pruned"] = pruned
        row["largest_swept"] = chosen > 0 and chosen == max({*wds, *waiting})  # (beyond: more?)
        untested = decays(mode) and not any(w != 0 for w in _candidates(by_wd))
        if untested and (pruned or not any(w != 0 for w in wds)):  # no test was made
            said = NOT_YET if waiting - set(wds) else ALL_PRUNED if pruned else NONE_SWEPT
            row |= {"verdict": said, "better_than_zero": False}
            row |= {"p_value": math.nan, "gain": math.nan, "gain_se": math.nan}
        rows.append(row)
    return rows


def _row(
    mode: str,
    lr: float,
    choice: tuple[float, float, int],
    scores: Scores,
    ref: Scores | None,
    runs: Sequence[RunResult],
    c: Criterion,
) -> dict[str, Any]:
    """One selection row: the issue's names, the legacy ones, the verdict and its numbers.
    ``choice``: (chosen weight decay, the best mean's, m the weight decays competing)."""
    chosen, best, m = choice
    tests = [s[1] for s in scores.values()]
    test_std = statistics.stdev(tests) if len(tests) > 1 else 0.0
    test = paired(scores, ref, c.higher) if ref is not None else Paired(0, *(math.nan,) * 3)
    measured = ref is not None and beats_zero(scores, ref, c.higher, m)
    verdict = _verdict(mode, ref is not None, test.n, measured)
    measured = measured and decays(mode)
    val, test_mean = _mean(scores), statistics.fmean(tests)
    test_zero = _mean(ref, 1) if ref is not None else math.nan
    tau = {k: _finite_or_nan(runs[0].final.get(k)) for k in ("tau_iter", "tau_epoch")}
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
        "gain": _finite_or_nan(test.gain),  # NaN itself when not finite
        "gain_se": _finite_or_nan(test.se),
        "p_value": _finite_or_nan(test.p),
        "level": ALPHA / m,  # the p-value a gain must be under (ALPHA / m, Bonferroni)
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


def _verdict(mode: str, has_ref: bool, n: int, measured: bool) -> str:
    """The verdict in words, for a row whose chosen weight decay was compared with wd = 0 over
    ``n`` common seeds."""
    if not decays(mode):
        return REFERENCE
    if not has_ref:
        return NO_REFERENCE
    if n < MIN_SEEDS:
        return too_few(n)
    return GAIN if measured else NO_GAIN


def too_few(n: int) -> str:
    """The verdict with ``n`` < MIN_SEEDS seeds, naming how many the test needs."""
    return f"{TOO_FEW} ({n} seed{'s' if n != 1 else ''}; the test needs {MIN_SEEDS} or more)"


def zero_runs(runs: Sequence[RunResult], mode: str | None, lr: float) -> list[RunResult]:
    """The wd = 0 runs (every seed) that (mode, lr) is compared with, as :func:`reference_runs`
    finds them (``mode`` None: the reference's); empty if there is none."""
    return reference_runs(by_setting(runs), mode, lr) or []


def pruned_cells(wds: Mapping[float, Sequence[RunResult]]) -> int:
    """How many weight decays > 0 of one (mode, lr) successive halving stopped at a rung: a
    cell with a run stored ``pruned`` (seeds may have stopped early first), none diverged."""
    stats = [{r.status for r in rs} for w, rs in wds.items() if w != 0]
    return sum("pruned" in s and "diverged" not in s for s in stats)
