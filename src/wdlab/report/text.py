"""Terminal tables of a result value: the demo's regimes, an experiment's runs and its choice of
weight decay, and the oracle checks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from wdlab.records import (
    NO_REFERENCE,
    NONE_SWEPT,
    NOT_YET,
    UNTESTED,
    Check,
    Result,
    RunResult,
    is_reference,
    no_choice,
    use_wd,
)
from wdlab.selection import (
    ALPHA,
    MIN_SEEDS,
    NO_GAIN,
    TOO_FEW,
    has_timescale,
    metric_for,
    selection_criterion,
    selection_rule,
    use_tau,
)
from wdlab.unanswered import unanswered

MAX_RUNS = 24  # runs listed one by one; more are summarised (wdlab export has each)


def demo_table(result: Result) -> str:
    """The demo's summary: one row per regime, then the manual ≡ builtin verdict."""
    head = (
        f"{'regime':<8} {'wd':>6} {'train loss':>10} {'test loss':>10} {'train acc':>9} "
        f"{'test acc':>8} {'gap':>7} {'|w|':>8} {'best epoch':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in result.runs:
        f = r.final
        lines.append(
            f"{r.config.label:<8} {r.config.weight_decay:>6g} {f['train_loss']:>10.4f} "
            f"{f['test_loss']:>10.4f} {f['train_acc']:>9.3f} {f['test_acc']:>8.3f} "
            f"{f['test_loss'] - f['train_loss']:>7.3f} {f['weight_norm']:>8.3f} "
            f"{r.best.get('epoch', -1):>10}"
        )
    c = result.checks["manual_equals_builtin"]
    if diverged := [r.config.label for r in result.runs if r.status == "diverged"]:
        lines.append(f"diverged (a non-finite loss): {', '.join(diverged)}")
    verdict = "IDENTICAL (bitwise)" if c.identical else "DIFFERENT"
    lines.append("")
    lines.append(
        f"manual vs builtin: {verdict}, max |Δ| = {c.max_abs_diff:.3g} over all parameters"
        if math.isfinite(c.max_abs_diff)
        else f"manual vs builtin: NOT COMPARED: {c.detail}"
    )
    lines += engine_line(result)
    return "\n".join(lines)


def experiment_table(result: Result, max_runs: int = MAX_RUNS) -> str:
    """Every run's final metrics (up to ``max_runs`` runs), then the choice per (mode, lr)."""
    key, _, _ = metric_for(result.task)
    runs = result.runs
    cols = [
        ("train_loss", "train loss"),
        ("val_loss", "val loss"),
        ("test_loss", "test loss"),
        (f"val_{key}", f"val {key}"),  # (its name cut to 3 letters read "val RMS")
        (f"test_{key}", f"test {key}"),
        ("weight_norm", "|w|"),
    ]
    cols = [(k, h) for k, h in cols if any(k in r.final for r in runs)]
    early = any(r.best.get("at") for r in runs)
    head = f"{'mode':<12} {'wd':>9} {'lr':>8} {'seed':>4} " + " ".join(f"{h:>10}" for _, h in cols)
    head += f" {'epochs':>9}" if early else ""
    lines = [head, "-" * len(head)]
    if len(runs) > max_runs:
        lines = [f"{len(runs)} runs (wdlab show --json or wdlab export for each one)"]
    if not runs:  # a study killed before its first run finished: no header over nothing
        lines = []
    for r in runs if len(runs) <= max_runs else []:
        c = r.config
        vals = " ".join(f"{r.reported.get(k, math.nan):>10.4f}" for k, _ in cols)
        vals += f" {_best_of(r):>9}" if early else ""
        flag = "" if r.status == "done" else f"  {r.status}"
        lines.append(
            f"{c.mode:<12} {short(c.weight_decay):>9} {short(c.lr):>8} {c.seed:>4} {vals}{flag}"
        )
    if early and len(runs) <= max_runs:
        lines.append(
            "(early stopping: each run's numbers at its best validation epoch; epochs: the "
            "epochs trained by then / in all)"
        )
    lines += _selection_lines(result)
    compute = compute_text(result.halving)
    if compute:
        lines.append(compute)
    if result.data.get("file") and result.data.get("target"):  # a table: the task it read
        lines.append(f"task: {result.task}, from column {result.data['target']!r} (--task sets it)")
    lines += engine_line(result)
    return "\n".join(lines).lstrip("\n")


def _best_of(run: RunResult) -> str:
    """``best/trained``: the epochs a run had trained at its best evaluation, and in all."""
    best, trained = run.best.get("epoch"), run.epochs
    if best is None:
        return "-"
    return f"{best + 1}/{trained}" if trained is not None else f"{best + 1}"


def engine_line(result: Result) -> list[str]:
    """``engine: …`` (how the runs were trained), or nothing where no run says (none ran)."""
    return [f"engine: {result.engine_note}"] if result.engine_note else []


def _selection_lines(result: Result) -> list[str]:
    sel = result.selection
    if not sel:
        return ["", no_choice(result.runs, result.counts)]
    c = selection_criterion(sel)
    taus = has_timescale(sel)
    head = (
        f"{'mode':<12} {'lr':<7} {'use wd':<7} {'τ_epoch':<8} "
        if taus
        else f"{'mode':<12} {'lr':<7} {'use wd':<7} "
    ) + f"{'val':>7} {'val@0':>7}   {'test (mean ± std)':<17} {'test@0':>7}  verdict"
    lines = [
        "",
        f"best weight decay per (mode, lr), chosen on val {c.name}, reported on test "
        f"(mean ± std over seeds):",
        head,
    ]
    lines += [answer_line(s, taus) for s in sel]
    others = unanswered(result.runs, sel, result.waiting(), result.config)
    blank = f"{'—':<8} " * taus + f"{'—':>7} {'—':>7}   {'—':<17} {'—':>7}  "  # under its column
    lines += [f"{s['mode']:<12} {short(s['lr']):<7} {'—':<7} {blank}{s['verdict']}" for s in others]
    lines.append(verdict_summary(sel, others))
    lines += edge_lines(sel)
    lines.append(f"rule: {selection_rule(sel, others)}")
    return lines


def edge_lines(sel: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line where the weight decay to use is the largest one swept: a larger one may do
    better, which the grid cannot tell; none where it is not."""
    rows = [s for s in sel if s.get("largest_swept") and s.get("better_than_zero")]
    if not rows:
        return []
    wds = ", ".join(short(w) for w in sorted({s["weight_decay"] for s in rows}))
    where = f"{rows[0]['mode']} lr {short(rows[0]['lr'])}"
    if len(rows) > 1:
        where = f"{len(rows)} (mode, lr) settings"
    return [
        f"the weight decay to use is the largest swept in {where} (wd {wds}): a larger one may "
        "do better (sweep beyond it)"
    ]


def spread(s: Mapping[str, Any], fmt: str) -> str:
    """A selection row's test std over seeds, "—" for one seed (which has none)."""
    std = s["test_std"]
    return format(std, fmt) if s.get("seeds", 2) > 1 and math.isfinite(std) else "—"


def answer_line(s: Mapping[str, Any], tau: bool = True) -> str:
    """One selection row in one line: mode, lr, the wd to use (and its τ_epoch: — at wd = 0),
    scores, verdict."""
    wd = short(use_wd(s))
    tau_s = f"{short(use_tau(s)):<8} " if tau else ""
    test = f"{s['test_mean']:.4f} ± {spread(s, '.4f')}"
    return (
        f"{s['mode']:<12} {short(s['lr']):<7} {wd:<7} {tau_s}{s['val']:>7.4f} "
        f"{s['val_at_zero']:>7.4f}   {test:<17} {s['test_at_zero']:>7.4f}  {verdict_text(s)}"
    )


def verdict_text(s: Mapping[str, Any]) -> str:
    """A row's verdict, ending in what to do where decay gained nothing measurable: use wd = 0
    (a weight decay that gains nothing is no answer, however small), naming the weight decay
    whose numbers the row shows where that is another."""
    if is_reference(s) or s.get("better_than_zero"):
        return str(s["verdict"])
    if s["verdict"] == NO_REFERENCE:  # a partial study: no advice before wd = 0 is trained
        return f"{NO_REFERENCE} yet"
    if s["verdict"] in UNTESTED:  # nothing was compared: no advice at this (mode, lr)
        return str(s["verdict"])
    chosen = s["weight_decay"]  # the row's val and test: the chosen one's, named where not 0
    shown = f" (val and test: wd {short(chosen)})" if chosen != use_wd(s) else ""
    return f"{s['verdict']}{shown}: use wd = 0"


def use_cell(s: Mapping[str, Any]) -> str:
    """The weight decay to use (:func:`~wdlab.records.use_wd`), with the one of the best mean
    (the highest accuracy, the lowest loss or RMSE) beside it where that is another weight
    decay (it did not beat the one to use measurably)."""
    wd = use_wd(s)
    best = s.get("best_mean_wd", s["weight_decay"])
    return short(wd) + (f" (best mean at wd {short(best)})" if best != wd else "")


def verdict_summary(sel: Sequence[Mapping[str, Any]], others: Sequence[Mapping] = ()) -> str:
    """How many (mode, lr) settings beat wd = 0 in the test, in one sentence; the settings not
    compared with wd = 0 (pruned, too few seeds, and ``others``: :func:`unanswered`'s, with
    nothing to choose) are counted apart."""
    rows = [s for s in sel if not is_reference(s)]
    extra = len([s for s in others if not is_reference(s)])
    won = sum(bool(s["better_than_zero"]) for s in rows)
    if not rows and not extra:
        return "only the wd = 0 reference was trained: nothing to choose"
    if rows and not extra and all(s["verdict"] == NONE_SWEPT for s in rows):
        return "no weight decay > 0 was swept: give some (--wd, weight_decay=) to compare"
    if rows and not extra and all(s["verdict"] == NOT_YET for s in rows):
        return "no weight decay > 0 finished yet: resume the sweep to compare with wd = 0"
    if rows and not extra and all(s["verdict"].startswith(TOO_FEW) for s in rows):
        return f"{TOO_FEW} whether weight decay beats wd = 0: run {MIN_SEEDS} or more seeds"
    test = f"one-sided paired t-test over seeds, {ALPHA:.0%} error rate per setting"
    tested = [s for s in rows if _tested(s)]
    if not tested:  # pruned, diverged, too few seeds, no reference: nothing was compared
        return "no (mode, lr) setting could be compared with wd = 0: see each row's verdict"
    untested = len(rows) - len(tested) + extra
    rest = f"; {untested} more could not be compared (see their verdicts)" if untested else ""
    n = len(tested)
    settings = f"{n} (mode, lr) setting{'s' * (n != 1)}" + (" compared" if untested else "")
    if won == 0 and not untested:
        return f"{NO_GAIN}: no (mode, lr) setting beat wd = 0 ({test}); use wd = 0"
    if won == 0:
        none = "the" if n == 1 else "none of the"
        verb = "did not beat" if n == 1 else "beat"
        return f"{NO_GAIN}: {none} {settings} {verb} wd = 0 ({test}); use wd = 0 there{rest}"
    return f"weight decay beat wd = 0 in {won} of {settings} ({test}){rest}"


def _tested(row: Mapping[str, Any]) -> bool:
    """Whether a row's verdict came from the test against wd = 0."""
    verdict = row["verdict"]
    return verdict not in (*UNTESTED, NO_REFERENCE) and not verdict.startswith(TOO_FEW)


def compute_text(halving: Mapping[str, Any]) -> str:
    """The compute a sweep used against the full grid's, and why it is less (successive
    halving's rungs, early stopping), in one sentence; "" where it trained the full grid
    without pruning (a pruned sweep that stopped nothing says so)."""
    comp = halving.get("compute")
    full = comp and comp["configuration_epochs"] >= comp["full_grid_epochs"]
    if not comp or (full and not halving.get("rungs")):
        return ""
    why = []
    if halving.get("rungs"):
        pruned = sum(d.get("pruned", 0) for d in halving.get("decisions", []))
        rungs = ", ".join(str(r) for r in halving["rungs"])
        rungs += f" epoch{'s' if halving['rungs'][-1] != 1 else ''}"
        if halving.get("rung_steps"):
            rungs += f" ({', '.join(f'{s:,}' for s in halving['rung_steps'])} steps)"
        decided = {d.get("rung") for d in halving.get("decisions", [])}
        if unreached := [str(r) for r in halving["rungs"] if r not in decided]:
            rungs += f"; {', '.join(unreached)}: " + (
                "not reached yet" if comp.get("finished_only") else "no run was training there"
            )
        why.append(
            f"successive halving (eta = {halving['eta']}, rungs after {rungs}) stopped "
            f"{_count(pruned, 'cell')}"
        )
    if halving.get("stopped_early"):
        why.append(f"early stopping stopped {_count(halving['stopped_early'], 'run')}")
    because = "".join(f"; {w}" for w in why)
    so_far = " (the finished runs' so far)" if comp.get("finished_only") else ""
    return (
        f"compute: {comp['configuration_epochs']:,}{so_far} of the full grid's "
        f"{comp['full_grid_epochs']:,} configuration-epochs ({comp['fraction']:.0%}), "
        f"{comp['row_steps']:,} of {comp['full_grid_row_steps']:,} row-steps{because}"
    )


def failed_lines(failures: Mapping[str, int]) -> list[str]:
    """``failed: 2 runs: <error> (run the sweep again to retry)``: one line per error."""
    again = "(run the sweep again to retry)"
    return [f"failed: {_count(n, 'run')}: {error} {again}" for error, n in failures.items()]


def _count(n: int, noun: str) -> str:
    """``n`` of ``noun``: "no cell", "1 cell", "16 cells"."""
    return f"no {noun}" if n == 0 else f"{n:,} {noun}{'s' * (n != 1)}"


def short(v: Any) -> str:
    """A number in at most three significant digits: ``0.0316``, ``1.04``, ``100``, ``3.2e-5``,
    ``0`` (— if none); three, so that grids such as 0.55, 0.56 or 1.04, 1.06 read apart."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    s = f"{v:.3g}"
    if "e" in s:
        mantissa, exp = s.split("e")
        s = f"{mantissa}e{int(exp)}"
    return s


def checks_table(checks: Sequence[Check]) -> str:
    """The terminal table: check, reference, max difference, pass/fail."""
    w1 = max(len("check"), *(len(c.name) for c in checks))
    w2 = max(len("reference"), *(len(c.reference) for c in checks))
    lines = [f"{'check':<{w1}}  {'reference':<{w2}}  {'max |Δ|':>9}  {'rel':>9}  result"]
    for c in checks:
        verdict = "pass" if c.passed else "FAIL"
        if c.identical and c.passed:
            verdict += " (bitwise)"
        lines.append(
            f"{c.name:<{w1}}  {c.reference:<{w2}}  {c.max_abs_diff:>9.2e}  "
            f"{c.max_rel_diff:>9.2e}  {verdict}"
        )
    failed = sum(not c.passed for c in checks)
    lines.append(f"{len(checks) - failed} passed, {failed} failed")
    return "\n".join(lines)
