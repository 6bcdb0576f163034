"""What a study could not choose: the (mode, lr) settings the selection
(:mod:`wdlab.selection`) has no row for, and why (every run pruned or diverged, no finite
score, or, in a partial study, nothing finished yet)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any

from wdlab.decay.modes import get_mode
from wdlab.records import ALL_PRUNED, NOT_YET, NOTHING, RunResult
from wdlab.selection import by_setting, pruned_cells, reference_runs

NOTHING_FINISHED = "every configuration was pruned at a rung (successive halving)" + NOTHING
NOTHING_FINITE = "no weight decay has a finite validation score for every seed" + NOTHING
ALL_DIVERGED = "every run diverged" + NOTHING
PRUNED_OR_DIVERGED = "every run was pruned at a rung (successive halving) or diverged" + NOTHING
_PRUNED = (ALL_PRUNED, NOTHING_FINISHED, PRUNED_OR_DIVERGED)  # verdicts that say cells were pruned


def unanswered(
    runs: Sequence[RunResult],
    selection: Sequence[Mapping[str, Any]],
    waiting: Set[float] = frozenset(),
    config: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The (mode, lr) settings ``selection`` has no row for, with ``verdict`` (why) and
    ``pruned``; one missing a weight decay of ``waiting`` (a partial study's): none finished,
    as is each (mode, lr) of a partial study's grid (``config``) with no run finished at all."""
    if not selection:  # no validation split, or nothing finished: :func:`no_choice` says which
        return []
    have, groups, out = {(s["mode"], s["lr"]) for s in selection}, by_setting(runs), []
    for (mode, lr), wds in sorted(groups.items()):
        if (mode, lr) in have:
            continue
        verdict = _why_unanswered(wds, reference_runs(groups, mode, lr) or ())
        verdict = NOT_YET if waiting - set(wds) and verdict in _PRUNED else verdict
        out.append({"mode": mode, "lr": lr, "verdict": verdict, "pruned": pruned_cells(wds)})
    for mode, lr in _grid_settings(config) if waiting else ():
        if (mode, lr) not in have and (mode, lr) not in groups:
            out.append({"mode": mode, "lr": lr, "verdict": NOT_YET, "pruned": 0})
    return out


def _grid_settings(config: Mapping[str, Any] | None) -> list[tuple[str, float]]:
    """The (mode, lr) settings a study's config sweeps that decay (each has a row to fill)."""
    decay, train = (config or {}).get("decay") or {}, (config or {}).get("train") or {}
    modes = [m for m in decay.get("modes") or () if get_mode(m).decays]
    return [(m, float(lr)) for m in modes for lr in train.get("lr") or ()]


def _why_unanswered(wds: Mapping[float, Sequence[RunResult]], ref: Sequence[RunResult]) -> str:
    """Why one (mode, lr) has nothing to choose, from its runs' statuses and those of the
    wd = 0 reference at its lr (done: its wd = 0 runs are the reference's, which trained on)."""
    own, zero = {r.status for rs in wds.values() for r in rs}, {r.status for r in ref}
    if own == {"pruned"} and not (zero and zero <= {"diverged"}):
        return ALL_PRUNED if "done" in zero else NOTHING_FINISHED
    if "pruned" in own and own <= {"pruned", "diverged"}:
        return PRUNED_OR_DIVERGED  # its own or its reference's wd = 0 runs diverged
    return ALL_DIVERGED if own == {"diverged"} else NOTHING_FINITE
