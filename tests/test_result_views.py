"""What a user sees of a result says what the numbers say: the "use wd" cell, a partial study's
verdict and run count, the notebook table, the figures a result has, weight decays that read
apart, and a pattern's own weight decay in the report. Each from a new-user trial (stop 36).
Built from hand-made runs (no training)."""

import itertools
import math
from dataclasses import replace
from html import escape

import pytest
from torch import nn

from test_selection import run, sweep_result
from wdlab.decay import DEFAULT_RULE
from wdlab.decay.rules import stored_table
from wdlab.pipelines import SweepResult
from wdlab.records import ALL_PRUNED, NOT_YET, use_text
from wdlab.report.html import headline, write_report
from wdlab.report.plots import _spaced_labels, _zero_position
from wdlab.report.text import short, use_cell, verdict_summary


def _loss_rows():
    """wd = 1.04 has the lowest mean validation loss and does not beat wd = 0 measurably."""
    res = sweep_result(table={0.0: [0.80, 0.81, 0.79], 0.55: [0.70] * 3, 1.04: [0.805, 0.80, 0.80]})
    res.config = {"train": {"select": "loss"}}
    res.select()
    return [s for s in res.selection if s["mode"] == "decoupled"]


def test_the_use_cell_names_the_best_mean_not_the_highest():
    """Where lower is better (loss, RMSE) the cell read "highest mean: 1", the worst."""
    (s,) = _loss_rows()
    assert s["higher"] is False and s["best_mean_wd"] == 1.04 and not s["better_than_zero"]
    assert use_cell(s) == "0 (best mean at wd 1.04)"


def test_swept_weight_decays_read_apart():
    """Two significant digits printed 1.04 as "1" and 0.0101 and 0.0104 both as "0.01"."""
    assert short(1.04) != short(1.06) and short(0.0101) != short(0.0104)
    assert (short(100), short(0.0316228), short(3.2e-5), short(0.0)) == (
        "100",
        "0.0316",
        "3.2e-5",
        "0",
    )
    pos = [0.55, 0.56, 1.04, 1.06]
    ticks = [_zero_position(pos), *pos]
    labels = _spaced_labels(ticks, ["0", *map(short, pos)])
    shown = [math.log10(t) for t, lab in zip(ticks, labels, strict=True) if lab]
    assert labels[0] == "0" and labels[-1] == "1.06"
    gap = (math.log10(ticks[-1]) - math.log10(ticks[0])) / 12
    assert all(b - a >= gap for a, b in itertools.pairwise(shown))
    starred = _spaced_labels(ticks, ["0", *map(short, pos)], always=[3])  # 1.04: the answer
    assert starred[3] == "1.04" and starred[-1] == "1.06"  # what is starred is named
    wide = [10.0**-k for k in range(6, 0, -1)]  # a decade apart: every label shown
    assert all(_spaced_labels([_zero_position(wide), *wide], ["0", *map(short, wide)]))


def _partial(pending=6, failed=1, swept=(0.0, 0.01, 0.1)):
    """Only the wd = 0 runs finished (stored under the mode, as a sweep stores them)."""
    runs = [run("decoupled", 0.0, seed, v) for seed, v in enumerate([0.8, 0.81, 0.79])]
    res = SweepResult(runs=runs, name="flaky", task="multiclass")
    res.config = {"decay": {"weight_decay": list(swept)}}
    res.data = {"name": "wine"}
    res.counts = {"pending": pending, "running": 0, "done": 3, "failed": failed}
    res.select()
    return res


def test_a_partial_study_says_its_weight_decays_are_not_trained_yet():
    """It said "no weight decay > 0 was swept: give some (--wd …)" of a grid that swept them
    and had not trained them yet."""
    res = _partial()
    (s,) = res.selection
    assert s["verdict"] == NOT_YET and not s["better_than_zero"]
    assert use_text(s) == "no wd > 0 finished yet, none compared with wd = 0"
    assert verdict_summary(res.selection).startswith("no weight decay > 0 finished yet")
    assert "swept" not in repr(res)
    whole = _partial(pending=0, failed=0, swept=(0.0,))  # a whole study that swept none
    assert "was swept" in whole.selection[0]["verdict"]
    assert "no wd > 0 swept" in repr(whole)


def test_a_partial_pruned_study_never_says_every_weight_decay_was_pruned_too_soon():
    """A pruned sweep killed while its one surviving cell trained said "every weight decay > 0
    was pruned at a rung" of its (mode, lr); that cell was still training. Where every wd > 0
    of a (mode, lr) is stored pruned and another (mode, lr) is unfinished, it is said."""
    zero = [
        run("decoupled", 0.0, s, v, lr=lr) for lr in (0.01, 0.1) for s, v in enumerate([0.8, 0.81])
    ]
    pruned = [
        run("decoupled", 0.1, s, 0.5, status="pruned", lr=lr) for lr in (0.01, 0.1) for s in (0, 1)
    ]
    res = SweepResult(runs=zero + pruned, name="halved", task="multiclass")
    res.config = {"decay": {"weight_decay": [0.0, 0.001, 0.1]}}  # 0.001 of lr 0.01 trains still
    res.runs += [run("decoupled", 0.001, s, 0.8, lr=0.1, status="pruned") for s in (0, 1)]
    res.counts = {"pending": 0, "running": 2, "done": 4, "pruned": 6}
    verdicts = {s["lr"]: s["verdict"] for s in res.select()}
    assert verdicts[0.01] == NOT_YET and verdicts[0.1] == ALL_PRUNED
    res.counts = {"pending": 0, "running": 0, "done": 4, "pruned": 8}  # whole: as it reads
    res.runs += [run("decoupled", 0.001, s, 0.5, status="pruned") for s in (0, 1)]
    assert {s["verdict"] for s in res.select()} == {ALL_PRUNED}


def test_a_partial_pruned_study_without_a_row_says_none_finished_yet():
    """The same without wd = 0 in the grid (the ``none`` reference alone): the (mode, lr) has
    no row, and its line in show, the report and ``unanswered`` said "every weight decay > 0
    was pruned" while its surviving cell trained."""
    zero = [run("none", 0.0, s, v) for s, v in enumerate([0.8, 0.81])]
    pruned = [run("decoupled", 0.1, s, 0.5, status="pruned") for s in (0, 1)]
    res = SweepResult(runs=zero + pruned, name="halved", task="multiclass")
    res.config = {"decay": {"weight_decay": [0.001, 0.1]}}
    res.counts = {"pending": 0, "running": 2, "done": 2, "pruned": 2}  # 0.001 trains still
    res.select()
    (line,) = res.unanswered
    assert line["verdict"] == NOT_YET and NOT_YET in res.table()
    res.counts = {"pending": 0, "running": 0, "done": 2, "pruned": 4}  # whole: all pruned
    res.runs += [run("decoupled", 0.001, s, 0.5, status="pruned") for s in (0, 1)]
    res.select()
    assert [s["verdict"] for s in res.unanswered] == [ALL_PRUNED]


def test_every_view_counts_the_same_runs(tmp_path):
    """The report said "2 runs", the repr "2 runs (6 pending, …)" and ``ls`` 9."""
    res = _partial()
    assert "10 runs (6 pending, 3 done, 1 failed)" in repr(res)
    html = write_report(res, tmp_path)["report"].read_text()
    assert "10 runs (6 pending, 3 done, 1 failed)" in html
    note = res.partial_note()
    assert note and note in res._repr_html_() and "10 runs" in res._repr_html_()


def test_the_notebook_table_is_the_reports():
    res = sweep_result()
    nb = res._repr_html_()
    for head in ("use wd", "val at wd = 0", "test at wd = 0", "verdict", "seeds"):
        assert head in nb
    assert "<img" not in nb and len(nb) < 5000


def test_a_figure_the_result_does_not_have_is_refused():
    """``plot("rungs")`` drew a successive-halving figure for a sweep never pruned."""
    res = sweep_result(lrs=(0.01, 0.001))
    with pytest.raises(
        ValueError, match="no 'rungs' figure for this result: it needs a sweep pruned"
    ):
        res.plot("rungs")
    assert res.plot("heatmap") is not None  # listed now, as the report draws it
    with pytest.raises(ValueError, match=r"valid: .*heatmap"):
        res.plot("pie")
    partial = _partial()  # its wd > 0 are swept, not trained yet: said so
    with pytest.raises(ValueError, match=r"among its finished runs: partial: 7 of 10 runs"):
        partial.plot("wd")


def test_the_report_shows_a_patterns_own_weight_decay(tmp_path):
    """With group_wd taking every decaying tensor, the runs of every wd > 0 train alike; the
    report's table said only "decays: yes". Read from the table the study stores, patterns in
    the order given (its config is stored with sorted keys: a new-user trial saw the report
    match the patterns in that order, not the one that trained)."""
    res = sweep_result()
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="the pattern matches no decaying parameter"):
        stored_table(model, DEFAULT_RULE, {"*": 0.5, "2.*": 0.01})  # the first takes all
    res.decay_table = stored_table(model, DEFAULT_RULE, {"3.*": 0.01, "*": 0.5})
    html = write_report(res, tmp_path)["report"].read_text()
    assert "0.01 <br>(group_wd 3.*)" in html and html.count("0.5 <br>(group_wd *)") == 2
    assert "train alike" in html and "3 tensors (" in html


def test_load_study_is_where_a_notebook_looks_first():
    """``wdlab.load_study`` raised AttributeError; it lives in ``wdlab.pipelines`` (a trial)."""
    import wdlab
    import wdlab.pipelines

    assert wdlab.load_study is wdlab.pipelines.load_study and "load_study" in dir(wdlab)


def test_early_stopped_runs_show_their_best_epoch_and_the_epochs_they_trained():
    """A new-user trial: early stopping was said only as a total ("stopped 1 run"); which run
    stopped, and where, was nowhere in the table."""
    from dataclasses import replace

    from wdlab.report.text import experiment_table

    res = sweep_result()
    assert "epochs" not in experiment_table(res).splitlines()[0]  # no early stopping: no column
    stopped = replace(res.runs[0], best=res.runs[0].best | {"epoch": 2, "at": {}}, epochs=5)
    stopped.best["at"] = {"val_acc": 0.5}
    res.runs[0] = stopped
    lines = experiment_table(res).splitlines()
    assert lines[0].split()[-1] == "epochs" and lines[2].split()[-1] == "3/5"
    assert any("epochs: the epochs trained by then / in all" in line for line in lines)


def test_every_result_reads_in_a_notebook():
    """Found by a new-user trial: an audit, a transfer, a timescale check (test_timescale.py)
    and a search, left
    as a cell's last line, printed a dataclass of hundreds to 39,000 characters on one line.
    Each has a one-line repr saying what it found, and its printed table as HTML (escaped)."""
    import optuna
    import torch

    import wdlab

    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    report = wdlab.audit(torch.optim.AdamW(model.parameters(), weight_decay=0.1), model)
    t = wdlab.transfer(0.1, 1e-3, 50_000, 128, to_n=100_000)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("wd", 0, 1), n_trials=2)
    search = wdlab.optuna.SearchResult(study, study.trials, "val_acc", "maximize")
    views = [
        (report, "AdamW: 4 of 4 tensors decay; "),
        (t, f"Transfer({t.substituted})"),
        (search, "SearchResult("),
    ]
    for value, head in views:
        assert "\n" not in repr(value) and len(repr(value)) < 300 and head in repr(value)
        html = value._repr_html_()
        assert html.startswith("<pre>") and escape(str(value)) in html
    assert str(t).startswith("weight decay: 0.1 → 0.05\nformula:")
    empty = optuna.create_study()  # no trial, then one without parameters (a checker)
    assert repr(wdlab.optuna.SearchResult(empty, [], "val_acc", "maximize")).endswith(
        ": 0 trials; no complete trial)"
    )
    empty.optimize(lambda trial: 0.5, n_trials=1)
    assert repr(wdlab.optuna.SearchResult(empty, empty.trials, "val_acc", "maximize")).endswith(
        "1 trial (1 complete); best val_acc 0.5 (trial 0))"
    )


def test_a_partial_study_lists_every_setting_of_its_grid():
    """A browser trial: a study killed before any decoupled run finished said "the 1 (mode,
    lr) setting compared …" of a grid of 2 modes: the other had no row and no count."""
    res = _partial()
    res.config |= {"decay": {"weight_decay": [0.0, 0.01], "modes": ["decoupled", "l2"]},
                   "train": {"lr": [0.01]}}  # fmt: skip
    res.select()
    assert [(s["mode"], s["verdict"]) for s in res.unanswered] == [("l2", NOT_YET)]
    _, rows = headline(res)
    assert [r[0] for r in rows] == ["decoupled", "l2"]


def test_rows_with_nothing_chosen_keep_each_cell_under_its_column():
    """A browser trial: with a τ_epoch column, "every run diverged: nothing to choose" stood
    under τ_epoch and the verdict cell read "—"; a diverged run's epochs said the planned 20."""
    gain = {0.0: [0.80, 0.81, 0.79], 1e-4: [0.90, 0.92, 0.91]}  # decay wins: τ_epoch shown
    res = sweep_result(gain, lrs=(0.01, 0.1))
    res.runs = [
        replace(r, status="diverged", diverged_epoch=2, epochs=20) if r.config.lr == 0.1 else r
        for r in res.runs
    ]
    res.select()
    head, rows = headline(res)
    assert "τ_epoch" in head
    (row,) = [r for r in rows if r[:2] == ["decoupled", "0.1"]]
    assert row[head.index("verdict")] == "every run diverged: nothing to choose"
    assert row[head.index("τ_epoch")] == "—"
    lines = res.table().splitlines()  # the terminal's table too (a checker)
    at = [ln for ln in lines if ln.startswith("mode ")][-1].index("verdict")  # the answer's
    (line,) = [ln for ln in lines if ln.startswith("decoupled    0.1 ")]
    assert line.index("every run diverged") == at
    res.selection = []  # the table of every run: a diverged run's epochs before it diverged
    head, rows = headline(res)
    assert {r[head.index("epochs")] for r in rows if r[4] == "diverged"} == {"2, diverged"}


def test_the_answer_tables_numbers_name_their_weight_decay_where_it_is_not_the_one_to_use():
    """A browser trial: "use wd 0" rows showed the chosen weight decay's val and test beside
    it, read as wd = 0's (only the verdict's small print said whose)."""
    res = sweep_result()  # no measurable gain: use wd 0; the numbers are wd 1e-4's
    head, rows = headline(res)
    (row,) = [r for r in rows if r[0] == "decoupled"]
    whose = f" (wd {short(1e-4)})"
    assert row[head.index("val accuracy")].endswith(whose)
    assert row[head.index("test accuracy (mean ± std)")].endswith(whose)
    assert not row[head.index("val at wd = 0")].endswith(")")


def test_a_partial_studys_repr_and_print_say_it_is_not_final():
    """A new-user trial: ``repr(result)`` and ``print(result)`` of a partial study gave "use wd
    0" as if final (``wdlab show`` and the notebook view said PARTIAL STUDY)."""
    res = _partial()
    assert "; partial, not final: " in repr(res)
    assert str(res).startswith("PARTIAL STUDY (7 of 10 runs unfinished): the answer below is")
    whole = _partial(pending=0, failed=0, swept=(0.0,))
    assert "not final" not in repr(whole) and "PARTIAL" not in str(whole)
