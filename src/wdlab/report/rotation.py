"""The rotation figure: each layer's neuron norm and angular update against the rotational
equilibrium of Kosson, Messmer & Jaggi, "Rotational Equilibrium: How Weight Decay Balances
Learning Across Neural Networks" (ICML 2024), from the ``rotation`` diagnostic's series
(:mod:`wdlab.diagnostics`). :data:`ROTATION` is its report entry (a :class:`FigureSpec`)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from matplotlib.figure import Figure

from wdlab.diagnostics import PREFIX
from wdlab.records import Result, RunResult
from wdlab.report.literal import literal
from wdlab.report.palette import colors as palette
from wdlab.report.plots import FigureSpec, epoch_axis
from wdlab.report.shown import representative

KINDS = (("norm", "RMS neuron norm ‖ω‖"), ("angle", "mean angle per step (rad)"))
TOLERANCE = 0.2  # "at equilibrium": the trailing 5-epoch mean within 20% of the prediction
WINDOW = 5

CAPTION = (
    "Rotational equilibrium per layer (columns): the RMS norm of the neurons' weight vectors "
    "(rows of a weight matrix, convolution filters) after each epoch (top) and the mean angle "
    "a neuron turns per optimizer step (bottom), solid, against the equilibrium of Kosson, "
    "Messmer & Jaggi (ICML 2024), dashed: AdamW ‖ω‖ = √(η·C/(2λ)), angle √(2η·λ·(1−β₁)/"
    "(1+β₁)); SGD with momentum α and torch's coupled decay ‖ω‖ = (η·E‖g̃‖²/(2λ(1−α)))^¼ from "
    "the measured gradient scale, angle √(2η·λ/(1+α)); C weights per neuron. A dotted line "
    "marks the epoch from which a layer's 5-epoch mean stays within 20% of the prediction. "
    "The formulas assume neurons followed by a normalization (scale-invariant), gradients that "
    "stay noisy and a steady lr: the output layer, a memorised training set (vanishing "
    "gradients) or the end of a decaying schedule sit elsewhere."
)


def rotation_layers(runs: Sequence[RunResult]) -> list[str]:
    """The weights the ``rotation`` diagnostic recorded, in order."""
    names: dict[str, None] = {}
    for r in runs:
        for key in r.curves.series:
            if key.startswith(PREFIX) and key.endswith(".norm"):
                names[key[len(PREFIX) : -len(".norm")]] = None
    return list(names)


def reached(
    measured: Sequence[float],
    predicted: Sequence[float],
    tol: float = TOLERANCE,
    window: int = WINDOW,
) -> int | None:
    """The first epoch index from which the mean of the last ``window`` measured values stays
    within ``tol`` (relative) of the prediction; ``None`` if it never settles there or nothing
    is predicted. (The mean: one epoch's values scatter around the equilibrium.)"""
    first = None
    for i, p in enumerate(predicted):
        m = statistics.fmean(measured[max(0, i - window + 1) : i + 1])
        ok = math.isfinite(m) and math.isfinite(p) and p > 0 and abs(m - p) <= tol * p
        if not ok:
            first = None
        elif first is None:
            first = i
    return first


@literal
def rotation_figure(runs: Sequence[RunResult]) -> Figure:
    """Two rows (norm, angle) by one column per recorded layer; one colour per run."""
    layers = rotation_layers(runs)
    if not layers:
        raise ValueError(
            "no rotation diagnostics in these runs: train with diagnostics=('rotation',)"
        )
    fig = Figure(figsize=(3.4 * len(layers) + 1.0, 6.2))
    axes = fig.subplots(2, len(layers), squeeze=False)
    colors = palette(len(runs))
    for j, layer in enumerate(layers):
        for i, run in enumerate(runs):
            s, epochs = run.curves.series, run.curves.epoch
            color = colors[i]
            for row, (kind, _) in enumerate(KINDS):
                ax = axes[row][j]
                key = f"{PREFIX}{layer}.{kind}"
                if key not in s:
                    continue
                ax.plot(epochs, s[key], color=color, lw=1.4, label=run.config.name)
                ax.plot(epochs, s[f"{key}_eq"], color=color, lw=1.0, ls="--")
                at = reached(s[key], s[f"{key}_eq"])
                if at is not None:
                    ax.axvline(epochs[at], color=color, lw=0.8, ls=":")
        axes[0][j].set_title(layer, fontsize=9)
        for row, (_, label) in enumerate(KINDS):
            ax = axes[row][j]
            ax.set_yscale("log")
            epoch_axis(ax)
            ax.set_ylabel(label if j == 0 else "")
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Rotational equilibrium (solid: measured, dashed: predicted)", fontsize=10)
    fig.tight_layout()
    return fig


def _has_rotation(result: Result) -> bool:
    return bool(rotation_layers(result.runs))


ROTATION = FigureSpec(
    "rotation",
    _has_rotation,
    lambda r: CAPTION,
    lambda r: rotation_figure(representative(r.runs)),
    "runs trained with diagnostics=('rotation',)",
)
