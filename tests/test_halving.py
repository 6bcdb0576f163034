"""Successive halving inside the batch (``prune=``): rungs, the decision at each rung, pruned
runs stored ``pruned`` at their rung, survivors equal to the unpruned sweep's runs, the compute
that drops, decisions that do not depend on how the grid was batched or who trained it (a
resumed, a killed, a concurrent or a Ray sweep), the selection among finished runs, the rung
figure, and bad input refused in one line with nothing stored.

The survivors are compared with the unpruned sweep's runs norm-wise, within ``per_steps(T)``
(:mod:`numerics`): the pruned rows leave the batch, and the batched kernels then round the
others' numbers as they round a batch of fewer rows (tests/test_compaction.py says why no bits
are promised there). A resumed or killed sweep continues the same batches from their saved
state: there the numbers are the uninterrupted sweep's, bit for bit.
"""

import itertools
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import wdlab
from numerics import per_steps, rel_dist
from wdlab.cli import main
from wdlab.config import validate
from wdlab.halving import Prune, decide, setting
from wdlab.pipelines import load_study, run_sweep
from wdlab.pipelines.experiment import read_config
from wdlab.records import ALL_PRUNED, Curves, RunConfig, RunResult
from wdlab.report.text import short
from wdlab.selection import Criterion

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}

GRID = {
    "data": {"source": "wine"},
    "model": {"kind": "mlp", "hidden": [8]},
    "train": {
        "optimizer": "adam",
        "lr": [0.003, 0.03],
        "epochs": 27,
        "eval_every": 3,
        "seeds": [0, 1, 2],
        "prune": True,
    },
    "decay": {"modes": ["decoupled"], "weight_decay": [0, 1e-3, 1e-2, 1e-1, 1.0]},
}
FLAGS = [
    "--data", "wine", "--model", "mlp", "--hidden", "8", "--optimizer", "adam",
    "--lr", "0.003,0.03", "--mode", "decoupled", "--wd", "0,1e-3,1e-2,1e-1,1",
    "--seeds", "3", "--epochs", "27", "--eval-every", "3",
]  # fmt: skip


def _grid(**train):
    return {**GRID, "train": {**GRID["train"], **train}}


def _rows(folder, sql):
    with sqlite3.connect(Path(folder) / "study.db", timeout=30) as db:
        return db.execute(sql).fetchall()


# -- rungs and the decision -------------------------------------------------------------------


def test_rungs():
    assert Prune().rungs(27) == (1, 3, 9)
    assert Prune().rungs(100) == (4, 11, 33)  # 100/27, 100/9, 100/3 rounded
    assert Prune().rungs(10) == (1, 3)
    assert Prune(eta=2, first_rung=5).rungs(40) == (5, 10, 20)
    assert Prune(eta=4, first_rung=3).rungs(12) == (3,)
    assert setting(True) == Prune() and setting(False) is None
    assert setting({"eta": 2}) == Prune(eta=2)
    with pytest.raises(ValueError, match="eta must be an integer >= 2"):
        Prune(eta=1)
    with pytest.raises(ValueError, match="not before the last epoch"):
        Prune(first_rung=10).rungs(10)
    with pytest.raises(ValueError, match="the training is 1 epoch; train 2 or more"):
        Prune(first_rung=2).rungs(1)  # not "choose a first rung below 1"
    with pytest.raises(ValueError, match="no rung before the last"):
        Prune().rungs(2)
    # on evaluations (after epochs 1, 4, 7, … with eval_every 3): moved to the next one
    assert Prune().rungs(27, 3) == (1, 4, 10) and Prune().rungs(100, 10) == (11, 41)
    assert Prune(eta=np.int64(2)).eta == 2 and type(Prune(eta=np.int64(2)).eta) is int
    assert setting(0) is None
    with pytest.raises(ValueError, match="and one every 10 epochs leaves none before the last"):
        Prune(first_rung=5).rungs(10, 10)
    # a huge eta: the rungs end before eta**k exceeds a float (before: OverflowError)
    with pytest.raises(ValueError, match="27 epochs leave no rung before the last"):
        Prune(eta=10**5).rungs(27)
    assert Prune(eta=10**5, first_rung=2).rungs(27) == (2,)


def _run(mode, lr, wd, seed, vals, status="pending"):
    """A run waiting at a rung with validation accuracy curve ``vals`` (one per evaluation)."""
    epochs = list(range(len(vals)))
    curves = Curves(epochs, epochs, {"val_acc": list(vals), "val_loss": [1.0] * len(vals)})
    cfg = RunConfig(mode=mode, weight_decay=wd, lr=lr, optimizer="adam", seed=seed)
    final = {"val_acc": vals[-1], "test_acc": vals[-1]}
    return RunResult(cfg, curves, final, status=status, epochs=len(vals))


def test_the_decision_keeps_the_best_third_the_reference_and_those_within_one_se():
    """Six cells ranked on the mean over three seeds: the best ⌈6/3⌉ = 2 go on, a third within
    one (paired) standard error of the best too, wd = 0 always, a cell with a diverged seed
    never; all seeds of a cell go on or stop together."""
    acc = {  # wd: the three seeds' accuracies at the rung
        1e-4: (0.90, 0.92, 0.94),
        1e-3: (0.89, 0.91, 0.93),  # in the best two
        1e-2: (0.86, 0.92, 0.94),  # mean 0.9067, 0.0133 below the best; paired SE 0.0133
        1e-1: (0.70, 0.72, 0.74),
        1.0: (0.50, 0.52, 0.54),
        3.0: (0.99, 0.99, None),  # one seed diverged
    }
    waiting = [
        _run("decoupled", 0.01, wd, s, [0.5, a])
        for wd, accs in acc.items()
        for s, a in enumerate(accs)
        if a is not None
    ]
    waiting += [_run("none", 0.01, 0.0, s, [0.5, 0.3]) for s in range(3)]
    diverged = [_run("decoupled", 0.01, 3.0, 2, [0.5, math.nan], status="diverged")]
    c = Criterion("acc", "accuracy", True)
    detail, pruned = decide(diverged, waiting, 2, Prune(), c)
    why = {(cell["mode"], cell["weight_decay"]): cell["why"] for cell in detail["cells"]}
    assert why == {
        ("decoupled", 1e-4): "kept: best",
        ("decoupled", 1e-3): "kept: in the best 1/3",
        ("decoupled", 1e-2): "kept: within one standard error of the best",
        ("decoupled", 1e-1): "pruned: not in the best 1/3",
        ("decoupled", 1.0): "pruned: not in the best 1/3",
        ("decoupled", 3.0): "pruned: a seed diverged or has no finite score",
        ("none", 0.0): "kept: wd = 0 reference",
    }
    assert sorted((c.weight_decay, c.seed) for c in pruned) == sorted(
        [(w, s) for w in (1e-1, 1.0) for s in range(3)] + [(3.0, 0), (3.0, 1)]
    )
    assert (detail["kept"], detail["pruned"]) == (4, 3)


@pytest.mark.parametrize("seeds, right", [(3, 18), (5, 19)])
def test_one_seed_one_example_behind_is_within_one_se_whatever_the_rounding(seeds, right):
    """A new-user trial: a cell whose one seed has one validation example fewer right than the
    best is exactly one paired SE behind it, for any count of seeds; the float sums came out
    1.9e-17 over (pruned) or under (kept) at random. Rounding decides it no more: kept."""
    n = 36  # validation examples; accuracies as float32 gives them
    best, behind = float(np.float32(right / n)), float(np.float32((right - 1) / n))
    waiting = [_run("decoupled", 0.01, 1e-4, s, [0.5, best]) for s in range(seeds)]
    waiting += [_run("decoupled", 0.01, 1e-3, s, [0.5, behind if s == 0 else best])
                for s in range(seeds)]  # fmt: skip
    waiting += [_run("decoupled", 0.01, 1e-1, s, [0.5, 0.2]) for s in range(seeds)]
    detail, _ = decide([], waiting, 2, Prune(), Criterion("acc", "accuracy", True))
    (cell,) = [c for c in detail["cells"] if c["weight_decay"] == 1e-3]
    assert abs(cell["score"] - best) > cell["se"]  # the rounding the test is about
    assert cell["why"] == "kept: within one standard error of the best"


@pytest.mark.parametrize("seeds", [1, 3])
def test_an_exact_tie_with_the_best_goes_to_the_tie_break_whatever_the_seeds(seeds):
    """A new-user trial: cells tying the best exactly were pruned with one seed (no standard
    error) but all kept with three whose seeds agreed (paired SE 0, and 0 <= 0), so a rung of
    six tied cells pruned nothing. An SE of 0 measured no noise to protect from: the tie goes
    to the tie-break in both, the cut keeps ⌈6/3⌉ = 2, the smallest weight decays."""
    wds = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    waiting = [_run("decoupled", 0.01, wd, s, [0.5, 0.9111]) for wd in wds for s in range(seeds)]
    detail, pruned = decide([], waiting, 2, Prune(), Criterion("acc", "accuracy", True))
    why = {cell["weight_decay"]: cell["why"] for cell in detail["cells"]}
    assert [why[w] for w in wds] == ["kept: best", "kept: in the best 1/3"] + [
        "pruned: not in the best 1/3"
    ] * 4
    assert len(pruned) == 4 * seeds


def test_with_early_stopping_a_cell_is_ranked_at_its_best_epoch_so_far():
    """The selection's epoch rule: with early stopping a run's score is its best validation
    so far, not its last."""
    waiting = [_run("decoupled", 0.01, 1e-3, s, [0.9, 0.6]) for s in range(3)]
    waiting += [_run("decoupled", 0.01, 1e-2, s, [0.7, 0.8]) for s in range(3)]
    waiting += [_run("decoupled", 0.01, 1e-1, s, [0.5, 0.5]) for s in range(3)]
    last = decide([], waiting, 2, Prune(), Criterion("acc", "accuracy", True))[0]
    best = decide([], waiting, 2, Prune(), Criterion("acc", "accuracy", True, True))[0]
    assert last["cells"][0]["weight_decay"] == 1e-2 and best["cells"][0]["weight_decay"] == 1e-3


def test_a_cell_that_finished_before_the_rung_is_listed_not_ranked():
    """A new-user trial: with early stopping, a cell whose every seed stopped before a rung
    was missing from the decision, so the decision did not account for every cell. It is not
    ranked (as Optuna's pruners rank only the trials that reached the rung, and n in ⌈n/η⌉
    counts the cells ranked), but it is listed with its score and why; a cell with one seed
    still training is ranked on all its seeds."""
    c = Criterion("acc", "accuracy", True, True)
    waiting = [_run("decoupled", 0.01, wd, s, [0.5, a]) for wd, a in ((1e-4, 0.9), (1e-3, 0.8),
               (1e-2, 0.7)) for s in range(2)]  # fmt: skip
    waiting.append(_run("decoupled", 0.01, 1.0, 1, [0.5, 0.95]))  # seed 0 stopped early
    finished = [_run("decoupled", 0.01, 1.0, 0, [0.97], status="done")]
    finished += [_run("decoupled", 0.01, 0.1, s, [0.6], status="done") for s in range(2)]
    finished += [_run("decoupled", 0.01, 3.0, 0, [math.nan], status="diverged")]
    finished += [_run("none", 0.01, 0.0, 0, [0.5, 0.6], status="done")]  # stopped at the rung
    detail, pruned = decide(finished, waiting, 2, Prune(), c)
    why = {cell["weight_decay"]: (cell["why"], cell["runs"]) for cell in detail["cells"]}
    assert why == {
        1.0: ("kept: best", 2),  # ranked on both seeds: 0.96
        1e-4: ("kept: in the best 1/3", 2),  # ⌈4/3⌉ = 2 of the 4 cells ranked
        1e-3: ("pruned: not in the best 1/3", 2),
        1e-2: ("pruned: not in the best 1/3", 2),
        0.1: ("finished by the rung (stopped early): not ranked", 2),
        3.0: ("finished by the rung (diverged): not ranked", 1),
        0.0: ("finished by the rung (stopped early): not ranked", 1),
    }
    assert (detail["kept"], detail["pruned"], detail["finished"]) == (2, 2, 3)
    scores = [c["score"] for c in detail["cells"][-3:]]  # wd 0.1, 3 (diverged: null), wd 0
    assert scores[1] is None and scores[0] == scores[2] == pytest.approx(0.6)
    assert sorted((c.weight_decay, c.seed) for c in pruned) == [(1e-3, 0), (1e-3, 1),
                                                                (1e-2, 0), (1e-2, 1)]  # fmt: skip


# -- a pruned sweep -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The pruned sweep and the same sweep unpruned (and the unpruned one's per-epoch steps)."""
    root = tmp_path_factory.mktemp("halving")
    pruned = run_sweep(GRID, root / "pruned")
    full = run_sweep(_grid(prune=False), root / "full")
    return pruned, full, root


def test_pruned_runs_are_stored_pruned_at_their_rung(swept):
    pruned, _, root = swept
    decisions = {d["rung"]: d for d in pruned.halving["decisions"]}
    assert pruned.halving["rungs"] == [1, 3, 9] and set(decisions) <= {1, 3, 9}
    stopped = [r for r in pruned.runs if r.status == "pruned"]
    assert stopped and pruned.counts["pruned"] == len(stopped)
    for r in stopped:
        cell = next(
            c
            for d in decisions.values()
            for c in d["cells"]
            if (c["lr"], c["weight_decay"]) == (r.config.lr, r.config.weight_decay)
            and c["why"].startswith("pruned")
        )
        rung = next(d["rung"] for d in decisions.values() if cell in d["cells"])
        assert r.epochs == rung and len(r.curves["train_loss"]) == rung
        assert r.curves.eval_epoch[-1] == rung - 1  # evaluated at the rung, then stopped
    for (lr, wd), rs in _cells(pruned.runs).items():  # all seeds together
        assert len({r.status for r in rs}) == 1, (lr, wd)
        if wd == 0:
            assert {r.status for r in rs} == {"done"}  # the reference is never pruned
    stored = _rows(root / "pruned", "SELECT status, epochs FROM runs WHERE status = 'pruned'")
    assert sorted(e for _, e in stored) == sorted(r.epochs for r in stopped)
    df = pruned.to_pandas()  # the epochs each run trained, a pruned one's its rung
    assert sorted(df[df.status == "pruned"].epochs) == sorted(r.epochs for r in stopped)
    assert set(df[df.status == "done"].epochs) == {27}


def _cells(runs):
    out = {}
    for r in runs:
        out.setdefault((r.config.lr, r.config.weight_decay), []).append(r)
    return out


def test_with_early_stopping_survivors_equal_the_unpruned_sweeps_runs(tmp_path):
    """Early stopping counts evaluations: a rung between two (an evaluation the unpruned sweep
    does not make) counted towards a survivor's patience and could become its best epoch.
    Rungs fall on evaluations then, and every survivor (the wd = 0 reference included) stops
    where it stops unpruned, with its numbers."""
    grid = _grid(early_stopping=True, patience=2, lr=[0.03, 0.1], epochs=30, eval_every=4)
    pruned = run_sweep(grid, tmp_path / "p")
    full = run_sweep({**grid, "train": {**grid["train"], "prune": False}}, tmp_path / "f")
    assert pruned.halving["rungs"] == [1, 5, 13]  # 30/27, 30/9, 30/3 on the evaluations
    by = {(r.config.lr, r.config.weight_decay, r.config.seed): r for r in full.runs}
    survivors = [r for r in pruned.runs if r.status != "pruned"]
    assert survivors and any(r.epochs < 30 for r in survivors)  # early stopping stopped some
    for r in survivors:
        other = by[(r.config.lr, r.config.weight_decay, r.config.seed)]
        assert (r.epochs, r.curves.eval_epoch) == (other.epochs, other.curves.eval_epoch)
        assert abs(r.final["val_loss"] - other.final["val_loss"]) <= per_steps(30) * abs(
            other.final["val_loss"]
        )


def test_survivors_equal_the_unpruned_sweeps_runs(swept):
    """Their numbers, and their best epoch: rungs 3 and 9 fall between two evaluations (every
    3 epochs from the first). The extra evaluation there is for the decision; a survivor took
    its best epoch from it (found by a new-user trial). It stays in the curves, which the rung
    figure draws through it."""
    pruned, full, root = swept
    by = {(r.config.lr, r.config.weight_decay, r.config.seed): r for r in full.runs}
    survivors = [r for r in pruned.runs if r.status == "done"]
    stored = {_key(r): r for r in load_study(root / "pruned").runs}
    assert survivors
    for r in survivors:
        other = by[(r.config.lr, r.config.weight_decay, r.config.seed)]
        assert r.epochs == other.epochs == 27
        assert other.curves.eval_epoch == [*range(0, 27, 3), 26]
        for mine in (r, stored[_key(r)]):
            assert mine.curves.eval_epoch == sorted({*other.curves.eval_epoch, 2, 8})
            assert mine.best["epoch"] == other.best["epoch"]
        d = rel_dist(r.curves["train_loss"], other.curves["train_loss"])
        assert d <= per_steps(27), (r.config, d)
        for key in ("val_loss", "test_loss", "train_loss"):
            assert abs(r.final[key] - other.final[key]) <= per_steps(27) * abs(other.final[key])


def test_a_rung_between_evaluations_is_never_a_survivors_best_epoch(tmp_path):
    """Digits overfits within a few epochs: the lowest validation loss of every survivor is
    at a rung (epochs 3 and 6), evaluated for the decision only (every 10 epochs otherwise).
    Its best epoch was taken from there, 2 where the unpruned sweep says 10 or 11 (found by a
    new-user trial); it is the unpruned sweep's now."""
    grid = {
        "data": {"source": "digits"},
        "model": {"kind": "mlp", "hidden": [128]},
        "train": {"optimizer": "adam", "lr": [0.01], "epochs": 12, "eval_every": 10,
                  "batch_size": 32, "seeds": [0, 1], "prune": True, "prune_eta": 2,
                  "prune_rung": 3},
        "decay": {"modes": ["decoupled"], "weight_decay": [0, 1e-4, 1e-3]},
    }  # fmt: skip
    pruned = run_sweep(grid, tmp_path / "p")
    unpruned = {k: v for k, v in grid["train"].items() if not k.startswith("prune")}
    full = run_sweep({**grid, "train": unpruned}, tmp_path / "f")
    assert pruned.halving["rungs"] == [3, 6]
    by = {_key(r): r for r in full.runs}
    survivors = [r for r in pruned.runs if r.status == "done"]
    at_rung = 0
    for r in survivors:
        loss = r.curves["val_loss"]
        at_rung += r.curves.eval_epoch[min(range(len(loss)), key=loss.__getitem__)] in (2, 5)
        assert r.best["epoch"] == by[_key(r)].best["epoch"] in (0, 10, 11)
    assert survivors and at_rung == len(survivors)  # the case the test is about
    # a pruned run has no unpruned twin: its best epoch is its curve's lowest, rungs counted
    # (it said 0 for a curve lowest at a rung, found by a later new-user trial)
    stopped = [r for r in pruned.runs if r.status == "pruned"]
    for r in stopped:
        loss = r.curves["val_loss"]
        assert r.best["epoch"] == r.curves.eval_epoch[min(range(len(loss)), key=loss.__getitem__)]
    assert any(r.best["epoch"] in (2, 5) for r in stopped)  # the case it is about


def test_compute_drops_with_the_pruned_runs(swept):
    pruned, full, _ = swept
    comp = pruned.halving["compute"]
    trained = sum(r.epochs for r in pruned.runs)
    assert comp["configuration_epochs"] == trained < comp["full_grid_epochs"] == 27 * 30
    assert comp["row_steps"] == trained  # full batches: one step an epoch
    assert full.halving["compute"]["fraction"] == 1.0
    assert "compute: " in pruned.table() and "successive halving" in pruned.table()


def test_selection_is_among_finished_runs_and_says_so(swept):
    pruned, _, _ = swept
    rule = wdlab.selection.selection_rule(pruned.selection)
    n = sum(s["pruned"] for s in pruned.selection)
    assert n and f"successive halving stopped {n} mode × lr × weight-decay cells at a rung" in rule
    finished = {(r.config.lr, r.config.weight_decay) for r in pruned.runs if r.status == "done"}
    for s in pruned.selection:
        assert (s["lr"], s["weight_decay"]) in finished or s["weight_decay"] == 0
        m = sum(w > 0 for lr, w in _cells(pruned.runs) if lr == s["lr"])
        assert s["level"] == pytest.approx(0.05 / m)  # pruned ones count in the Bonferroni m


def test_the_report_draws_the_rungs(swept, tmp_path):
    root = swept[2]
    assert main(["report", str(root / "pruned"), "--out", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r" / "report.html").read_text()
    assert (tmp_path / "r" / "rungs.png").stat().st_size > 1000
    assert "Successive halving ranked the cells after 1, 3, 9 epochs" in html
    assert "configuration-epochs" in html
    assert "rungs" not in {n for n in os.listdir(tmp_path) if n.endswith(".png")}


def test_the_rung_figure_names_each_line_its_star_and_the_compute(swept):
    """A new-user trial: the compute used was only in the caption, lines were told apart by
    lr only, and ★s of several lrs at one point showed as one. Now the title says the
    compute, each line never pruned is named by its weight decay where it ends (the names
    moved apart, inside the axes), and each lr's legend entry names its ★."""
    from wdlab.report.figures import figure
    from wdlab.report.plots import answer_cells

    result = swept[0]
    ax = figure(result, "rungs").axes[0]
    comp = result.halving["compute"]
    assert ax.get_title().endswith(
        f"compute used: {comp['fraction']:.0%} of the full grid's configuration-epochs "
        f"({comp['configuration_epochs']:,} of {comp['full_grid_epochs']:,})"
    )
    done = {(r.config.lr, r.config.weight_decay) for r in result.runs if r.status == "done"}
    names = sorted(t.get_text() for t in ax.texts)
    assert names == sorted(f"wd {short(wd)}" for _, wd in done)
    heights = sorted(t.get_position()[1] for t in ax.texts)
    low, high = ax.get_ylim()
    assert all(b - a >= 0.044 * (high - low) for a, b in itertools.pairwise(heights))
    assert heights[-1] <= high
    labels = ax.get_legend_handles_labels()[1]
    for (_, lr), wd in answer_cells(result).items():  # each entry names the wds it draws
        kept = sorted(w for (r, w) in done if r == lr)
        entry = f"lr {short(lr)}: wd {', '.join(short(w) for w in kept[:4])}"
        entry += f", … ({len(kept)})" if len(kept) > 4 else ""
        assert f"{entry} never pruned, ★ wd {short(wd)}" in labels


def test_a_partial_pruned_studys_rung_figure_says_what_it_draws(swept, tmp_path):
    """Found by a new-user trial: on a pruned study killed part-way the rung figure had legend
    entries "trained to the end" for colours it did not draw, marked and named rungs not yet
    decided, counted only the cells drawn, and promised a ★ it did not draw. Here the last
    rung is undecided and the cells that go on are still training (stored pending)."""
    from wdlab.report.figures import figure

    out = tmp_path / "partial"
    shutil.copytree(swept[2] / "pruned", out)
    with sqlite3.connect(out / "study.db") as db:
        db.execute("DELETE FROM decisions WHERE rung = 9")
        db.execute("UPDATE runs SET status = 'pending' WHERE status = 'done'")
    db.close()
    result = load_study(out)
    assert result.partial and result.runs and all(r.status == "pruned" for r in result.runs)
    assert main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Successive halving ranked the cells after 1, 3 epochs" in html
    assert "The cells still training are not drawn (partial: " in html
    assert "★" not in html.split('id="fig-rungs"')[1].split("</figure>")[0]
    ax = figure(result, "rungs").axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert not any("never pruned" in label for label in labels)
    dashed = [line.get_xdata() for line in ax.lines if line.get_linestyle() == "--"]
    assert {float(x[0]) for x in dashed if len(x)} == {1.0, 3.0}  # the rungs decided, not 9


def test_the_wd_figure_draws_no_line_across_a_pruned_weight_decay(swept):
    """A weight decay with no finished run (pruned) is a gap in its line and band, not a
    segment drawn across it as if measured; the caption says what a gap is."""
    import dataclasses

    from wdlab.report.plots import answer_cells, criterion_of, wd_curve
    from wdlab.report.standard import STANDARD

    r = load_study(swept[2] / "pruned")
    lr = max(x.config.lr for x in r.runs)  # its middle weight decay made pruned, at a rung
    wds = sorted({x.config.weight_decay for x in r.runs if x.config.lr == lr})
    gone = wds[2]
    runs = [
        dataclasses.replace(x, status="pruned", curves=x.curves.upto(1))
        if (x.config.lr, x.config.weight_decay) == (lr, gone)
        else dataclasses.replace(x, status="done")
        for x in r.runs
    ]
    fig = wd_curve(runs, criterion_of(r), answer_cells(r))
    lines = [  # the validation lines: solid, each named by its (mode, lr)
        ln
        for ln in fig.axes[0].lines
        if ln.get_linestyle() == "-" and ln.get_label() != "validation"
        and not str(ln.get_label()).startswith("_")
    ]  # fmt: skip
    line = next(ln for ln in lines if f"lr {lr:g}" in ln.get_label() or len(lines) == 1)
    ys = dict(zip(line.get_xdata(), line.get_ydata(), strict=True))
    assert math.isnan(ys[gone]) and all(math.isfinite(ys[w]) for w in wds[1:] if w != gone)
    # the first swept weight decay pruned: no dotted segment from wd = 0 across it either
    first = [
        dataclasses.replace(x, status="pruned", curves=x.curves.upto(1))
        if x.config.weight_decay == wds[1]
        else dataclasses.replace(x, status="done")
        for x in r.runs
    ]
    drawn = wd_curve(first, criterion_of(r), answer_cells(r)).axes[0].lines
    assert not any(ln.get_linestyle() == ":" for ln in drawn)
    assert any(ln.get_linestyle() == ":" for ln in fig.axes[0].lines)  # drawn where measured
    (spec,) = [f for f in STANDARD if f.name == "wd_curve"]
    caption = spec.caption(dataclasses.replace(r, runs=runs))
    assert "A gap is a weight decay with no finished score" in caption


def test_the_model_of_a_pruned_run_says_it_was_pruned(swept):
    """Asked for a pruned run's model: one line saying it was pruned at its rung and that such
    weights are never kept (it said "not kept", which under keep="all" reads as a bug)."""
    r = load_study(swept[2] / "pruned")
    run = next(x for x in r.runs if x.status == "pruned")
    c = run.config
    with pytest.raises(ValueError, match=rf"was pruned at epoch {run.epochs}: its weights are ne"):
        r.model(c.seed, mode=c.mode, lr=c.lr, weight_decay=c.weight_decay)


def test_decisions_do_not_depend_on_the_batching(swept, tmp_path):
    """Batches of 5 configurations (a cell's seeds split across batches): the same decisions,
    the same runs pruned, the survivors' numbers the same to rounding."""
    pruned, _, root = swept
    small = run_sweep(GRID, tmp_path / "small", max_batch=5)
    assert _decisions(tmp_path / "small") == _decisions(root / "pruned")
    assert {_key(r): r.status for r in small.runs} == {_key(r): r.status for r in pruned.runs}
    by = {_key(r): r for r in pruned.runs}
    for r in small.runs:
        assert rel_dist(r.curves["train_loss"], by[_key(r)].curves["train_loss"]) <= per_steps(27)


def _key(r):
    return (r.config.lr, r.config.weight_decay, r.config.seed)


def _decisions(folder):
    """Each rung's cells with their fate (the scores may differ by rounding)."""
    out = {}
    for rung, detail in _rows(folder, "SELECT rung, detail FROM decisions ORDER BY rung"):
        cells = json.loads(detail)["cells"]
        out[rung] = sorted((c["lr"], c["weight_decay"], c["why"]) for c in cells)
    return out


def test_a_resumed_sweep_never_retrains_a_pruned_run(swept):
    _, _, root = swept
    before = _rows(root / "pruned", "SELECT key, status, attempts, final FROM runs ORDER BY key")
    again = run_sweep(GRID, root / "pruned")
    after = _rows(root / "pruned", "SELECT key, status, attempts, final FROM runs ORDER BY key")
    assert after == before and again.counts == load_study(root / "pruned").counts
    assert not (root / "pruned" / "checkpoints").exists()  # all removed, and their folder


def test_the_python_api_prunes_too(tmp_path):
    res = wdlab.sweep(
        "mlp",
        "wine",
        optimizer="adam",
        lr=[0.003, 0.03],
        weight_decay=[0, 1e-3, 1e-2, 1e-1, 1.0],
        seeds=3,
        epochs=27,
        eval_every=3,
        batch_size=None,
        prune=Prune(eta=3, first_rung=3),
        out=tmp_path / "s",
    )
    assert res.halving["rungs"] == [3, 9] and res.counts.get("pruned", 0) > 0


def test_a_run_that_diverged_before_a_rung_is_diverged_there_and_stops(tmp_path):
    """A NaN loss by the first rung: its run is stored ``diverged`` at that rung (not
    ``pruned`` on the score its NaN outputs happened to get), and a wd = 0 reference that
    diverged stops there too (it trained on to the last epoch)."""
    res = wdlab.sweep(
        "mlp", "wine", optimizer="sgd", modes=["decoupled"], lr=[0.01, 1e6],
        weight_decay=[0, 1e-3, 1e-2], seeds=2, epochs=12, batch_size=None,
        prune=Prune(eta=2, first_rung=2), out=tmp_path / "s",
    )  # fmt: skip
    blown = [r for r in res.runs if r.config.lr == 1e6]
    assert len(blown) == 6
    assert {(r.status, r.epochs) for r in blown} == {("diverged", 2)}
    assert all(r.diverged_epoch is not None for r in blown)
    assert {r.status for r in res.runs if r.config.lr == 0.01} <= {"done", "pruned"}


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--prune", "--prune-eta", "1"],
            "(--prune-eta): expected an integer >= 2, got 1",
        ),
        # a flag of a switch that is off, even at its default value (it ran unpruned)
        (["--prune-eta", "3"], "train.prune_eta / prune_rung set a successive halving that is off"),
        (["--patience", "10"], "train.patience = 10 sets an early stopping that is off"),
        (["--prune", "--prune-rung", "27"], "prune: the first rung (27 epochs) is not before"),
        (["--prune", "--epochs", "2"], "prune: 2 epochs leave no rung before the last"),
        (
            ["--prune", "--epochs", "1"],
            "prune: a rung falls between two epochs, and the training is 1 epoch; train 2 or more",
        ),
        (
            [
                "--prune",
                "--early-stopping",
                "--eval-every",
                "5",
                "--epochs",
                "6",
                "--prune-rung",
                "2",
            ],
            "a rung falls on an evaluation, and one every 5 epochs leaves none before the "
            "last of 6 epochs; evaluate more often",
        ),
        (["--prune", "--lr", "0.01", "--wd", "0,1e-2"], "prune: the grid has 1 cell to rank"),
        (["--prune", "--data", "seed-noise"], "ranks on the validation split, and the data has"),
        (  # it was ignored without a word (a new-user trial)
            ["--early-stopping", "--data", "seed-noise"],
            "early_stopping: each run stops at its best validation epoch, and the data has no",
        ),
    ],
)
def test_bad_pruning_is_one_line_and_stores_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "s"
    assert main(["sweep", *FLAGS, *extra, "--out", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and message in err[0], err
    assert not out.exists() or list(out.iterdir()) == []  # no store, no file


def test_a_first_rung_given_as_the_one_chosen_is_the_same_study(tmp_path, capsys):
    """A new-user trial: a pruned study rerun with ``--prune-rung`` set to the rung it had
    chosen from its epochs (the same rungs) was refused as "another study: train.prune_rung:
    0 stored, 1 now". It resumes the study (nothing trained again), either way round; a rung
    that moves the rungs is still another study."""
    small = ["--data", "wine", "--model", "linear", "--wd", "0,1e-3,1e-2,0.1", "--seeds", "1"]
    small += ["--epochs", "9", "--prune"]  # rungs after 1 and 3 epochs, chosen
    out = tmp_path / "s"
    assert main(["sweep", *small, "--out", str(out), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["halving"]["rungs"] == [1, 3]
    before = sqlite3.connect(out / "study.db").execute("SELECT id, attempts FROM runs").fetchall()
    assert main(["sweep", *small, "--prune-rung", "1", "--out", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["runs"] == first["runs"]
    after = sqlite3.connect(out / "study.db").execute("SELECT id, attempts FROM runs").fetchall()
    assert after == before  # nothing trained again
    assert main(["sweep", *small, "--prune-rung", "2", "--out", str(out)]) == 2
    assert "train.prune_rung: 0 stored, 2 now" in capsys.readouterr().err
    other = tmp_path / "given"  # the reverse: made with the rung given, rerun without it
    assert main(["sweep", *small, "--prune-rung", "1", "--out", str(other)]) == 0
    assert main(["sweep", *small, "--out", str(other)]) == 0


def test_a_file_that_turns_a_switch_off_keeps_its_settings_unused(tmp_path, capsys):
    """``prune = false`` beside ``prune_eta`` (and ``early_stopping = false`` beside
    ``patience``) turns pruning off in a file without deleting its settings (it was refused);
    a flag setting a switch that is off is still refused, as ``--prune-eta`` alone is."""
    file = tmp_path / "off.toml"
    file.write_text(
        '[data]\nsource = "wine"\n[model]\nkind = "linear"\n[decay]\nweight_decay = [0, 0.01]\n'
        "[train]\nepochs = 2\nprune = false\nprune_eta = 2\nearly_stopping = false\n"
        "patience = 5\n"
    )
    cfg = validate(read_config(file))  # the settings of a switch turned off are dropped
    assert not cfg.train.prune and cfg.train.prune_eta == 3 and cfg.train.patience == 10
    assert main(["sweep", str(file), "--out", str(tmp_path / "s"), "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert "rungs" not in done["halving"] and all(r["status"] == "done" for r in done["runs"])
    plain = tmp_path / "plain.toml"  # the same study without those lines: not another study
    plain.write_text(file.read_text().split("prune = false")[0])
    assert main(["sweep", str(plain), "--out", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == done["runs"]
    assert main(["sweep", str(file), "--prune-eta", "3", "--out", str(tmp_path / "t")]) == 2
    assert "set a successive halving that is off" in capsys.readouterr().err
    with pytest.raises(ValueError, match="set a successive halving that is off"):
        validate({"train": {"prune_eta": 2}})  # no switch named: refused as before


def test_a_first_rung_moved_onto_an_evaluation_is_said(tmp_path):
    """With early stopping a rung falls on an evaluation: a first rung of 2 with evaluations
    after epochs 1, 6, 11 is at 6, and a warning says so (it moved silently)."""
    with pytest.warns(UserWarning, match="the first rung moves from epoch 2 to 6"):
        res = wdlab.sweep("mlp", "wine", lr=0.01, weight_decay=[0, 1e-3, 1e-2, 1e-1],
                          epochs=12, early_stopping=True, eval_every=5,
                          prune={"first_rung": 2}, out=tmp_path / "s")  # fmt: skip
    assert res.halving["rungs"] == [6]


def test_a_pruned_sweep_that_stopped_nothing_says_so():
    """The compute line of a pruned sweep that kept every cell: the full grid's compute, and
    "stopped no cell" (it printed nothing, as for a sweep without pruning)."""
    from wdlab.report.text import compute_text

    comp = {"configuration_epochs": 36, "full_grid_epochs": 36, "row_steps": 72}
    comp |= {"full_grid_row_steps": 72, "fraction": 1.0}
    halving = {"compute": comp, "eta": 3, "rungs": [6], "decisions": [{"rung": 6, "pruned": 0}]}
    line = compute_text(halving)
    assert line.startswith("compute: 36 of the full grid's 36 configuration-epochs (100%)")
    assert line.endswith("successive halving (eta = 3, rungs after 6 epochs) stopped no cell")
    assert compute_text({"compute": comp}) == ""  # no pruning, the full grid: nothing to say
    halving["decisions"] = [{"rung": 6, "pruned": 1}]
    assert compute_text(halving).endswith("stopped 1 cell")


def test_a_rung_no_run_reached_is_said_so():
    """A new-user trial: with early stopping every run had stopped before the last rung (55),
    which then had no decision and no dashed line, while the compute line listed it as a rung
    after which halving ranked; it now says no run was training there (a partial study's
    rung still ahead: not reached yet)."""
    from wdlab.report.text import compute_text

    comp = {"configuration_epochs": 30, "full_grid_epochs": 60, "row_steps": 60}
    comp |= {"full_grid_row_steps": 120, "fraction": 0.5}
    decisions = [{"rung": r, "pruned": 1} for r in (4, 7, 19)]
    halving = {"compute": comp, "eta": 3, "rungs": [4, 7, 19, 55], "decisions": decisions}
    assert "rungs after 4, 7, 19, 55 epochs; 55: no run was training there) stopped 3 cells" in (
        compute_text(halving)
    )
    halving["compute"] = comp | {"finished_only": True}
    assert "55 epochs; 55: not reached yet)" in compute_text(halving)


def test_prune_takes_1_and_0_as_true_and_false():
    assert setting(1) == setting(True) == Prune() and setting(0) is setting(False) is None
    assert setting(np.int64(1)) == Prune()


def test_bad_pruning_in_python_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="eta must be an integer >= 2"):
        wdlab.sweep("mlp", "wine", epochs=9, prune={"eta": 1}, out=tmp_path / "s")
    with pytest.raises(ValueError, match="the grid has 1 cell to rank"):
        wdlab.sweep("mlp", "wine", weight_decay=[0, 1e-3], epochs=9, prune=True,
                    out=tmp_path / "s")  # fmt: skip
    assert not (tmp_path / "s" / "study.db").exists()


def test_a_study_of_schema_2_is_read_and_migrated(tmp_path):
    """A store of the previous schema (no pruned status, no epochs, no decisions) reads as it
    is, and a sweep migrates it in place: its runs kept, resumable."""
    from wdlab.store import SCHEMA_VERSION, Store, identify

    out = tmp_path / "s"
    cfg = _grid(prune=False, epochs=4, lr=[0.03], seeds=[0])
    run_sweep(cfg, out)
    db = sqlite3.connect(out / "study.db")
    db.executescript(
        "PRAGMA foreign_keys=OFF; BEGIN;"
        "CREATE TABLE old AS SELECT id, key, config, status, attempts, final, best, engine, "
        "diverged_epoch, seconds, error, updated, owner FROM runs;"
        "DROP TABLE runs; DROP TABLE decisions;"
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, config TEXT NOT "
        "NULL, status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', "
        "'done', 'diverged', 'failed')), attempts INTEGER NOT NULL DEFAULT 0, final TEXT, best "
        "TEXT, engine TEXT, diverged_epoch INTEGER, seconds REAL, error TEXT, updated REAL, "
        "owner TEXT); INSERT INTO runs SELECT * FROM old; DROP TABLE old; COMMIT;"
        "PRAGMA user_version = 2;"
    )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert identify(out / "study.db") == 2
    old = load_study(out)  # read-only: schema 2 as it is
    assert old.counts["done"] == len(old.runs) > 0 and all(r.epochs is None for r in old.runs)
    again = run_sweep(cfg, out)  # resumes: nothing retrained
    assert identify(out / "study.db") == SCHEMA_VERSION == 3
    assert [r.final for r in again.runs] == [r.final for r in old.runs]
    with Store(out) as store:
        assert store.decisions() == {} and store.counts()["done"] == len(old.runs)


# -- killed, concurrent, Ray ------------------------------------------------------------------


def _sweep_process(out, *extra):
    cmd = [sys.executable, "-m", "wdlab.cli", "sweep", *FLAGS, "--epochs", "243", "--prune",
           "--out", str(out), "--json", *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _everything(folder):
    return (
        _rows(folder, "SELECT rung, detail FROM decisions ORDER BY rung"),
        _rows(folder, "SELECT key, status, epochs, final FROM runs ORDER BY key"),
        _rows(
            folder,
            "SELECT r.key, c.metric, c.epoch, c.value FROM curves c JOIN runs r ON r.id = c.run_id "
            "ORDER BY 1, 2, 3",
        ),
    )


def test_a_run_trained_on_since_its_segment_was_planned_is_not_claimed(tmp_path):
    """Two processes plan the same segments: one that claims a run after the other trained it
    on (to a rung, into a checkpoint) does not train it again from where it had planned."""
    from wdlab.store import Store

    c = RunConfig(mode="decoupled", weight_decay=0.1, lr=0.03, optimizer="adam", seed=0)
    with Store(tmp_path) as store:
        store.init_study("s", {"x": 1}, [c], "test")
        assert store.claim([c], "a", (None, None)) == [c]  # planned from the start
        store.note_checkpoint([c], "a", 9, "f.pt")
        store.release("a")  # pending at 9 epochs, its state in f.pt
        assert store.claim([c], "b", (None, None)) == []  # b planned it from the start
        assert store.claim([c], "b", (3, "f.pt")) == []  # b read f.pt when it held 3 epochs
        assert store.claim([c], "b", (9, "f.pt")) == [c]


@pytest.mark.slow
def test_a_killed_pruned_sweep_resumes_to_the_same_decisions_and_numbers(tmp_path):
    """SIGKILL after the second rung is decided, mid-segment (checkpoints every 10 epochs);
    run again, it ends with the uninterrupted sweep's decisions and numbers, bit for bit."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    w = _sweep_process(whole, "--checkpoint", "10")
    p = _sweep_process(killed, "--checkpoint", "10")
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        try:
            decided = _rows(killed, "SELECT COUNT(*) FROM decisions")[0][0]
            mid = _rows(killed, "SELECT COUNT(*) FROM runs WHERE status = 'running' AND "
                                "checkpoint IS NOT NULL AND epochs > 27")[0][0]  # fmt: skip
        except sqlite3.Error:
            decided = mid = 0
        if decided >= 2 and mid:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the sweep ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    w.communicate(timeout=600)
    again = _sweep_process(killed, "--checkpoint", "10")
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "took over" in err
    assert _everything(killed) == _everything(whole)
    assert not (killed / "checkpoints").exists()  # every checkpoint removed, and its folder


@pytest.mark.slow
def test_two_sweeps_on_one_study_take_the_same_decisions(tmp_path):
    """Two processes share a pruned study (batches of 4, planned over the whole grid, so the
    same batches whoever takes them): each rung decided once, the decisions, pruned runs and
    numbers of one process alone, bit for bit; both print the whole study."""
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    a = _sweep_process(alone, "--max-batch", "4")
    b, c = (_sweep_process(shared, "--max-batch", "4") for _ in range(2))
    docs = []
    for proc in (a, b, c):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        docs.append(json.loads(out))
    runs = [[{k: r[k] for k in ("config", "status", "final", "epochs")} for r in d["runs"]]
            for d in docs]  # fmt: skip
    assert runs[1] == runs[2] == runs[0]
    assert _everything(shared) == _everything(alone)


@pytest.mark.slow
def test_ray_takes_the_same_decisions_and_numbers(tmp_path_factory):
    """One Ray task per segment (batches of 8, paused at each rung, their states sent back and
    continued in the next task): the local sweep's decisions and numbers, bit for bit."""
    pytest.importorskip("ray")
    from wdlab.executors import RayExecutor

    tmp = tmp_path_factory.mktemp("ray")  # short: Ray's socket paths have a length limit
    local = run_sweep(_grid(epochs=81), tmp / "local", max_batch=8)
    ex = RayExecutor(local_cpus=2, temp_dir=str(tmp / "rt"))
    try:
        ray = run_sweep(_grid(epochs=81), tmp / "ray_study", executor=ex, max_batch=8)
    finally:
        ex.close()
        shutil.rmtree(tmp / "rt", ignore_errors=True)
    assert ray.counts == local.counts and ray.counts.get("pruned")
    assert _everything(tmp / "ray_study") == _everything(tmp / "local")


def test_a_setting_whose_every_run_was_pruned_is_shown_with_nothing_to_choose(tmp_path):
    """lr 0.001's weight decays (no wd = 0 of its mode in the grid) all stop at the first
    rung: the answer says so for that (mode, lr) instead of dropping it, as where wd = 0 is
    in the grid (its runs are the reference's, which trained on: not "every configuration
    was pruned"), and the rule counts the same pruned cells as the compute line."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 8, generator=g)
    y = (X[:, :2].sum(1) > 0).long()

    def make(seed=0):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

    data = {
        "train": (X[:200], y[:200]),
        "val": (X[200:250], y[200:250]),
        "test": (X[250:], y[250:]),
    }
    res = wdlab.sweep(make, data, optimizer="adamw", modes=["decoupled"], lr=[1e-3, 1e-2],
                      weight_decay=[1e-4, 1e-2, 1, 3], seeds=2, epochs=27, batch_size=64,
                      prune=True, out=tmp_path / "s")  # fmt: skip
    (other,) = res.to_dict()["unanswered"]
    assert res.unanswered == [other]  # beside result.best, which has no row for it
    assert (other["mode"], other["lr"], other["pruned"]) == ("decoupled", 0.001, 4)
    assert other["verdict"] == ALL_PRUNED
    assert ("decoupled", 0.001) not in {(s["mode"], s["lr"]) for s in res.selection}
    text = str(res)
    (line,) = [ln for ln in text.splitlines() if ln.startswith("decoupled    0.001   —  ")]
    assert line.endswith(f"  {ALL_PRUNED}")  # (its other cells "—", under their columns)
    with_zero = wdlab.sweep(make, data, optimizer="adamw", modes=["decoupled"], lr=[1e-3, 1e-2],
                            weight_decay=[0, 1e-4, 1e-2, 1, 3], seeds=2, epochs=27,
                            batch_size=64, prune=True)  # fmt: skip
    (row,) = [s for s in with_zero.selection if s["lr"] == 0.001]
    assert row["verdict"] == ALL_PRUNED and not row["better_than_zero"]
    assert math.isnan(row["p_value"])  # no test was made (it said p = 1.0)
    assert "use wd = 0" not in str(with_zero).split("0.001", 1)[1].splitlines()[0]
    cells = sum(d["pruned"] for d in res.halving["decisions"])
    assert f"successive halving stopped {cells} mode × lr × weight-decay cells at a rung" in text
    assert f"stopped {cells} cells" in text


def test_a_rung_made_decidable_by_another_process_is_decided_not_given_up(tmp_path, monkeypatch):
    """Two processes: one decides (nothing yet), the other stores the last batch at the rung
    and moves on; the first then finds every run waiting at a rung and none running. It must
    decide the rung and go on (it used to stop with 'the study is not whole'). Here one
    process, each rung's first decision skipped, as if the batch had arrived just after."""
    from wdlab.pipelines import job

    real, seen = job.decide_rungs, set()

    def late(store, rungs, prune, crit):
        due = {r for r in rungs if r not in store.decisions() and not store.behind(r)}
        if due - seen:
            seen.update(due)
            return {}
        return real(store, rungs, prune, crit)

    monkeypatch.setattr(job, "decide_rungs", late)
    res = run_sweep(GRID, tmp_path / "s")
    assert seen and res.counts["pruned"] and not res.partial


def test_a_training_of_steps_counts_its_compute_in_those_steps(tmp_path):
    """steps=13 at 4 steps per epoch: 4 epochs, the last cut short; the compute is 13 steps a
    run of 13, nothing stopped early (it said 'early stopping stopped' every run, and counted
    the config's default epochs as the full grid)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(160, 4, generator=g)
    y = (X[:, 0] > 0).long()
    data = {"train": (X[:128], y[:128]), "val": (X[128:144], y[128:144])}
    data["test"] = (X[144:], y[144:])
    res = wdlab.sweep("linear", data, weight_decay=[0, 1e-3], steps=13, batch_size=32,
                      out=tmp_path / "s")  # fmt: skip
    comp = res.halving["compute"]
    assert (comp["configuration_epochs"], comp["full_grid_epochs"]) == (8, 8)
    assert (comp["row_steps"], comp["full_grid_row_steps"]) == (26, 26)
    assert res.halving["stopped_early"] == 0 and "stopped" not in str(res)


def test_cells_tied_at_the_cut_are_ranked_by_the_smaller_weight_decay():
    """Nine cells, the best third is three; the 2nd to 4th score exactly alike: the cut takes
    the best ⌈n/η⌉ as the issue specifies, equal means ranked by the smaller weight decay (the
    documented tie-break), so the largest of the tied stops."""
    acc = dict(zip([1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 0.1, 1.0, 3.0],
                   [0.95, 0.9, 0.9, 0.9, 0.5, 0.5, 0.4, 0.3, 0.2], strict=True))  # fmt: skip
    waiting = [
        _run("decoupled", 0.01, wd, s, [0.5, a + 0.01 * s])
        for wd, a in acc.items()
        for s in range(3)
    ]
    detail, pruned = decide([], waiting, 2, Prune(), Criterion("acc", "accuracy", True))
    why = {cell["weight_decay"]: cell["why"] for cell in detail["cells"]}
    assert [why[w] for w in (1e-5, 1e-4, 3e-4, 1e-3)] == [
        "kept: best", "kept: in the best 1/3", "kept: in the best 1/3",
        "pruned: not in the best 1/3",
    ]  # fmt: skip
    assert {c.weight_decay for c in pruned} == {1e-3, 3e-3, 1e-2, 0.1, 1.0, 3.0}


def test_equal_cells_of_two_modes_are_cut_by_the_modes_name_not_the_order_given():
    """SGD's coupled and builtin decay are the same runs: of a cell of each scoring alike at
    the cut, the documented tie-break keeps the mode first by name, whichever mode was listed
    first (the first listed went on and the other stopped, found by a new-user trial)."""
    acc = {1e-4: 0.9, 1e-3: 0.8, 1e-2: 0.5, 0.1: 0.4}  # 8 cells: the best 3 split a pair
    grid = [(m, wd, a) for wd, a in acc.items() for m in ("coupled", "builtin")]

    def decision(order):
        waiting = [
            _run(m, 0.01, wd, s, [0.5, a + 0.01 * s])
            for m, wd, a in sorted(grid, key=lambda g: order.index(g[0]))
            for s in range(3)
        ]
        detail, _ = decide([], waiting, 2, Prune(), Criterion("acc", "accuracy", True))
        return {(c["mode"], c["weight_decay"]): c["why"] for c in detail["cells"]}

    first, second = decision(["coupled", "builtin"]), decision(["builtin", "coupled"])
    assert first == second
    assert first[("builtin", 1e-3)] == "kept: in the best 1/3"
    assert first[("coupled", 1e-3)] == "pruned: not in the best 1/3"


def test_means_equal_but_for_float32_rounding_are_tied():
    """Accuracies held in float32: 335 and 339 right of 360 average to 337/360 a few float32
    ulps away from 337 and 337's; a cell is not ranked ahead of an equal one by that
    rounding, so the smaller weight decay is first, as the tie rule says."""
    f32 = lambda n: float(torch.tensor(n / 360, dtype=torch.float32))  # noqa: E731
    seeds = {1e-5: (337, 337), 1e-4: (337, 337), 1.0: (335, 339), 0.1: (300, 300)}
    waiting = [
        _run("decoupled", 0.01, wd, s, [0.5, f32(n)])
        for wd, ns in seeds.items()
        for s, n in enumerate(ns)
    ]
    detail, _ = decide([], waiting, 2, Prune(eta=4), Criterion("acc", "accuracy", True))
    assert [c["weight_decay"] for c in detail["cells"][:3]] == [1e-5, 1e-4, 1.0]
    assert detail["cells"][0]["why"] == "kept: best"


def test_a_pruned_cell_whose_other_seeds_stopped_early_counts_in_the_bonferroni_m():
    """Early stopping and pruning: a cell whose seeds 0 and 2 stopped early (``done``) before
    the rung that pruned seed 1 was stopped at a rung; it counts in m as every pruned cell does
    (it was left out: 0.05/2 where the unpruned sweep has 0.05/3, found by a new-user trial).
    A cell with a diverged seed is no candidate, pruned or not."""
    from wdlab.selection import select

    done = ("done", "done")
    status = {1e-4: done, 1e-3: done, 1.0: ("done", "pruned"), 3.0: ("pruned", "diverged")}
    runs = [_run("none", 0.01, 0.0, s, [0.5, 0.8], "done") for s in range(3)]
    runs += [
        _run("decoupled", 0.01, w, s, [0.5, 0.9 - w / 10], st[s % 2])
        for w, st in status.items()
        for s in range(3)
    ]
    (row,) = [r for r in select(runs, "multiclass") if r["mode"] == "decoupled"]
    assert row["pruned"] == 1
    assert row["level"] == pytest.approx(0.05 / 3)


def test_a_process_writes_the_weights_of_the_runs_it_holds_only(tmp_path, monkeypatch):
    """A checkpoint's runs that another process took on (and finished, keeping their weights)
    are skipped by this one: their weights files are left as the other wrote them, never
    replaced by this process's copy of their state at the rung."""
    from wdlab.pipelines.weights import weights_path
    from wdlab.store import Store, config_key

    out, real, other = tmp_path / "s", Store.claim, []

    def claim(self, configs, owner, at=None):
        configs = list(configs)
        if at is not None and at[1] is not None and not other:  # a segment from a checkpoint
            other.append(configs.pop())  # the other process's: trained to the end, kept
            with self._tx():
                self.db.execute("UPDATE runs SET status = 'done' WHERE key = ?",
                                (config_key(other[0]),))  # fmt: skip
            path = weights_path(out, other[0])
            path.parent.mkdir(exist_ok=True)
            torch.save({"theirs": torch.ones(1)}, path)
        return real(self, configs, owner, at)

    monkeypatch.setattr(Store, "claim", claim)
    run_sweep(_grid(keep="all", seeds=[0]), out)
    assert other, "no segment started from a checkpoint"
    kept = torch.load(weights_path(out, other[0]), weights_only=True)
    assert list(kept) == ["theirs"]


def test_a_partial_studys_compute_is_against_the_whole_grid():
    """While runs are unfinished, the full grid is still the grid's configurations × epochs
    (it counted the finished runs only), and the line says the count is the finished runs'."""
    from wdlab.halving import compute
    from wdlab.report.text import compute_text

    runs = [_run("decoupled", 0.01, wd, 0, [0.5] * 3, status="done") for wd in (0.0, 0.1)]
    part = compute(runs, 60, 1, None, configurations=36)
    assert part["full_grid_epochs"] == 36 * 60 and part["finished_only"]
    assert part["fraction"] == pytest.approx(6 / 2160)
    assert "6 (the finished runs' so far) of the full grid's 2,160" in compute_text(
        {"compute": part}
    )
    assert not compute(runs, 60, 1)["finished_only"]


def test_a_training_in_steps_gives_its_rungs_in_steps_too():
    """A sweep given ``steps`` reads its rungs in epochs of the stream and in its own steps."""
    from wdlab.halving import summary
    from wdlab.report.text import compute_text

    runs = [_run("decoupled", 0.01, wd, 0, [0.5] * 3, status="done") for wd in (0.0, 0.1)]
    runs.append(_run("decoupled", 0.01, 1.0, 0, [0.9], status="pruned"))
    train = {"steps": 60, "prune": True, "prune_eta": 3}
    decided = {r: {"rung": r, "pruned": int(r == 1)} for r in (1, 3)}
    told = summary({"train": train}, {"steps_per_epoch": 7}, runs, decided)
    assert told["rungs"] == [1, 3] and told["rung_steps"] == [7, 21]
    assert "rungs after 1, 3 epochs (7, 21 steps))" in compute_text(told)
    nine = {"train": {"epochs": 9, "prune": True}}
    epochs = summary(nine, {"steps_per_epoch": 7}, runs, decided)
    assert "rung_steps" not in epochs and "epochs)" in compute_text(epochs)


def test_ls_counts_the_pruned_runs(swept, capsys):
    """`wdlab ls` has a pruned column: its columns add up to the runs (they did not)."""
    pruned, _, root = swept
    assert main(["ls", str(root), "--json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out)["studies"] if "pruned" in r["study"]]
    assert row["pruned"] == pruned.counts["pruned"] > 0
    assert row["runs"] == sum(row[k] for k in ("done", "diverged", "pruned", "failed", "pending"))
    assert main(["ls", str(root)]) == 0
    assert " pruned " in capsys.readouterr().out.splitlines()[0]


def test_going_on_from_a_rung_is_no_new_attempt(swept):
    """A run that went on from two rungs was started once: attempts 1 (it read 3, as if it
    had failed twice)."""
    root = swept[2]
    assert {a for (a,) in _rows(root / "pruned", "SELECT attempts FROM runs")} == {1}
