"""The colours of a figure's lines: one each, and never grey, which the figures keep for what
is not one of them (a stopped cell, a reference, the styles' legend entries)."""

from __future__ import annotations

from typing import Any

from matplotlib import colormaps, rcParams
from matplotlib.colors import to_rgb


def _coloured(colors: list[Any]) -> list[Any]:
    """``colors`` without the greys (their red, green and blue equal)."""
    return [c for c in colors if len(set(to_rgb(c))) > 1]


def colors(n: int) -> list[Any]:
    """``n`` colours, each its own and none grey: matplotlib's cycle (9 without its grey),
    else tab20 (18), else a spectrum."""
    cycle = _coloured(list(rcParams["axes.prop_cycle"].by_key()["color"]))
    if n <= len(cycle):
        return cycle[:n]
    tab20 = _coloured([colormaps["tab20"](i) for i in range(20)])
    if n <= len(tab20):
        return tab20[:n]
    return [colormaps["nipy_spectral"](0.05 + 0.85 * i / (n - 1)) for i in range(n)]
