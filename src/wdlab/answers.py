"""The words of an answer: the verdicts where no test against wd = 0 was made, the weight
decay a selection row recommends (:func:`use_wd`) and one row's answer in words
(:func:`use_text`), as every view of a study says them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wdlab.decay.modes import get_mode


def is_reference(row: Mapping[str, Any]) -> bool:
    """Whether a selection row is the wd = 0 reference: its mode does not decay (``none``)."""
    return not get_mode(row["mode"]).decays


def use_wd(row: Mapping[str, Any]) -> float:
    """The weight decay a selection row recommends: its chosen one when that beat wd = 0
    measurably, else 0 (a weight decay that gains nothing measurable is no answer)."""
    return float(row["weight_decay"]) if row.get("better_than_zero") else 0.0


TOO_FEW = "too few seeds to tell"  # the verdict's words where the seeds cannot tell
NO_REFERENCE = "no wd = 0 run to compare with"  # (a partial study: its wd = 0 runs not done)
ALL_PRUNED = (  # no test was made: no advice at this (mode, lr), no p-value
    "every weight decay > 0 was pruned at a rung (successive halving): none was compared with "
    "wd = 0 here"
)
NONE_SWEPT = "no weight decay > 0 was swept here: nothing was compared with wd = 0"
NOT_YET = (  # a partial study whose weight decays > 0 are swept but none finished yet
    "no weight decay > 0 finished yet (a partial study): nothing was compared with wd = 0"
)
UNTESTED = (ALL_PRUNED, NONE_SWEPT, NOT_YET)  # verdicts of rows where no test was made
_UNTESTED_TEXT = {ALL_PRUNED: "every wd > 0 pruned", NONE_SWEPT: "no wd > 0 swept"}
_UNTESTED_TEXT[NOT_YET] = "no wd > 0 finished yet"


NOTHING = ": nothing to choose"  # how the verdict of a setting with nothing to choose ends


def no_advice(row: Mapping[str, Any]) -> bool:
    """Whether a row's answer is no advice: nothing was compared with wd = 0 there, or there
    was nothing to choose (an unanswered setting's row)."""
    verdict = str(row.get("verdict", ""))
    return verdict in _UNTESTED_TEXT or verdict.endswith(NOTHING)


def use_text(row: Mapping[str, Any]) -> str:
    """``wd 0.01 (better than wd = 0)``, ``wd 0 (no measurable gain)`` or ``wd 0 (too few
    seeds to tell)``: one row's answer."""
    if row.get("better_than_zero"):
        return f"wd {use_wd(row):g} (better than wd = 0)"
    if str(row.get("verdict", "")).startswith(TOO_FEW):
        return f"wd 0 ({TOO_FEW})"
    if row.get("verdict") in _UNTESTED_TEXT:
        return f"{_UNTESTED_TEXT[row['verdict']]}, none compared with wd = 0"
    if str(row.get("verdict", "")).endswith(NOTHING):  # (every run diverged: nothing to choose)
        return str(row["verdict"]).removesuffix(NOTHING)
    if row.get("verdict") == NO_REFERENCE:  # nothing to advise yet
        return f"wd {row['weight_decay']:g} chosen, {NO_REFERENCE} yet"
    return "wd 0 (no measurable gain)"
