"""Names are text: every figure is drawn with matplotlib's mathtext off, so a user's string
(a file name ``prices_$US_vs_$EU.csv``, a study name, a layer name) reaches the PNG as typed
(``$``, ``_``, ``^`` shown literally), never parsed as TeX or refused by the parser."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from matplotlib import rc_context

P = ParamSpec("P")
R = TypeVar("R")


def literal(draw: Callable[P, R]) -> Callable[P, R]:
    """``draw`` with ``text.parse_math`` off while it builds its figure (each text keeps the
    setting when the figure is saved or shown later)."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return wrapper
