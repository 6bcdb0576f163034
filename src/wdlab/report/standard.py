"""The standard figures of a report (:data:`STANDARD`): each drawn from a result value by
:mod:`wdlab.report.plots`, with its caption in words (what is drawn, and the last values where
few runs are). :mod:`wdlab.report.figures` is the registry of every figure."""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from wdlab.records import Result
from wdlab.report.plots import (
    FigureSpec,
    answer_cells,
    criterion_of,
    gap_curves,
    loss_curves,
    run_labels,
    swept,
    wd_curve,
    weight_norm_curves,
)
from wdlab.report.shown import MAX_SHOWN, left_out, shown
from wdlab.selection import eval_split
from wdlab.tasks import get_task


def _loss_title(result: Result) -> str:
    if result.kind == "demo":
        s = result.config
        return (
            f"The article's experiment: random labels, dim {s['dim']}, SGD lr {s['lr']:g}, "
            f"wd {s['weight_decay']:g}, {s['epochs'] + 1} steps"
        )
    split = eval_split(result.runs)
    return f"{result.data.get('name', '')}: train (solid) and {split} (dashed) loss"


def _draw_wd(result: Result) -> Figure:
    return wd_curve(result.runs, criterion_of(result), answer_cells(result))


def _last_values(result: Result, series: str, fmt: str = ".3g") -> str:
    """'label value; …' at each shown run's last epoch (empty for more than 6 runs)."""
    runs = shown(result)
    if len(runs) > 6:
        return ""
    parts = []
    for label, r in zip(run_labels(runs), runs, strict=True):
        vals = [v for v in r.curves.series.get(series, []) if math.isfinite(v)]
        if vals:
            parts.append(f"{label} {format(vals[-1], fmt)}")
    return f" Last value: {'; '.join(parts)}." if parts else ""


def _which_runs(result: Result) -> str:
    if not result.selection:
        return "Every run" if len(shown(result)) == len(result.runs) else "A spread of the runs"
    seed = min(r.config.seed for r in result.runs)
    more = left_out(result)
    cut = f"; the first {MAX_SHOWN} of these drawn, {more} more in the table" if more else ""
    return (
        f"Seed {seed}: wd = 0, and for each (mode, lr) the run at the weight decay to use (the "
        f"nearest swept one where the answer is wd = 0){cut}"
    )


def _loss_caption(r: Result) -> str:
    split = eval_split(r.runs)
    solid = "train loss (solid)"
    if any("train_loss_eval" in run.curves for run in r.runs):
        steps = (
            "the loss of each epoch's one full-batch step, before it"
            if r.data.get("steps_per_epoch") == 1
            else "the mean over each epoch's mini-batches as they trained"
        )
        solid = (
            f"train loss (solid: {steps}, not the end-of-epoch evaluation that the tables' "
            "train loss and the gap figure use)"
        )
    return (
        f"{_which_runs(r)}: {solid} and {split} loss (dashed) on one epoch axis; "
        f"dots mark each run's lowest {split} loss."
    )


def _gap_caption(r: Result) -> str:
    split = eval_split(r.runs)
    gaps, runs = [], shown(r)
    for label, run in zip(run_labels(runs), runs, strict=True):
        f = run.final
        if f"{split}_loss" in f and "train_loss" in f and len(runs) <= 6:
            gaps.append(f"{label} {f[f'{split}_loss'] - f['train_loss']:.3g}")
    last = f" At the last evaluation: {'; '.join(gaps)}." if gaps else ""
    return f"Generalisation gap ({split} loss − train loss) over epochs, same runs.{last}"


#: What the ★ of the wd plot and the heatmap mark, in their captions.
ANSWER_MARK = (
    "★ the weight decay to use for each (mode, lr), as in the answer table: the one chosen on "
    "validation where it beat wd = 0 measurably, else wd = 0"
)


def _wd_caption(r: Result) -> str:
    c = criterion_of(r)
    return (
        f"Validation (solid) and test (dashed) {c.name} against weight decay (log axis; wd = 0 "
        f"left of the dotted break), mean over seeds with a min..max band; {ANSWER_MARK}." + gaps(r)
    )


def gaps(r: Result, what: str = "A gap") -> str:
    """What ``what`` (a gap in a line, a blank cell) means, where the result has one."""
    if not any(x.status in ("pruned", "diverged") for x in r.runs):
        return ""
    return f" {what} is a weight decay with no finished score: pruned at a rung or diverged."


def ran(result: Result) -> bool:
    """Whether a result has a finished run to draw (a study killed before any has none)."""
    return bool(result.runs)


#: The standard figures, in report order (:mod:`wdlab.report.figures` is the registry).
STANDARD: tuple[FigureSpec, ...] = (
    FigureSpec(
        "losses",
        ran,
        _loss_caption,
        lambda r: loss_curves(
            shown(r), _loss_title(r), eval_split(r.runs), get_task(r.task).loss_name
        ),
        "a finished run",
    ),
    FigureSpec(
        "gap",
        ran,
        _gap_caption,
        lambda r: gap_curves(shown(r), eval_split(r.runs)),
        "a finished run",
    ),
    FigureSpec(
        "weight_norm",
        ran,
        lambda r: (
            "L2 norm of the decayed tensors over epochs, same runs."
            + _last_values(r, "weight_norm")
        ),
        lambda r: weight_norm_curves(shown(r)),
        "a finished run",
    ),
    FigureSpec(
        "wd_curve",
        swept,
        _wd_caption,
        _draw_wd,
        "two weight decays > 0 swept and one chosen on validation",
    ),
)
