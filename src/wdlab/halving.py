"""Successive halving inside the batch: rungs, and the decision at each rung.

A sweep with ``prune`` trains every configuration to the first rung, then keeps the best
1/η of them and trains those to the next rung, and so on (Jamieson & Talwalkar's successive
halving; Optuna's ``SuccessiveHalvingPruner`` and Ray Tune's ASHA do it trial by trial). wdlab
stops the losing rows inside the batch (:meth:`wdlab.trainer.Trainer.stop`), so the compute
drops with them.

**Rungs** (:meth:`Prune.rungs`): after r, r·η, r·η², … epochs, below the last epoch. By
default r = epochs / η^m with m = min(3, ⌊log_η(epochs)⌋): the last rung is near a third of
the training (η = 3), the first near 1/27 of it. Every configuration is evaluated at each
rung. With early stopping a rung falls on an evaluation (``eval_every``; one between two moves
to the next, :func:`rung_spacing`): an extra evaluation would count towards a survivor's
patience and could become its best epoch, so its numbers would differ from the unpruned
sweep's. Without early stopping a rung may fall between evaluations: the extra evaluation there
stays in the curves (the rung figure draws it) but is never a survivor's best epoch, which stays
the unpruned sweep's (:attr:`wdlab.trainer.plan.Plan.rung_only_evals`; a pruned run's best
epoch is its curve's best, its rungs counted).

**What is ranked** (:func:`decide`): the cells the selection compares, mode × lr × weight
decay, each scored on the validation metric the selection uses (its ``Criterion``: the same
metric and epoch rule, here applied to the curves up to the rung), as the mean over its seeds;
all seeds of a cell go on or stop together. Kept: the best ⌈n/η⌉ of the n cells ranked, any
cell within one standard error of the best (the paired standard error of their seed-by-seed
differences, as the selection's test pairs seeds; none with one seed, and none where it is
0: every seed agreed, and an exact tie goes to the tie-break below whatever the seeds), and
every wd = 0 cell
(the reference the verdict needs: never ranked, never pruned). A cell with a seed that
diverged (or no finite score) is pruned: the selection could not choose it. A cell whose every
seed finished before the rung (early stopping, or diverged) is not ranked there, as Optuna's
pruners rank only the trials that go on at a rung: the decision lists it (``finished by the
rung``, wd = 0 cells too), and the answer compares it as any finished cell; a cell with a seed still
training is ranked on all its seeds, those that stopped early scored at their best epoch.
Means are ranked to six significant digits (:func:`_level`), so two cells with the same count
of the same rows right are equal whatever float32 rounding their means took; equal means go to
the smaller weight decay, then the smaller lr, then the mode's name (not the order the modes
were given), so the cut keeps exactly ⌈n/η⌉ (ties at a small validation split's accuracy are
common, and keeping every tie would keep most of the grid).

**Where the ranking happens.** Across the whole study, at a barrier: a rung is decided once
every run still training has reached it (:func:`wdlab.pipelines.segments.decide_rungs`), so a
cell whose seeds were split across batches by the memory budget is ranked on all of them, and
the decision does not depend on how the grid was batched, which process trained which batch,
or whether Ray did. The decision is stored with the study; a resumed or concurrent sweep
reads it and never trains a pruned run again. Batches pause at each rung (their state saved in
the study directory) and go on once it is decided.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wdlab.records import RunConfig, RunResult
from wdlab.selection import Criterion, Scores, decays, run_scores
from wdlab.stats import se_diff

MAX_RUNGS = 3  # rungs by default (with η = 3 the first is near 1/27 of the epochs)
Cell = tuple[str, float, float]  # (mode, lr, weight decay)


@dataclass(frozen=True)
class Prune:
    """Successive halving's settings: keep the best 1/``eta`` at each rung; the first rung
    after ``first_rung`` epochs (None: chosen from the epochs, see the module docstring)."""

    eta: int = 3
    first_rung: int | None = None

    def __post_init__(self) -> None:
        eta, r = _integer(self.eta), _integer(self.first_rung)
        if eta is None or eta < 2:
            raise ValueError(f"prune: eta must be an integer >= 2, got {self.eta!r}")
        if self.first_rung is not None and (r is None or r < 1):
            raise ValueError(f"prune: the first rung must be an epoch count >= 1, got {r!r}")
        object.__setattr__(self, "eta", eta)  # a NumPy integer as Python's
        object.__setattr__(self, "first_rung", r)

    def rungs(self, epochs: int, eval_every: int = 1) -> tuple[int, ...]:
        """The rungs (epochs trained) below ``epochs``, each on an evaluation (after epoch
        1, 1 + ``eval_every``, …: one between two moves to the next); ``ValueError`` when
        there is none."""
        eta = self.eta
        if self.first_rung is not None:
            r: float = self.first_rung
            if epochs < 2:
                raise self._no_rung(epochs, eval_every)
            if r >= epochs:
                raise ValueError(
                    f"prune: the first rung ({self.first_rung} epochs) is not before the last "
                    f"epoch ({epochs}); choose a first rung below {epochs}"
                )
        else:
            m = min(MAX_RUNGS, math.floor(math.log(epochs) / math.log(eta) + 1e-9))
            r = epochs / eta**m
        raw, k = set(), 0
        while (rung := round(r * eta**k)) < epochs:  # r >= 1: ends before eta**k overflows
            raw.add(max(1, rung))
            k += 1
        evaluated = {1 + -(-(e - 1) // eval_every) * eval_every for e in raw}
        out = sorted(e for e in evaluated if e < epochs)
        if not out:
            raise self._no_rung(epochs, eval_every)
        return tuple(out)

    def _no_rung(self, epochs: int, eval_every: int) -> ValueError:
        """Why ``epochs`` leave no rung, and what would give one."""
        n = f"{epochs} epoch" + "s" * (epochs != 1)
        if epochs < 2:
            why = f"a rung falls between two epochs, and the training is {n}; train 2 or more"
        elif eval_every > 1:
            why = (
                f"with early stopping a rung falls on an evaluation, and one every {eval_every} "
                f"epochs leaves none before the last of {n}; evaluate more often (eval_every, "
                "--eval-every) or train more epochs"
            )
        else:
            why = (
                f"{n} leave no rung before the last with eta = {self.eta}; train more epochs, "
                "or set a first rung (prune_rung, --prune-rung)"
            )
        return ValueError(f"prune: {why}")


def rung_spacing(train: Mapping[str, Any]) -> int:
    """The epochs between the evaluations a rung must fall on, for a config's ``[train]``
    (its table, or its keywords): ``eval_every`` with early stopping, else 1 (any epoch)."""
    return int(train.get("eval_every") or 1) if train.get("early_stopping") else 1


def _integer(v: object) -> int | None:
    """``v`` as a Python int where it is an integer (a NumPy one too), else None."""
    if v is None or isinstance(v, bool) or not hasattr(v, "__index__"):
        return None
    return int(v.__index__())  # type: ignore[attr-defined]


def setting(value: bool | Prune | Mapping[str, Any] | None) -> Prune | None:
    """``prune=`` as given to :func:`wdlab.sweep`: True or 1 (the defaults), a :class:`Prune`,
    a mapping of its fields, or False, 0 or None (no pruning)."""
    if value is None or value is False or _integer(value) == 0:
        return None
    if value is True or _integer(value) == 1:
        return Prune()
    if isinstance(value, Prune):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"eta", "first_rung"})
        if unknown:
            raise ValueError(f"prune: unknown setting {unknown[0]!r}; valid: eta, first_rung")
        return Prune(**value)
    raise ValueError(f"prune must be True, False or Prune(eta=..., first_rung=...), got {value!r}")


def from_config(train: Any) -> Prune | None:
    """Successive halving as a config's ``[train]`` section (or its stored table) sets it
    (``prune``, ``prune_eta``, ``prune_rung``; None: off)."""
    if not train.get("prune"):
        return None
    return Prune(
        int(train.get("prune_eta") or Prune.eta), int(train.get("prune_rung") or 0) or None
    )


def cell_of(c: RunConfig) -> Cell:
    """The cell a configuration belongs to: (mode, lr, weight decay)."""
    return (c.mode, c.lr, c.weight_decay)


def reference(cell: Cell) -> bool:
    """Whether a cell is a wd = 0 reference (never ranked, never pruned)."""
    return cell[2] == 0 or not decays(cell[0])


def check_cells(configs: Sequence[RunConfig]) -> None:
    """A one-line ``ValueError`` when the grid has fewer than two cells to rank."""
    ranked = {cell_of(c) for c in configs if not reference(cell_of(c))}
    if len(ranked) < 2:
        raise ValueError(
            f"prune: the grid has {len(ranked)} cell{'s' * (len(ranked) != 1)} to rank "
            "(mode × lr × weight decay > 0); "
            "successive halving needs at least 2"
        )


def _scores(runs: Sequence[RunResult], c: Criterion) -> Scores:
    """Each run's validation score at the rung (its curves so far), by seed."""
    out: Scores = {}
    for r in runs:
        scored = r if r.status == "diverged" else dataclasses.replace(r, status="done")
        out[r.config.seed] = run_scores(scored, c)
    return out


def _level(mean: float) -> float:
    """A score as ranked: to six significant digits, so two cells that score alike (the same
    count of the same rows right) are equal whatever float32 rounding their means took."""
    return float(f"{mean:.6g}") if math.isfinite(mean) else math.nan


def _mean(s: Scores) -> float:
    vals = [v[0] for v in s.values()]
    return statistics.fmean(vals) if vals and all(math.isfinite(v) for v in vals) else math.nan


def decide(
    runs: Sequence[RunResult], waiting: Sequence[RunResult], rung: int, prune: Prune, c: Criterion
) -> tuple[dict[str, Any], list[RunConfig]]:
    """The decision at ``rung``: which cells go on (see the module docstring).

    ``waiting``: the runs waiting at the rung (curves up to it); ``runs``: the study's runs
    that finished before it (done early, diverged), whose cells may still have seeds waiting.
    Returns the decision (JSON-ready: every cell ranked with its score, standard error and
    why it was kept or pruned) and the waiting runs to prune."""
    live = {cell_of(r.config) for r in waiting}
    by_cell: dict[Cell, list[RunResult]] = {}
    for r in [*waiting, *runs]:
        if cell_of(r.config) in live:
            by_cell.setdefault(cell_of(r.config), []).append(r)
    scores = {cell: _scores(rs, c) for cell, rs in by_cell.items()}
    sign = -1 if c.higher else 1
    level = {cell: sign * _level(_mean(scores[cell])) for cell in by_cell}
    ranked = sorted(
        (cell for cell in by_cell if not reference(cell)),
        key=lambda cell: (math.isnan(level[cell]), level[cell], cell[2], cell[1], cell[0]),
    )
    finite = [cell for cell in ranked if math.isfinite(level[cell])]
    top = finite[: max(1, math.ceil(len(finite) / prune.eta))] if finite else []
    rows, pruned = [], []
    for cell in [*ranked, *(cell for cell in by_cell if reference(cell))]:
        mean, se = _mean(scores[cell]), se_diff(scores[cell], scores[top[0]]) if top else math.nan
        why = _why(cell, mean, se, top, scores, prune.eta)
        rows.append(_row(cell, mean, se, why, len(by_cell[cell])))
        if why.startswith("pruned"):
            pruned += [r.config for r in waiting if cell_of(r.config) == cell]
    gone = _finished_before(runs, live, c)
    detail = {
        "rung": rung,
        "eta": prune.eta,
        "metric": c.key,
        "higher": c.higher,
        "early_stopping": c.early_stopping,
        "kept": sum(r["why"].startswith("kept") for r in rows),
        "pruned": sum(r["why"].startswith("pruned") for r in rows),
        "finished": len(gone),
        "cells": rows + gone,
    }
    return detail, pruned


def _finished_before(runs: Sequence[RunResult], live: set[Cell], c: Criterion) -> list[dict]:
    """The cells compared by the answer (wd = 0 too) none of whose seeds trains on from the
    rung (every one stopped early or diverged by it): not ranked, as Optuna's pruners rank only
    the trials that go on at a rung; listed, so that the decision accounts for every cell."""
    by_cell: dict[Cell, list[RunResult]] = {}
    for r in runs:
        if cell_of(r.config) not in live:
            by_cell.setdefault(cell_of(r.config), []).append(r)
    rows = []
    for cell, rs in sorted(by_cell.items()):
        how = "diverged" if any(r.status == "diverged" for r in rs) else "stopped early"
        why = f"finished by the rung ({how}): not ranked"
        rows.append(_row(cell, _mean(_scores(rs, c)), math.nan, why, len(rs)))
    return rows


def _why(
    cell: Cell, mean: float, se: float, top: list[Cell], scores: Mapping[Cell, Scores], eta: int
) -> str:
    """Why a cell goes on or stops at a rung."""
    if reference(cell):
        return "kept: wd = 0 reference"
    if not math.isfinite(mean):
        return "pruned: a seed diverged or has no finite score"
    if cell in top:
        return "kept: best" if cell == top[0] else f"kept: in the best 1/{eta}"
    if math.isfinite(se) and se > 0 and _within(abs(mean - _mean(scores[top[0]])), se):
        return "kept: within one standard error of the best"  # (SE 0: a tie, as one seed's)
    return f"pruned: not in the best 1/{eta}"


def _within(gap: float, se: float) -> bool:
    """``gap <= se``, equal where they are equal but for float rounding: one seed one example
    behind the best makes the gap exactly one SE, for any count of seeds, and the rounding of
    the two sums decided it (± 1e-16) either way."""
    return gap <= se or math.isclose(gap, se, rel_tol=1e-9, abs_tol=1e-12)


def _row(cell: Cell, mean: float, se: float, why: str, runs: int) -> dict[str, Any]:
    mode, lr, wd = cell
    num = lambda v: v if math.isfinite(v) else None  # noqa: E731
    return {
        "mode": mode,
        "lr": lr,
        "weight_decay": wd,
        "score": num(mean),
        "se": num(se),
        "runs": runs,
        "why": why,
    }


def compute(
    runs: Sequence[RunResult],
    epochs: int,
    steps_per_epoch: int,
    steps: int | None = None,
    configurations: int | None = None,
) -> dict[str, Any]:
    """The compute ``runs`` used against the full grid's: configuration-epochs and row-steps
    (optimizer steps summed over configurations), trained and in full; ``steps``: a training
    of that many steps (its last epoch cut short), not of whole epochs; ``configurations``:
    the grid's (default: the runs'), and ``finished_only`` says whether runs are missing."""
    trained_epochs = [epochs if r.epochs is None else r.epochs for r in runs]
    cap = steps or epochs * steps_per_epoch
    n = max(configurations or 0, len(runs))
    full = n * epochs
    return {
        "configuration_epochs": sum(trained_epochs),
        "full_grid_epochs": full,
        "row_steps": sum(min(e * steps_per_epoch, cap) for e in trained_epochs),
        "full_grid_row_steps": n * cap,
        "fraction": sum(trained_epochs) / full if full else math.nan,
        "finished_only": n > len(runs),
    }


def summary(
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    runs: Sequence[RunResult],
    decisions: Mapping[int, Mapping[str, Any]],
    configurations: int | None = None,
) -> dict[str, Any]:
    """What a stored study says about its compute and its pruning (``Result.halving``): the
    compute its finished runs used against the full grid's (:func:`compute`; the grid's
    ``configurations``, where a partial study has fewer runs finished), and where successive
    halving ran, its rungs, η and each rung's decision."""
    train = config.get("train") or {}
    per, steps = int(data.get("steps_per_epoch") or 1), int(train.get("steps") or 0)
    epochs = -(-steps // per) if steps else int(train.get("epochs") or 0)  # as the plan's
    out: dict[str, Any] = {}
    if runs and epochs:
        out["compute"] = compute(runs, epochs, per, steps or None, configurations)
        out["stopped_early"] = sum(
            r.status == "done" and r.epochs is not None and r.epochs < epochs for r in runs
        )
    prune = from_config(train)
    if prune is not None:
        out |= {"eta": prune.eta, "rungs": list(prune.rungs(epochs, rung_spacing(train)))}
        if steps:  # a training given in steps: its rungs in steps too
            out["rung_steps"] = [r * per for r in out["rungs"]]
        out["decisions"] = [dict(decisions[r]) for r in sorted(decisions)]
    return out
