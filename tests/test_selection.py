"""Choosing weight decay on validation: the metric, the tie rule, seeds and their standard
error, "better than zero", early stopping; result.best, result.to_pandas(), the terminal table
and the JSON. Built from hand-made runs with known numbers: nothing is trained here."""

import json
import math

import pytest

from wdlab.jsonsafe import dumps
from wdlab.pipelines import SweepResult
from wdlab.records import Curves, Result, RunConfig, RunResult
from wdlab.report.text import short
from wdlab.selection import GAIN, NO_GAIN, REFERENCE, TOO_FEW, criterion, select
from wdlab.stats import se_diff

EVALS = [0, 2, 4]


def run(mode, wd, seed, val, test=None, lr=0.01, vals=None, tests=None, status="done", tau=None):
    """One finished run whose validation accuracy ends at ``val`` (curve ``vals`` at epochs
    0, 2, 4), test accuracy at ``test`` (default: ``val``), losses 1 − accuracy."""
    vals = list(vals or [val - 0.1, val - 0.05, val])
    test = val if test is None else test
    tests = list(tests or [test - 0.1, test - 0.05, test])
    series = {
        "train_loss": [1.0, 0.8, 0.6, 0.5, 0.4],
        "weight_norm": [1.0, 1.1, 1.2, 1.25, 1.3 - wd],
        "train_loss_eval": [0.8, 0.55, 0.4],
        "val_loss": [1 - v for v in vals],
        "test_loss": [1 - t for t in tests],
        "val_acc": vals,
        "test_acc": tests,
    }
    final = {k: v[-1] for k, v in series.items() if k not in ("train_loss", "train_loss_eval")}
    final |= {"train_loss": 0.4, "tau_iter": math.nan, "tau_epoch": math.nan}
    if tau is not None:
        final["tau_epoch"] = tau
    cfg = RunConfig(mode, wd, lr, "adam", (), seed, f"{mode} wd={wd:g}")
    best = {"metric": "val_loss", "value": min(series["val_loss"]), "epoch": 4}
    return RunResult(cfg, Curves(list(range(5)), list(EVALS), series), final, status, best=best)


def grid(table, mode="decoupled", lr=0.01, **kw):
    """Runs from {wd: [val per seed]}; wd = 0 is the ``none`` reference."""
    return [
        run("none" if wd == 0 else mode, wd, seed, v, lr=lr, **kw)
        for wd, vs in table.items()
        for seed, v in enumerate(vs)
    ]


def row(rows, mode="decoupled", lr=0.01):
    return next(r for r in rows if (r["mode"], r["lr"]) == (mode, lr))


def test_exact_ties_go_to_the_smallest_weight_decay_wd0_included():
    # the digits case: wd 0, 1e-4, 1e-3, 1e-2 tie at the same validation accuracy
    runs = [
        run("decoupled", wd, seed, v)
        for wd in (0.0, 1e-4, 1e-3, 1e-2)
        for seed, v in enumerate([0.96944, 0.97222, 0.96944])
    ]
    runs += [run("decoupled", 0.1, s, 0.5) for s in (0, 1, 2)]
    r = row(select(runs, "multiclass"))
    assert r["weight_decay"] == 0.0 and r["best_wd"] == 0.0
    assert r["better_than_zero"] is False and r["verdict"] == NO_GAIN
    assert r["seeds"] == 3 and r["chosen_on"] == "val"


def test_ties_within_one_standard_error_go_to_the_smaller_weight_decay():
    # wd 1e-2 has the best mean (0.91) but its seed-by-seed lead over 1e-3 (0.03, -0.02,
    # 0.02: mean 0.01, SE 0.0153) is within one standard error
    runs = grid({0.0: [0.5, 0.5, 0.5], 1e-3: [0.88, 0.92, 0.90], 1e-2: [0.91, 0.90, 0.92]})
    r = row(select(runs, "multiclass"))
    assert r["best_mean_wd"] == 1e-2 and r["weight_decay"] == 1e-3
    assert r["better_than_zero"] is True and r["verdict"] == GAIN
    assert r["val"] == pytest.approx(0.90) and r["val_at_zero"] == pytest.approx(0.5)


def test_a_lead_larger_than_one_standard_error_keeps_the_larger_weight_decay():
    runs = grid({0.0: [0.5, 0.5, 0.5], 1e-3: [0.88, 0.90, 0.89], 1e-2: [0.92, 0.93, 0.93]})
    r = row(select(runs, "multiclass"))
    assert r["weight_decay"] == 1e-2 and r["better_than_zero"] is True


def test_better_than_zero_needs_a_gain_above_one_standard_error():
    # seed-by-seed gains over wd = 0 of (0.03, -0.01, 0.01): mean 0.01, SE 0.0115: no gain
    zero = [0.80, 0.80, 0.80]
    r = row(select(grid({0.0: zero, 1e-2: [0.83, 0.79, 0.81]}), "multiclass"))
    assert r["weight_decay"] == 0.01  # the only weight decay swept for the mode
    assert r["better_than_zero"] is False and NO_GAIN in r["verdict"]
    assert r["gain"] == pytest.approx(0.01) and r["gain_se"] == pytest.approx(0.02 / math.sqrt(3))
    # gains (0.03, 0.01, 0.02): mean 0.02, SE 0.0058: a measured gain
    r = row(select(grid({0.0: zero, 1e-2: [0.83, 0.81, 0.82]}), "multiclass"))
    assert r["weight_decay"] == 0.01 and r["better_than_zero"] is True and r["verdict"] == GAIN


def test_a_tie_break_never_turns_a_measured_gain_into_no_gain():
    # 1e-2 beats wd = 0 in the test (gains 0.04, 0.03, 0.05: t = 6.9, p = 0.010 < 0.05 / 2);
    # 1e-3 ties with 1e-2 (leads -0.05, 0.07, 0.01) but does not beat wd = 0 itself (gains
    # 0.09, -0.04, 0.06: t = 0.93): 1e-2 stays the choice
    runs = grid({0.0: [0.80] * 3, 1e-3: [0.89, 0.76, 0.86], 1e-2: [0.84, 0.83, 0.85]})
    r = row(select(runs, "multiclass"))
    assert r["weight_decay"] == 1e-2 and r["better_than_zero"] is True


def test_the_standard_error_is_over_paired_seeds():
    a = {0: (0.9, 0, 0), 1: (0.8, 0, 0), 2: (0.7, 0, 0)}
    b = {0: (0.8, 0, 0), 1: (0.7, 0, 0), 2: (0.6, 0, 0)}
    assert se_diff(a, b) == pytest.approx(0.0)  # the same lead on every seed: no noise
    assert math.isnan(se_diff(a, {0: (0.1, 0, 0)}))  # fewer than two common seeds


def test_one_seed_has_no_noise_estimate():
    runs = grid({0.0: [0.80], 1e-3: [0.80], 1e-2: [0.95]})
    r = row(select(runs, "multiclass"))
    assert r["weight_decay"] == 1e-2  # no noise to tie within: the best mean
    assert r["better_than_zero"] is False and r["verdict"].startswith(TOO_FEW)
    assert "1 seed;" in r["verdict"] and "needs 3 or more" in r["verdict"]
    assert math.isnan(r["gain_se"])
    # exact ties still go to the smaller weight decay (wd = 0 when the mode's grid has it)
    tie = [run("decoupled", 0.0, 0, 0.8), run("decoupled", 1e-2, 0, 0.8)]
    assert row(select(tie, "multiclass"))["weight_decay"] == 0.0
    # and its test score has no spread to show (a trial read "± 0.0000" as a measured one)
    from wdlab.report.text import answer_line

    assert "0.9500 ± —" in answer_line(r)


def test_a_weight_decay_that_diverged_for_one_seed_is_not_chosen():
    runs = grid({0.0: [0.5, 0.5], 1e-3: [0.7, 0.71]})
    runs += [run("decoupled", 1e-2, 0, 0.99), run("decoupled", 1e-2, 1, 0.99, status="diverged")]
    assert row(select(runs, "multiclass"))["weight_decay"] == 1e-3


def test_select_on_loss_or_a_named_metric():
    runs = grid({0.0: [0.5, 0.5], 1e-3: [0.7, 0.71], 1e-2: [0.9, 0.92]})
    assert row(select(runs, "multiclass", "loss"))["weight_decay"] == 1e-2  # lowest val loss
    r = row(select(runs, "multiclass", "loss"))
    assert r["metric"] == "loss" and r["higher"] is False
    assert r["val"] == pytest.approx(1 - 0.91) and "val_loss" in r and "test_loss_mean" in r
    assert row(select(runs, "multiclass", "acc")) == row(select(runs, "multiclass", "auto"))
    assert criterion("regression").key == "rmse" and criterion("regression").higher is False
    assert criterion("regression", "r2").higher is True
    with pytest.raises(ValueError, match="is higher better"):
        criterion("multiclass", "f1")
    assert criterion("multiclass", "f1", higher=True).higher is True
    with pytest.raises(ValueError, match=r"select='rmse': no run recorded it; valid: acc, loss"):
        select(runs, "multiclass", "rmse")


def test_early_stopping_scores_each_run_at_its_best_validation_epoch():
    # 1e-2 peaks early (epoch 2) then falls; 1e-3 ends higher than 1e-2's last value
    runs = [run("none", 0.0, s, 0.6, vals=[0.5, 0.55, 0.6]) for s in (0, 1)]
    runs += [run("l2", 1e-3, s, 0.8 + s / 100, vals=[0.7, 0.75, 0.8 + s / 100]) for s in (0, 1)]
    runs += [
        run("l2", 1e-2, s, 0.7, vals=[0.8, 0.95, 0.7], tests=[0.8, 0.93 + s / 100, 0.6])
        for s in (0, 1)
    ]
    last = row(select(runs, "multiclass"), "l2")
    assert last["weight_decay"] == 1e-3 and last["epochs"] == [4, 4]
    early = row(select(runs, "multiclass", early_stopping=True), "l2")
    assert early["weight_decay"] == 1e-2 and early["epochs"] == [2, 2]
    assert early["val"] == pytest.approx(0.95)
    assert early["test_mean"] == pytest.approx(0.935)  # test read at the same epoch
    assert early["early_stopping"] is True


def test_no_validation_split_chooses_nothing():
    runs = grid({0.0: [0.5], 1e-2: [0.6]})
    for r in runs:
        r.final = {k: v for k, v in r.final.items() if not k.startswith("val_")}
    assert select(runs, "multiclass") == []


def sweep_result(table=None, lrs=(0.01,), config=None, modes=("decoupled",)):
    """A SweepResult of hand-made runs: the wd = 0 reference and ``modes`` at ``lrs``."""
    table = table or {0.0: [0.80] * 3, 1e-4: [0.80] * 3, 0.0316228: [0.82, 0.79, 0.80]}
    runs = []
    for lr in lrs:
        runs += grid({0.0: table[0.0]}, lr=lr)
        for mode in modes:
            runs += grid({w: v for w, v in table.items() if w}, mode=mode, lr=lr, tau=12.5)
    res = SweepResult(runs=runs, name="hand-made", task="multiclass", config=config or {})
    res.data = {"name": "hand-made"}
    res.select()
    return res


def test_result_best_lists_the_issue_fields_per_decaying_mode_and_lr():
    res = sweep_result(lrs=(0.01, 0.001))
    assert [(b["mode"], b["lr"]) for b in res.best] == [("decoupled", 0.001), ("decoupled", 0.01)]
    keys = {"mode", "lr", "weight_decay", "val", "test_mean", "test_std", "test_at_zero"}
    # "weights" added deliberately (issue 22: result.best says where the trained models are)
    assert keys | {"better_than_zero", "verdict", "use_wd", "weights"} == set(res.best[0])
    b = res.best[0]
    assert b["weight_decay"] == 1e-4 and b["better_than_zero"] is False  # 0.0316 ties
    assert b["use_wd"] == 0.0  # no measurable gain: the answer is wd = 0, not the tied 1e-4
    assert b["test_at_zero"] == pytest.approx(0.80) and b["test_std"] == 0.0
    assert isinstance(b["better_than_zero"], bool)
    none_rows = [s for s in res.selection if s["mode"] == "none"]
    assert [s["verdict"] for s in none_rows] == [REFERENCE, REFERENCE]


def test_the_config_sets_the_metric_and_early_stopping():
    cfg = {"train": {"select": "loss", "early_stopping": True}}
    res = sweep_result(config=cfg)
    assert res.selection[0]["metric"] == "loss" and res.selection[0]["early_stopping"] is True
    assert sweep_result().selection[0]["metric"] == "acc"  # defaults when the keys are absent


def test_terminal_table_and_json_carry_the_verdicts():
    res = sweep_result()
    text = res.table()
    assert NO_GAIN in text
    assert "0.0316228" not in text and "3.16228" not in text
    assert "decoupled" in text and "rule: chosen on validation accuracy" in text
    doc = json.loads(dumps(res.to_dict()))
    assert doc["best"][0]["verdict"] == NO_GAIN and doc["best"][0]["better_than_zero"] is False
    assert {s["verdict"] for s in doc["selection"]} == {NO_GAIN, REFERENCE}
    back = Result.from_dict(doc)
    assert back.selection[1]["better_than_zero"] is False


def test_a_results_file_without_verdicts_is_chosen_again_from_its_runs():
    res = sweep_result()
    old = [{k: v for k, v in s.items() if k != "better_than_zero"} for s in res.selection]
    again = SweepResult(runs=res.runs, task="multiclass", selection=old)
    assert again.selection == res.selection


def test_to_pandas_has_one_tidy_row_per_run():
    pd = pytest.importorskip("pandas")
    res = sweep_result()
    df = res.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == len(res.runs)
    for col in ("mode", "weight_decay", "lr", "seed", "status", "val_acc", "tau_epoch"):
        assert col in df.columns
    assert set(df["status"]) == {"done"}
    assert df.loc[df["mode"] == "decoupled", "tau_epoch"].eq(12.5).all()


def test_short_notation():
    assert [short(v) for v in (0.0316228, 3.16228e-05, 0.0, 1e-4, 0.003, 1e3, math.nan)] == [
        "0.0316",
        "3.16e-5",
        "0",
        "0.0001",
        "0.003",
        "1e3",
        "—",
    ]


def test_a_mode_swept_at_wd_0_only_says_no_weight_decay_was_swept():
    """A decaying mode with only wd = 0 in its grid compared nothing with wd = 0: its row says
    so, with no p-value and no "use wd = 0" advice (it said "no measurable gain", a verdict
    no test had made; found by a new-user trial), and so does the summary."""
    from wdlab.records import NONE_SWEPT, use_text
    from wdlab.report.text import verdict_summary, verdict_text

    runs = [run("coupled", 0.0, s, 0.8 + 0.01 * s) for s in range(3)]
    (r,) = select(runs, "multiclass")
    assert r["verdict"] == NONE_SWEPT and not r["better_than_zero"]
    assert math.isnan(r["p_value"]) and verdict_text(r) == NONE_SWEPT
    assert use_text(r) == "no wd > 0 swept, none compared with wd = 0"
    assert verdict_summary([r]).startswith("no weight decay > 0 was swept")
    swept = select([*runs, *(run("coupled", 0.1, s, 0.8) for s in range(3))], "multiclass")
    assert swept[0]["verdict"] != NONE_SWEPT  # with a wd > 0 in the grid: tested as ever


def test_the_summary_counts_only_the_settings_compared_with_wd_0():
    """Rows where nothing was compared (every wd > 0 pruned, too few seeds) make no "use wd =
    0" claim in the one-sentence summary: it said "no measurable gain … use wd = 0" when no
    row had been compared at all (found by a new-user trial)."""
    from wdlab.records import ALL_PRUNED
    from wdlab.report.text import verdict_summary
    from wdlab.selection import NO_GAIN, TOO_FEW

    def row(lr, verdict, won=False):
        return {"mode": "decoupled", "lr": lr, "verdict": verdict, "better_than_zero": won}

    pruned, few = row(0.1, ALL_PRUNED), row(0.01, f"{TOO_FEW} (1 seed)")
    assert verdict_summary([pruned, few]) == (
        "no (mode, lr) setting could be compared with wd = 0: see each row's verdict"
    )
    said = verdict_summary([pruned, few, row(1.0, NO_GAIN)])
    assert said.startswith(f"{NO_GAIN}: the 1 (mode, lr) setting compared did not beat wd = 0")
    assert said.endswith("use wd = 0 there; 2 more could not be compared (see their verdicts)")
    said = verdict_summary([pruned, row(1.0, "better than wd = 0", won=True)])
    assert said.startswith("weight decay beat wd = 0 in 1 of 1 (mode, lr) setting compared")
    # a setting with nothing to choose at all (every run diverged: no row) counts apart too
    said = verdict_summary([row(1.0, NO_GAIN)], [row(3.0, "every run diverged: nothing")])
    assert said.endswith("use wd = 0 there; 1 more could not be compared (see their verdicts)")
    # every row compared: the sentence as before
    assert verdict_summary([row(1.0, NO_GAIN)]).startswith(f"{NO_GAIN}: no (mode, lr) setting")


def test_a_setting_whose_runs_were_pruned_or_diverged_says_so():
    """At one lr every wd > 0 was pruned (finite scores at its rung) and wd = 0 diverged: the
    setting has nothing to choose, because nothing finished (it said no weight decay had a
    finite score, though the pruned ones had)."""
    from wdlab.unanswered import ALL_DIVERGED, PRUNED_OR_DIVERGED, unanswered

    runs = [run("none", 0.0, s, 0.9, lr=0.01) for s in range(3)]
    runs += [run("decoupled", 0.1, s, 0.9 + 0.01 * s, lr=0.01) for s in range(3)]
    runs += [run("none", 0.0, s, math.nan, lr=1.0, status="diverged") for s in range(3)]
    runs += [run("decoupled", w, s, 0.6, lr=1.0, status="pruned") for w in (0.1, 1) for s in (0, 1)]
    sel = select(runs, "multiclass")
    said = {(u["mode"], u["lr"]): u["verdict"] for u in unanswered(runs, sel)}
    assert said == {("decoupled", 1.0): PRUNED_OR_DIVERGED, ("none", 1.0): ALL_DIVERGED}
