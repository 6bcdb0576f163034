"""Norm-wise comparison for "same maths, different rounding" claims in the tests: the bounds and
the distance are :mod:`wdlab.numerics` (``wdlab verify`` uses the same), read its docstring for
why each bound holds; :func:`assert_normwise` fails with the distance and the bound."""

from __future__ import annotations

from wdlab.numerics import ONE_PASS, U64, U, per_steps, rel_dist

__all__ = ["ONE_PASS", "U64", "U", "assert_normwise", "per_steps", "rel_dist"]


def assert_normwise(actual: object, expected: object, bound: float, what: str = "") -> None:
    """Fail unless ‖actual − expected‖ / ‖expected‖ ≤ ``bound``."""
    d = rel_dist(actual, expected)
    assert d <= bound, f"{what}: ‖Δ‖/‖ref‖ = {d:.3g} > {bound:.3g}"
