"""The lr × weight-decay heatmap: the validation score per (lr, wd) of each mode, each panel on
its own colour scale, ★ on the weight decay to use for each (mode, lr) (the cells the answer
table and the wd plot mark). :data:`HEATMAP` is its report entry (a :class:`FigureSpec`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from wdlab.records import Result, RunResult
from wdlab.report.literal import literal
from wdlab.report.plots import FigureSpec, answer_cells, criterion_of, swept, wd_scores
from wdlab.report.standard import ANSWER_MARK, gaps
from wdlab.report.text import short
from wdlab.selection import Criterion

#: The heatmap panels' colour maps, in turn (each panel its own: :func:`lr_wd_heatmap`).
MAPS = ("viridis", "plasma", "cividis", "magma")


def heatmap_grid(
    runs: Sequence[RunResult], mode: str, lrs: Sequence[float], wds: Sequence[float], c: Criterion
) -> list[list[float]]:
    """Mean validation score over seeds for each (lr, wd) of ``mode``; wd = 0 from the mode's
    own runs or the wd = 0 reference at that lr; NaN where a seed did not finish."""
    grid = []
    for lr in lrs:
        scores = wd_scores(runs, mode, lr, c)
        row = []
        for wd in wds:
            vals = [s[0] for s in scores.get(wd, [])]
            ok = vals and all(math.isfinite(v) for v in vals)
            row.append(statistics.fmean(vals) if ok else math.nan)
        grid.append(row)
    return grid


def heatmap_cells(
    runs: Sequence[RunResult], c: Criterion
) -> tuple[list[str], list[float], list[float], list[list[list[float]]]]:
    """(modes, lrs, weight decays with 0 first, one lr × wd grid of validation scores per
    mode): what the heatmap draws and its caption names."""
    modes = list(dict.fromkeys(r.config.mode for r in runs if r.config.weight_decay > 0))
    lrs = sorted({r.config.lr for r in runs})
    wds = [0.0, *sorted({r.config.weight_decay for r in runs if r.config.weight_decay > 0})]
    return modes, lrs, wds, [heatmap_grid(runs, m, lrs, wds, c) for m in modes]


def panel_range(grid: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """(lowest, highest) finite score of one heatmap panel: its own colour scale."""
    finite = [v for row in grid for v in row if math.isfinite(v)]
    return (min(finite), max(finite)) if finite else None


def marked_cells(
    modes: Sequence[str],
    lrs: Sequence[float],
    wds: Sequence[float],
    chosen: Mapping[tuple[str, float], float],
) -> dict[str, list[tuple[int, int]]]:
    """Per mode, the (row, column) of each lr's weight decay to use: the cells the ★ marks,
    the same choice the answer table and the wd plot mark."""
    out: dict[str, list[tuple[int, int]]] = {}
    for mode in modes:
        out[mode] = [
            (i, wds.index(chosen[(mode, lr)]))
            for i, lr in enumerate(lrs)
            if chosen.get((mode, lr)) in wds
        ]
    return out


@literal
def lr_wd_heatmap(
    runs: Sequence[RunResult],
    c: Criterion,
    chosen: Mapping[tuple[str, float], float] | None = None,
) -> Figure:
    """Validation score (mean over seeds) over lr × weight decay, one panel per mode, each on
    its own colour scale and map (brighter is better; its colour bar gives its range); column 0 is
    wd = 0; ★ marks the weight decay to use for each (mode, lr) in ``chosen``."""
    from matplotlib.colors import Normalize

    modes, lrs, wds, grids = heatmap_cells(runs, c)
    marks = marked_cells(modes, lrs, wds, chosen or {})
    n = max(1, len(modes))
    fig = Figure(figsize=(0.6 + 5.0 * n, 4.2), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    better = "brighter is better" + ("" if c.higher else ": lower")
    for k, (ax, mode, grid) in enumerate(zip(axes, modes, grids, strict=False)):
        span = panel_range(grid)
        norm = Normalize(*span) if span and span[0] < span[1] else None
        # a colour map of its own per panel: one colour is one value only within a panel
        cmap = MAPS[k % len(MAPS)] + ("" if c.higher else "_r")
        image = ax.imshow(grid, aspect="auto", origin="lower", cmap=cmap, norm=norm)
        ax.axvline(0.5, color="white", lw=3)  # wd = 0 is its own column, apart from the rest
        for i, j in marks.get(mode, []):
            ax.plot([j], [i], marker="*", ms=16, color="white", mec="black")
        ax.set_xticks(range(len(wds)), [short(w) for w in wds], rotation=60, fontsize=7)
        ax.set_yticks(range(len(lrs)), [short(lr) for lr in lrs], fontsize=8)
        ax.set_xlabel("weight decay")
        if k == 0:
            ax.set_ylabel("lr")
        ax.set_title(mode, fontsize=10)
        label = f"val {c.name}, mean over seeds ({better}; this panel's own scale)"
        fig.colorbar(image, ax=ax, label=label)
    return fig


# ---------------------------------------------------------------------------------------------
# The figures of a result value.


def _heatmap_applies(result: Result) -> bool:
    return swept(result) and len({x.config.lr for x in result.runs}) >= 2


def _draw_heatmap(result: Result) -> Figure:
    return lr_wd_heatmap(result.runs, criterion_of(result), answer_cells(result))


def _heatmap_caption(r: Result) -> str:
    c = criterion_of(r)
    modes, lrs, wds, grids = heatmap_cells(r.runs, c)
    marks = marked_cells(modes, lrs, wds, answer_cells(r))
    ranges, cells = [], []
    for mode, grid in zip(modes, grids, strict=True):
        span = panel_range(grid)
        if span is not None:
            ranges.append(f"{mode} {span[0]:.4g} to {span[1]:.4g}")
        for i, j in marks[mode]:
            cells.append(f"{mode}: lr {short(lrs[i])}, wd {short(wds[j])} ({grid[i][j]:.4g})")
    return (
        f"Validation {c.name} (mean over seeds) over lr × weight decay, one panel per mode, each "
        f"on its own colour scale ({'; '.join(ranges) or 'no finite score'}); the first column "
        f"is wd = 0. {ANSWER_MARK}: {'; '.join(cells) or 'none'}."
    ) + gaps(r, "A blank cell")


HEATMAP = FigureSpec(
    "heatmap",
    _heatmap_applies,
    _heatmap_caption,
    _draw_heatmap,
    "two weight decays > 0 and two lrs swept, and a weight decay chosen on validation",
)
