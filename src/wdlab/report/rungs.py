"""Successive halving's figure: each cell's validation score against the epochs it trained, the
stopped cells ending at their rung, the rungs marked; and the compute the sweep used against
the full grid's (:func:`wdlab.report.text.compute_text`). :data:`RUNGS` is its report entry."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from wdlab.records import Result, RunResult
from wdlab.report.literal import literal
from wdlab.report.palette import colors as palette
from wdlab.report.plots import FigureSpec, answer_cells, criterion_of, legend
from wdlab.report.text import compute_text, short
from wdlab.selection import Criterion

Cell = tuple[str, float, float]  # (mode, lr, weight decay)


def cell_curves(
    runs: Sequence[RunResult], c: Criterion
) -> dict[Cell, tuple[list[int], list[float], str]]:
    """Per cell: the epochs trained at each evaluation, the validation score there (mean over
    the seeds that reached it, NaN where one was not finite) and the cell's fate (``done``,
    ``pruned``, ``diverged``)."""
    key = f"val_{c.key}"
    by: dict[Cell, list[RunResult]] = {}
    for r in runs:
        if key in r.curves.series:
            by.setdefault((r.config.mode, r.config.lr, r.config.weight_decay), []).append(r)
    out = {}
    for cell, rs in by.items():
        n = max(len(r.curves[key]) for r in rs)
        epochs = next(list(r.curves.eval_epoch) for r in rs if len(r.curves[key]) == n)
        ys = []
        for i in range(n):
            vals = [r.curves[key][i] for r in rs if i < len(r.curves[key])]
            ok = all(math.isfinite(v) for v in vals)
            ys.append(statistics.fmean(vals) if ok else math.nan)
        fates = {r.status for r in rs}
        fate = "pruned" if "pruned" in fates else ("diverged" if "diverged" in fates else "done")
        out[cell] = ([e + 1 for e in epochs], ys, fate)
    return out


@literal
def rung_figure(
    runs: Sequence[RunResult],
    c: Criterion,
    rungs: Sequence[int],
    chosen: Mapping[tuple[str, float], float] | None = None,
    compute: str = "",
) -> Figure:
    """Validation score (mean over seeds) of every mode × lr × weight-decay cell against the
    epochs trained: cells never pruned in colour (one per mode and lr, each named by its weight
    decay where it ends), stopped ones in grey, ending where they stopped (a dot); the rungs
    dashed; ★ the weight decay to use (named in the legend too, as ★s may coincide, beside
    the weight decays of that colour never pruned);
    ``compute``, the compute used, under the title."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    curves = cell_curves(runs, c)
    settings = sorted({cell[:2] for cell in curves})  # (mode, lr): one colour each
    colors = palette(len(settings))
    modes = {mode for mode, _ in settings}
    for r in rungs:
        ax.axvline(r, color="0.6", lw=1, ls="--")
    # the cells trained to the end first, the stopped ones over them (thin, grey, a dot where
    # each stopped), so that both stay visible where their curves run together
    ends: list[tuple[float, float, str, str]] = []  # where each cell never pruned ends
    for cell, (xs, ys, fate) in sorted(curves.items(), key=lambda kv: kv[1][2] != "done"):
        color = colors[settings.index(cell[:2])] if fate == "done" else "0.55"
        ax.plot(xs, ys, color=color, lw=1.8 if fate == "done" else 0.8, alpha=0.9)
        if fate != "done" and xs:
            ax.plot([xs[-1]], [ys[-1]], marker="o", ms=3, color="0.35")
        if fate == "done" and xs and math.isfinite(ys[-1]):
            ends.append((xs[-1], ys[-1], f"wd {short(cell[2])}", color))
        if (chosen or {}).get(cell[:2]) == cell[2] and fate == "done":
            ax.plot([xs[-1]], [ys[-1]], marker="*", ms=14, color=color, mec="black")
    drawn = {cell[:2] for cell, (_, _, fate) in curves.items() if fate == "done"}
    for i, (mode, lr) in enumerate(settings):
        name = f"{mode}, lr {short(lr)}" if len(modes) > 1 else f"lr {short(lr)}"
        wd = (chosen or {}).get((mode, lr))
        star = (
            f", ★ wd {short(wd)}"
            if (mode, lr, wd) in curves and curves[(mode, lr, wd)][2] == "done"
            else ""
        )
        if (mode, lr) in drawn:  # a legend entry for what is drawn in that colour only
            kept = _wds(
                cell[2] for cell, v in curves.items() if cell[:2] == (mode, lr) and v[2] == "done"
            )
            ax.plot([], [], color=colors[i], label=f"{name}: {kept} never pruned{star}")
    ax.plot([], [], color="0.55", marker="o", ms=3, label="stopped (pruned or diverged)")
    ax.plot([], [], color="0.6", ls="--", label="rungs")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel(f"validation {c.name} (mean over seeds)")
    title = "Successive halving: each mode × lr × wd cell, stopped ones end at their rung"
    ax.set_title(title + (f"\n{compute}" if compute else ""), fontsize=10)
    ax.margins(x=0.12)  # room for the weight decays named where the lines end
    _name_ends(ax, ends)
    ax.grid(alpha=0.3)
    legend(ax)
    fig.tight_layout()
    return fig


def _wds(wds: Iterable[float], most: int = 4) -> str:
    """``wd 0, 0.001``: the weight decays of a legend entry, the first ``most`` and a count."""
    shown = sorted(wds)
    more = f", … ({len(shown)})" if len(shown) > most else ""
    return "wd " + ", ".join(short(w) for w in shown[:most]) + more


def _name_ends(ax: Axes, ends: list[tuple[float, float, str, str]]) -> None:
    """Each line never pruned named by its weight decay right of its end, the names moved
    apart (bottom to top) where the lines end together, as they often do near the best."""
    low, high = ax.get_ylim()
    gap, at = 0.045 * (high - low), [-math.inf]
    ends = sorted(ends, key=lambda e: e[1])
    for _, y, _, _ in ends:
        at.append(max(y, at[-1] + gap))
    over = max(0.0, at[-1] - (high - gap / 2)) if ends else 0.0  # kept inside the axes
    for (x, y, text, color), label_y in zip(ends, at[1:], strict=True):
        ax.annotate(text, (x, y), xytext=(9, label_y - over), textcoords=("offset points", "data"),
                    fontsize=7, color=color, va="center", annotation_clip=False)  # fmt: skip


def _applies(result: Result) -> bool:
    return bool(result.halving.get("decisions")) and bool(result.runs)


def _decided(result: Result) -> list[int]:
    """The rungs decided so far (all of them in a whole study)."""
    return [int(d["rung"]) for d in result.halving.get("decisions", [])]


def _draw(result: Result) -> Figure:
    c = criterion_of(result)
    used = _used(result.halving.get("compute") or {})
    return rung_figure(result.runs, c, _decided(result), answer_cells(result), used)


def _used(comp: Mapping[str, Any]) -> str:
    """The compute used, in the figure's words (the caption has the whole sentence)."""
    if not comp:
        return ""
    so_far = " so far" if comp.get("finished_only") else ""
    return (
        f"compute used{so_far}: {comp['fraction']:.0%} of the full grid's configuration-epochs "
        f"({comp['configuration_epochs']:,} of {comp['full_grid_epochs']:,})"
    )


def _caption(result: Result) -> str:
    c = criterion_of(result)
    curves = cell_curves(result.runs, c)
    to_end = sum(fate == "done" for _, _, fate in curves.values())
    rungs = ", ".join(str(r) for r in _decided(result))
    chosen = answer_cells(result)
    star = any(chosen.get(cell[:2]) == cell[2] and f == "done" for cell, (*_, f) in curves.items())
    text = (
        f"Validation {c.name} (mean over seeds) of each mode × lr × weight-decay cell against "
        f"the epochs trained. Successive halving ranked the cells after {rungs} epochs (dashed) "
        f"and kept the best 1/{result.halving.get('eta')} (with every wd = 0 cell and any cell "
        f"within one standard error of the best); "
        + (
            f"all {to_end} cells finished: none was pruned."
            if to_end == len(curves)
            else f"{to_end} of the {len(curves)} cells drawn were never pruned (each named by "
            "its weight decay where it ends); the others (grey) stopped at a rung or diverged, "
            "and end there."
        )
        + (
            f" The cells still training are not drawn ({result.partial_note()})."
            if result.partial
            else ""
        )
        + (" ★: the weight decay to use." if star else "")
    )
    comp = compute_text(result.halving)
    return f"{text} {comp[:1].upper()}{comp[1:]}." if comp else text


RUNGS = FigureSpec(
    "rungs", _applies, _caption, _draw, "a sweep pruned by successive halving (prune=True)"
)
