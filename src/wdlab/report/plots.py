"""Matplotlib figures. Every function returns a ``Figure`` and never shows it.

The drawing functions take runs; :mod:`wdlab.report.standard` draws the standard figures of a
report from a result value, each with its caption (:mod:`wdlab.report.figures` is the registry).
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from wdlab.records import Result, RunResult, use_wd
from wdlab.report.literal import literal
from wdlab.report.palette import colors as palette
from wdlab.report.text import short
from wdlab.selection import (
    Criterion,
    criterion,
    decays,
    metric_for,
    run_scores,
    selection_criterion,
    study_metric,
    zero_runs,
)


def run_labels(runs: Sequence[RunResult]) -> list[str]:
    """A legend label per run that tells every drawn run apart: its name (a named regime such
    as the demo's ``manual``, else the mode) and wd, plus lr and seed where those vary."""
    vary_lr = len({r.config.lr for r in runs}) > 1
    vary_seed = len({r.config.seed for r in runs}) > 1
    out = []
    for r in runs:
        c = r.config
        named = c.label and c.label != c.mode and not c.label.startswith(f"{c.mode} wd=")
        label = f"{c.label if named else c.mode} wd={short(c.weight_decay)}"
        label += f" lr={short(c.lr)}" if vary_lr else ""
        label += f" seed {c.seed}" if vary_seed else ""
        out.append(label)
    seen: dict[str, int] = {}
    for i, label in enumerate(out):  # still alike (e.g. other optimizer options): number them
        if out.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            out[i] = f"{label} #{seen[label]}"
    return out


def _style(twin: bool) -> dict[str, float]:
    """Runs whose curves equal a later run's (manual ≡ builtin), or come as near as the figure
    can show (:func:`coincide`), are drawn wide and pale underneath, so both stay visible
    instead of one hiding the other."""
    return {"lw": 5.0, "alpha": 0.35} if twin else {"lw": 1.6, "alpha": 1.0}


def coincide(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """Whether two curves would be drawn one over the other: the same length, and apart by no
    more than 1/1000 of their joint range anywhere (NaN where the other is NaN)."""
    if a is None or b is None or len(a) != len(b):
        return False
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) and math.isnan(y))]
    if any(math.isnan(x) or math.isnan(y) for x, y in pairs):
        return False
    finite = [v for p in pairs for v in p if math.isfinite(v)]
    span = max(finite) - min(finite) if finite else 0.0
    return all(x == y or abs(x - y) <= 1e-3 * span for x, y in pairs)


@literal
def loss_curves(
    runs: Sequence[RunResult],
    title: str = "",
    split: str = "test",
    ylabel: str = "loss",
    labels: Sequence[str] | None = None,
) -> Figure:
    """Train loss (solid) and ``split`` loss (dashed) per run on one shared epoch axis.

    Train points come every epoch, evaluation points every ``eval_every`` epochs, both drawn
    against their true epoch numbers (the article drew its 11 test points on a 0–10 axis).
    The best evaluation epoch of each run is marked. The legend names every run.
    """
    fig = Figure(figsize=(8, 4.5))  # no pyplot: no global figure state, no GUI backend
    ax = fig.subplots()
    colors = palette(len(runs))
    labels = list(labels) if labels is not None else run_labels(runs)
    key = f"{split}_loss"
    for i, r in enumerate(runs):
        c = r.curves
        color = colors[i]
        twin = any(coincide(o.curves["train_loss"], c["train_loss"]) for o in runs[i + 1 :])
        style = {"color": color, **_style(twin)}
        ax.plot(c["epoch"], c["train_loss"], **style, **_lone(c["train_loss"]), label=labels[i])
        if key in c:
            ax.plot(c["eval_epoch"], c[key], ls="--", **style, **_lone(c[key]))
            if r.best.get("metric") == key:
                ax.plot([r.best["epoch"]], [r.best["value"]], marker="o", color=color, ms=5)
    ax.plot([], [], color="0.3", label="train")
    ax.plot([], [], color="0.3", ls="--", label=split)
    epoch_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Loss curves", fontsize=10)
    ax.grid(alpha=0.3)
    legend(ax, ncol=2)
    fig.tight_layout()
    return fig


@literal
def wd_curve(
    runs: Sequence[RunResult],
    c: Criterion,
    chosen: dict[tuple[str, float], float] | None = None,
    title: str = "",
) -> Figure:
    """Validation (solid) and test (dashed) scores against weight decay on a log axis.

    One colour per (mode, lr); the band spans the seeds' min..max around their mean. wd = 0
    has its own place, a tick ``0`` left of the log range behind a dotted break, so a wd = 0
    choice can be starred like any other; ``chosen`` (per (mode, lr): the weight decay to use,
    the answer table's) is starred.
    """
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    keys = list(dict.fromkeys((r.config.mode, r.config.lr) for r in runs))
    keys = [k for k in keys if decays(k[0])] or keys
    colors = palette(len(keys))
    pos = sorted({r.config.weight_decay for r in runs if r.config.weight_decay > 0})
    x0 = _zero_position(pos)
    for i, (mode, lr) in enumerate(keys):
        color = colors[i]
        label = f"{mode}, lr {short(lr)}" if len({k[1] for k in keys}) > 1 else mode
        scores = wd_scores(runs, mode, lr, c)
        for part, ls in enumerate(("-", "--")):  # validation, test
            by = {w: [s[part] for s in v if math.isfinite(s[part])] for w, v in scores.items()}
            by = {w: v for w, v in by.items() if v}
            _draw_split(ax, by, pos, x0, color, ls, label if part == 0 else None)
        w = (chosen or {}).get((mode, lr))
        vals = [s[0] for s in scores.get(w, []) if math.isfinite(s[0])] if w is not None else []
        if vals:
            x = x0 if w == 0 else w
            ax.plot([x], [statistics.fmean(vals)], marker="*", ms=15, color=color, mec="black")
    ax.set_xscale("log")
    _zero_axis(ax, pos, x0, set((chosen or {}).values()))
    ax.set_xlabel("weight decay (log scale; 0 left of the break)")
    ax.set_ylabel(c.name)
    ax.set_title(title or f"{c.name} against weight decay (★ the weight decay to use)", fontsize=10)
    ax.grid(alpha=0.3, which="major")
    ax.plot([], [], color="0.3", label="validation")  # one entry per (mode, lr), and the styles
    ax.plot([], [], color="0.3", ls="--", label="test")
    legend(ax, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the axes, never over a
    # curve or a band (inside, "best" put it over a peak at the grid's edge: a browser trial)
    fig.tight_layout()
    return fig


def epoch_axis(ax: Any) -> None:
    """An x axis of epochs (once drawn): labelled, its ticks whole epochs (not 2.5 or 0.2),
    two epochs wide at least (one point's axis ran −0.04 to 0.04)."""
    ax.set_xlabel("epoch")
    lo, hi = ax.get_xlim()
    if hi - lo < 2:
        ax.set_xlim((lo + hi) / 2 - 1, (lo + hi) / 2 + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _lone(values: Sequence[float]) -> dict[str, Any]:
    """A marker where a curve has one finite point (a line through one point draws nothing:
    a run that diverged after its first evaluation)."""
    return {"marker": "o", "ms": 4} if sum(map(math.isfinite, values)) == 1 else {}


def legend(ax: Any, **kw: Any) -> None:
    """The axes' legend, where something is labelled (an unfinished study may have nothing
    drawn yet: matplotlib would warn on stderr)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, **kw)


def _zero_position(pos: Sequence[float]) -> float:
    """Where wd = 0 sits on a log axis: a little more than half a decade left of the smallest
    positive weight decay (further for wide ranges)."""
    if not pos:
        return 1.0
    decades = math.log10(pos[-1] / pos[0]) if len(pos) > 1 else 1.0
    return pos[0] / 10 ** max(0.6, 0.12 * decades)


def _spaced_labels(
    ticks: Sequence[float], labels: Sequence[str], always: Collection[int] = ()
) -> list[str]:
    """``labels`` with those too close on the log axis to one shown left blank (a tick still
    marks each swept weight decay), so that 0.55 and 0.56 do not print over each other; the
    first, the last and those at indices ``always`` (the starred weight decays) are shown."""
    logs = [math.log10(t) for t in ticks]
    gap = (logs[-1] - logs[0]) / 12 if len(logs) > 1 else 0.0
    shown = {0, len(logs) - 1, *always}
    for i, x in enumerate(logs):
        if i not in shown and all(abs(x - logs[j]) >= gap for j in shown):
            shown.add(i)
    return [label if i in shown else "" for i, label in enumerate(labels)]


def _zero_axis(ax: Any, pos: Sequence[float], x0: float, starred: Collection[float] = ()) -> None:
    """Ticks at 0 and at each swept weight decay (short notation), a dotted break between;
    the ``starred`` weight decays' labels always shown."""
    from matplotlib.ticker import NullLocator

    ticks = [x0, *pos]
    always = [0 if w == 0 else 1 + pos.index(w) for w in starred if w == 0 or w in pos]
    labels = _spaced_labels(ticks, ["0", *(short(w) for w in pos)], always)
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    if pos:
        ax.axvline(math.sqrt(x0 * pos[0]), color="0.55", lw=1.0, ls=(0, (1, 2)))
        ax.set_xlim(x0 / 10**0.3, pos[-1] * 10**0.3)


def wd_scores(
    runs: Sequence[RunResult], mode: str, lr: float, c: Criterion
) -> dict[float, list[tuple[float, float, int | None]]]:
    """(val, test, epoch) per seed for each weight decay of (mode, lr), wd = 0 included."""
    out: dict[float, list[tuple[float, float, int | None]]] = {}
    for r in runs:
        if (r.config.mode, r.config.lr) == (mode, lr):
            out.setdefault(r.config.weight_decay, []).append(run_scores(r, c))
    if 0.0 not in out:
        zero = zero_runs(runs, mode, lr)
        if zero:
            out[0.0] = [run_scores(r, c) for r in zero]
    return out


def _draw_split(
    ax: Any,
    by: dict[float, list[float]],
    swept: Sequence[float],
    x0: float,
    color: Any,
    ls: str,
    label: str | None,
) -> None:
    """One (mode, lr, split) series: the positive weight decays as a line with a min..max
    band, wd = 0 as a point with its range, joined by a dotted segment across the break. The
    line and band break at a weight decay of ``swept`` with no finished score (pruned at a
    rung, or diverged): no line is drawn across a value that was not measured."""
    pos = sorted(w for w in by if w > 0)
    mean = {w: statistics.fmean(v) for w, v in by.items()}
    if pos:
        at = [w for w in swept if pos[0] <= w <= pos[-1]]
        ys = [mean.get(w, math.nan) for w in at]
        ax.plot(at, ys, ls=ls, color=color, marker="o", ms=3, label=label)
        lo = [min(by[w]) if w in by else math.nan for w in at]
        hi = [max(by[w]) if w in by else math.nan for w in at]
        ax.fill_between(at, lo, hi, color=color, alpha=0.15, lw=0)
    if 0.0 in by:
        z = by[0.0]
        err = [[max(0.0, mean[0.0] - min(z))], [max(0.0, max(z) - mean[0.0])]]  # rounding
        ax.errorbar(  # labelled where it is the series' only point (every wd > 0 pruned)
            [x0], [mean[0.0]], yerr=err, color=color, marker="o", ms=4, capsize=3,
            label=None if pos or label is None else f"{label} (wd = 0 only)",
        )  # fmt: skip
        if pos and pos[0] == swept[0]:  # across the break, to a measured first weight decay
            ax.plot([x0, pos[0]], [mean[0.0], mean[pos[0]]], ls=":", color=color, lw=0.9)


@literal
def gap_curves(
    runs: Sequence[RunResult], split: str = "test", labels: Sequence[str] | None = None
) -> Figure:
    """``split`` loss − train loss (the same weights, after each evaluated epoch) per run."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    colors = palette(len(runs))
    labels = list(labels) if labels is not None else run_labels(runs)
    for i, r in enumerate(runs):
        c = r.curves
        if f"{split}_loss" not in c or "train_loss_eval" not in c:
            continue
        gap = [a - b for a, b in zip(c[f"{split}_loss"], c["train_loss_eval"], strict=True)]
        twin = any(
            coincide(o.curves.get(f"{split}_loss"), c[f"{split}_loss"]) for o in runs[i + 1 :]
        )
        style = {"color": colors[i], **_style(twin), **_lone(gap)}
        ax.plot(c["eval_epoch"], gap, **style, label=labels[i])
    ax.axhline(0, color="black", lw=0.6)
    epoch_axis(ax)
    ax.set_ylabel(f"{split} loss − train loss")
    ax.set_title("Generalisation gap", fontsize=10)
    ax.grid(alpha=0.3)
    legend(ax, ncol=2)
    fig.tight_layout()
    return fig


@literal
def weight_norm_curves(runs: Sequence[RunResult], labels: Sequence[str] | None = None) -> Figure:
    """The L2 norm of the decayed tensors, every epoch, per run."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    colors = palette(len(runs))
    labels = list(labels) if labels is not None else run_labels(runs)
    for i, r in enumerate(runs):
        c = r.curves
        twin = any(
            coincide(o.curves.get("weight_norm"), c.get("weight_norm")) for o in runs[i + 1 :]
        )
        ax.plot(
            c["epoch"],
            c["weight_norm"],
            color=colors[i],
            **_style(twin),
            **_lone(c["weight_norm"]),
            label=labels[i],
        )
    epoch_axis(ax)
    ax.set_ylabel("‖w‖ of the decayed tensors")
    ax.set_title("Weight norm", fontsize=10)
    ax.grid(alpha=0.3)
    legend(ax, ncol=2)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class FigureSpec:
    """One report figure: file stem, when it applies (``needs``, in words), caption, drawing."""

    name: str
    applies: Callable[[Result], bool]
    caption: Callable[[Result], str]
    draw: Callable[[Result], Figure]
    needs: str = ""


def criterion_of(result: Result) -> Criterion:
    """The criterion the result's selection used; with none yet (no run finished), the one it
    will use (the study's ``select``, a user's own metric), else the task's headline metric."""
    if result.selection:
        return selection_criterion(result.selection)
    config, data = getattr(result, "config", None), getattr(result, "data", None)
    if isinstance(config, Mapping) and isinstance(data, Mapping):
        with contextlib.suppress(ValueError):  # (a direction not stored: the headline's)
            return criterion(result.task, *study_metric(config, data))
    key, name, higher = metric_for(result.task)
    return Criterion(key, name, higher)


def answer_cells(result: Result) -> dict[tuple[str, float], float]:
    """The weight decay to use per (mode, lr) (:func:`~wdlab.records.use_wd`): the one
    definition the answer table, the wd plot's ★ and the heatmap's ★ all mark."""
    return {(s["mode"], s["lr"]): use_wd(s) for s in result.selection}


def swept(result: Result) -> bool:
    """Whether a result swept weight decay (two values besides 0) and chose one."""
    wds = {r.config.weight_decay for r in result.runs}
    return len(wds - {0.0}) >= 2 and bool(result.selection)
