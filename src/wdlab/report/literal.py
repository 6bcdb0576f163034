"""Names are text: every figure is drawn with matplotlib's mathtext off, so a user's string
(a file name ``prices_$US_vs_$EU.csv``, a study name, a layer name) reaches the PNG as typed
(``$``, ``_``, ``^`` shown literally), never parsed as TeX or refused by the parser. A log
axis's tick labels, which matplotlib writes in mathtext (``$\\mathdefault{10^{-1}}$``), are
written as plain numbers instead (``1e−01``), so they are not shown as code."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, LogFormatterMathtext

P = ParamSpec("P")
R = TypeVar("R")


def literal(draw: Callable[P, R]) -> Callable[P, R]:
    """``draw`` with ``text.parse_math`` off while it builds its figure (each text keeps the
    setting when the figure is saved or shown later)."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with rc_context({"text.parse_math": False}):
            out = draw(*args, **kwargs)
            if isinstance(out, Figure):
                _plain_log_ticks(out)
            return out

    return wrapper


def _plain_log_ticks(fig: Figure) -> None:
    """Every log axis of ``fig`` that matplotlib labels in mathtext labelled by its plain-text
    log formatter instead (a figure's own formatter is kept)."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), LogFormatterMathtext):
                axis.set_major_formatter(LogFormatter())
            if isinstance(axis.get_minor_formatter(), LogFormatterMathtext):
                axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
