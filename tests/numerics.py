"""Norm-wise comparison for "same maths, different rounding" claims in the tests: the bounds and
the distance are :mod:`wdlab.numerics` (``wdlab verify`` uses the same), read its docstring for
why each bound holds; :func:`assert_normwise` fails with the distance and the bound.

Over a few small steps the weights barely move, so ‖Δw_T‖/‖w_T‖ would hide a wrong update:
compare the updates themselves, :func:`updates` (w_T − w₀), within the same ``per_steps(T)``.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from wdlab.numerics import ONE_PASS, U64, U, per_steps, rel_dist

__all__ = ["ONE_PASS", "U64", "U", "assert_normwise", "per_steps", "rel_dist", "updates"]


def updates(after: Mapping[str, Tensor], before: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """What training changed: ``after[n] − before[n]`` for every name of ``before``."""
    return {n: after[n].detach().cpu() - before[n].detach().cpu() for n in before}


def assert_normwise(actual: object, expected: object, bound: float, what: str = "") -> None:
    """Fail unless ‖actual − expected‖ / ‖expected‖ ≤ ``bound``."""
    d = rel_dist(actual, expected)
    assert d <= bound, f"{what}: ‖Δ‖/‖ref‖ = {d:.3g} > {bound:.3g}"
