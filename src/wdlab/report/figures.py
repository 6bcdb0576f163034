"""The report's figures: one registry. Adding a figure is one :class:`FigureSpec` (beside its
drawing function) and one entry here."""

from __future__ import annotations

from matplotlib.figure import Figure

from wdlab.records import Result
from wdlab.report.heatmap import HEATMAP
from wdlab.report.plots import FigureSpec
from wdlab.report.rotation import ROTATION
from wdlab.report.rungs import RUNGS
from wdlab.report.standard import STANDARD

#: Every figure a report can have, in report order; each says when it applies.
FIGURES: dict[str, FigureSpec] = {f.name: f for f in (*STANDARD, HEATMAP, RUNGS, ROTATION)}

#: Short names accepted by ``result.plot(kind)``.
PLOT_KINDS = {
    "loss": "losses",
    "wd": "wd_curve",
    "weight_norm": "weight_norm",
    "gap": "gap",
    "rotation": "rotation",
    "rungs": "rungs",
    "heatmap": "heatmap",
}


def figure(result: Result, kind: str) -> Figure:
    """The figure ``kind`` (a :data:`FIGURES` name or a :data:`PLOT_KINDS` short name); a
    ``ValueError`` where it does not apply to ``result`` (as the report leaves it out)."""
    spec = FIGURES.get(PLOT_KINDS.get(kind, kind))
    if spec is None:
        raise ValueError(f"unknown plot {kind!r}; valid: {', '.join(PLOT_KINDS)}")
    if not spec.applies(result):
        yet = f" (among its finished runs: {result.partial_note()})" if result.partial else ""
        raise ValueError(f"no {kind!r} figure for this result: it needs {spec.needs}{yet}")
    return spec.draw(result)
