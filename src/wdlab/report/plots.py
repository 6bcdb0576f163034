"""Matplotlib figures. Every function returns a ``Figure`` and never shows it."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib import rcParams
from matplotlib.figure import Figure

from wdlab.engine import RunResult


def loss_curves(runs: Sequence[RunResult], title: str = "", split: str = "test") -> Figure:
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
    ax.set_ylabel("loss (BCE)" if runs and "test_acc" in runs[0].curves else "loss")
    ax.set_title(title or "Loss curves", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig
