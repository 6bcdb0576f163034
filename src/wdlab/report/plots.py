"""Matplotlib figures. Every function returns a ``Figure`` and never shows it.

The drawing functions take runs; :data:`FIGURES` is the registry of the figures a report has,
each drawn from a result value with its caption. Adding a figure is one entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from matplotlib import rcParams
from matplotlib.figure import Figure

from wdlab.records import Result, RunResult
from wdlab.selection import eval_split, metric_for, representative
from wdlab.tasks import get_task


def loss_curves(
    runs: Sequence[RunResult], title: str = "", split: str = "test", ylabel: str = "loss"
) -> Figure:
    """Train loss (solid) and ``split`` loss (dashed) per run on one shared epoch axis.

    Train points come every epoch, evaluation points every ``eval_every`` epochs, both drawn
    against their true epoch numbers (the article drew its 11 test points on a 0–10 axis).
    The best evaluation epoch of each run is marked.
    """
    fig = Figure(figsize=(8, 4.5))  # no pyplot: no global figure state, no GUI backend
    ax = fig.subplots()
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    key = f"{split}_loss"
    for i, r in enumerate(runs):
        c = r.curves
        color = colors[i % len(colors)]
        # A run whose curves equal a later one's (manual ≡ builtin) is drawn wide and pale
        # underneath, so both stay visible instead of one hiding the other.
        twin = any(o.curves["train_loss"] == c["train_loss"] for o in runs[i + 1 :])
        lw, alpha = (5.0, 0.35) if twin else (1.6, 1.0)
        style = {"color": color, "lw": lw, "alpha": alpha}
        ax.plot(c["epoch"], c["train_loss"], **style, label=f"{r.config.name} train")
        if key in c:
            ax.plot(c["eval_epoch"], c[key], ls="--", **style, label=f"{r.config.name} {split}")
            if r.best.get("metric") == key:
                ax.plot([r.best["epoch"]], [r.best["value"]], marker="o", color=color, ms=5)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Loss curves", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def wd_curve(
    runs: Sequence[RunResult],
    metric: str,
    metric_name: str,
    chosen: dict[tuple[str, float], float] | None = None,
    title: str = "",
) -> Figure:
    """Validation (solid) and test (dashed) ``metric`` against weight decay on a log axis.

    One colour per (mode, lr); the band spans the seeds' min..max around their mean; wd = 0
    is drawn as a horizontal reference line (it has no place on a log axis); the weight decay
    chosen on validation is marked with a star.
    """
    import math
    import statistics

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    keys = list(dict.fromkeys((r.config.mode, r.config.lr) for r in runs))
    for i, (mode, lr) in enumerate(keys):
        color = colors[i % len(colors)]
        mine = [r for r in runs if (r.config.mode, r.config.lr) == (mode, lr)]
        label = f"{mode}, lr {lr:g}" if len({k[1] for k in keys}) > 1 else mode
        for split, ls in (("val", "-"), ("test", "--")):
            key = f"{split}_{metric}"
            by: dict[float, list[float]] = {}
            for r in mine:
                v = r.final.get(key, math.nan)
                if math.isfinite(v):
                    by.setdefault(r.config.weight_decay, []).append(v)
            if not by:
                continue
            pos = sorted(w for w in by if w > 0)
            if pos:
                mean = [statistics.fmean(by[w]) for w in pos]
                ax.plot(pos, mean, ls=ls, color=color, marker="o", ms=3, label=f"{label} {split}")
                ax.fill_between(
                    pos,
                    [min(by[w]) for w in pos],
                    [max(by[w]) for w in pos],
                    color=color,
                    alpha=0.15,
                    lw=0,
                )
            if 0.0 in by:
                ax.axhline(statistics.fmean(by[0.0]), color=color, ls=ls, lw=0.8, alpha=0.6)
            if split == "val" and chosen and (mode, lr) in chosen and chosen[(mode, lr)] > 0:
                w = chosen[(mode, lr)]
                ax.plot(
                    [w],
                    [statistics.fmean(by[w])],
                    marker="*",
                    ms=14,
                    color=color,
                    markeredgecolor="black",
                )
    ax.set_xscale("log")
    ax.set_xlabel("weight decay (log scale; thin horizontal lines: wd = 0)")
    ax.set_ylabel(metric_name)
    ax.set_title(
        title or f"{metric_name} against weight decay (★ chosen on validation)", fontsize=10
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def gap_curves(runs: Sequence[RunResult], split: str = "test") -> Figure:
    """``split`` loss − train loss (the same weights, after each evaluated epoch) per run."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(runs):
        c = r.curves
        if f"{split}_loss" not in c or "train_loss_eval" not in c:
            continue
        gap = [a - b for a, b in zip(c[f"{split}_loss"], c["train_loss_eval"], strict=True)]
        twin = any(o.curves.get(f"{split}_loss") == c[f"{split}_loss"] for o in runs[i + 1 :])
        lw, alpha = (5.0, 0.35) if twin else (1.6, 1.0)
        ax.plot(
            c["eval_epoch"],
            gap,
            color=colors[i % len(colors)],
            lw=lw,
            alpha=alpha,
            label=r.config.name,
        )
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} loss − train loss")
    ax.set_title("Generalisation gap", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def weight_norm_curves(runs: Sequence[RunResult]) -> Figure:
    """The L2 norm of the decayed tensors, every epoch, per run."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(runs):
        c = r.curves
        twin = any(o.curves.get("weight_norm") == c.get("weight_norm") for o in runs[i + 1 :])
        lw, alpha = (5.0, 0.35) if twin else (1.6, 1.0)
        ax.plot(
            c["epoch"],
            c["weight_norm"],
            color=colors[i % len(colors)],
            lw=lw,
            alpha=alpha,
            label=r.config.name,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("‖w‖ of the decayed tensors")
    ax.set_title("Weight norm", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def lr_wd_heatmap(runs: Sequence[RunResult], metric: str, metric_name: str) -> Figure:
    """Validation ``metric`` (mean over seeds) over lr × weight decay, one panel per mode."""
    import math
    import statistics

    modes = list(dict.fromkeys(r.config.mode for r in runs if r.config.weight_decay > 0))
    lrs = sorted({r.config.lr for r in runs})
    wds = sorted({r.config.weight_decay for r in runs if r.config.weight_decay > 0})
    fig = Figure(figsize=(4.2 * max(1, len(modes)), 3.8))
    axes = fig.subplots(1, max(1, len(modes)), squeeze=False)[0]
    key = f"val_{metric}" if any(f"val_{metric}" in r.final for r in runs) else f"test_{metric}"
    image = None
    for ax, mode in zip(axes, modes, strict=False):
        grid = []
        for lr in lrs:
            row = []
            for wd in wds:
                vals = [
                    r.final.get(key, math.nan)
                    for r in runs
                    if (r.config.mode, r.config.lr, r.config.weight_decay) == (mode, lr, wd)
                ]
                vals = [v for v in vals if math.isfinite(v)]
                row.append(statistics.fmean(vals) if vals else math.nan)
            grid.append(row)
        image = ax.imshow(grid, aspect="auto", origin="lower", cmap="viridis")
        ax.set_xticks(range(len(wds)), [f"{w:.0e}" for w in wds], rotation=60, fontsize=7)
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs], fontsize=8)
        ax.set_xlabel("weight decay")
        ax.set_ylabel("lr")
        ax.set_title(mode, fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label=f"{key.split('_')[0]} {metric_name}")
    return fig


# ---------------------------------------------------------------------------------------------
# The figures of a result value.


@dataclass(frozen=True)
class FigureSpec:
    """One report figure: its file stem, when it applies, its caption and how to draw it."""

    name: str
    applies: Callable[[Result], bool]
    caption: Callable[[Result], str]
    draw: Callable[[Result], Figure]


def _loss_title(result: Result) -> str:
    if result.kind == "demo":
        s = result.config
        return (
            f"The article's experiment: random labels, dim {s['dim']}, SGD lr {s['lr']:g}, "
            f"wd {s['weight_decay']:g}, {s['epochs'] + 1} steps"
        )
    split = eval_split(result.runs)
    return f"{result.data.get('name', '')}: train (solid) and {split} (dashed) loss"


def _shown(result: Result) -> list[RunResult]:
    return representative(result.runs)


def _chosen(result: Result) -> dict[tuple[str, float], float]:
    return {(s["mode"], s["lr"]): s["best_wd"] for s in result.selection}


def _swept(result: Result) -> bool:
    wds = {r.config.weight_decay for r in result.runs}
    return len(wds - {0.0}) >= 2 and bool(result.selection)


def _draw_wd(result: Result) -> Figure:
    key, name, _ = metric_for(result.task)
    return wd_curve(result.runs, key, name, _chosen(result))


def _draw_heatmap(result: Result) -> Figure:
    key, name, _ = metric_for(result.task)
    return lr_wd_heatmap(result.runs, key, name)


FIGURES: dict[str, FigureSpec] = {
    f.name: f
    for f in (
        FigureSpec(
            "losses",
            lambda r: True,
            lambda r: (
                f"Train loss (solid) and {eval_split(r.runs)} loss (dashed) on one epoch "
                f"axis; dots mark each run's best {eval_split(r.runs)} epoch. Look for "
                f"{eval_split(r.runs)} loss rising while train loss falls: overfitting."
            ),
            lambda r: loss_curves(
                _shown(r), _loss_title(r), eval_split(r.runs), get_task(r.task).loss_name
            ),
        ),
        FigureSpec(
            "gap",
            lambda r: True,
            lambda r: (
                f"Generalisation gap ({eval_split(r.runs)} loss − train loss) over "
                "epochs. Decay should keep it small; a growing gap is memorisation."
            ),
            lambda r: gap_curves(_shown(r), eval_split(r.runs)),
        ),
        FigureSpec(
            "weight_norm",
            lambda r: True,
            lambda r: "L2 norm of the decayed tensors over epochs. Decay visibly shrinks it.",
            lambda r: weight_norm_curves(_shown(r)),
        ),
        FigureSpec(
            "wd_curve",
            _swept,
            lambda r: (
                f"Validation (solid) and test (dashed) {metric_for(r.task)[1]} against "
                "weight decay (log axis), band over seeds; ★ the wd chosen on validation; thin "
                "lines: wd = 0."
            ),
            _draw_wd,
        ),
        FigureSpec(
            "heatmap",
            lambda r: _swept(r) and len({x.config.lr for x in r.runs}) >= 2,
            lambda r: (
                f"Validation {metric_for(r.task)[1]} over lr × weight decay, one panel "
                "per mode. Adam + l2 beside decoupled is Loshchilov & Hutter's picture: "
                "decoupling makes the best wd independent of the lr."
            ),
            _draw_heatmap,
        ),
    )
}

#: Short names accepted by ``result.plot(kind)``.
PLOT_KINDS = {"loss": "losses", "wd": "wd_curve", "weight_norm": "weight_norm", "gap": "gap"}


def figure(result: Result, kind: str) -> Figure:
    """The figure ``kind`` (a :data:`FIGURES` name or a :data:`PLOT_KINDS` short name)."""
    spec = FIGURES.get(PLOT_KINDS.get(kind, kind))
    if spec is None:
        raise ValueError(f"unknown plot {kind!r}; valid: {', '.join(PLOT_KINDS)}")
    return spec.draw(result)
