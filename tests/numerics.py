"""Norm-wise comparison for "same maths, different rounding" claims.

Two float32 computations of the same maths through different kernels (batched vs alone, the Gram
path vs the standard one, AVX-512 vs AVX2 vs the default kernels, a hand-written backward vs
autograd) agree to rounding, not to bits. Element-wise relative checks then fail on entries
near zero, on some CPUs and not on others. These helpers compare whole sets of tensors as
‖Δ‖/‖ref‖ over all their elements (in float64).

The bounds used in the suite follow from float32's unit roundoff u = 2⁻²⁴ ≈ 6.0e-8:

* ``ONE_PASS`` (1e-6): one forward or backward pass. Each output is a reduction whose order a
  kernel may change; the relative error of such a sum is a few u for the short reductions here
  (≤ 48 terms, √48·u ≈ 4e-7), so 1e-6 leaves ~2× headroom and still fails for a wrong formula
  (which moves results by ≥ 1e-3).
* ``per_steps(T)`` (T·4·u ≈ T·2.4e-7, at least 1e-6): T training steps. Each step adds a few u
  of relative rounding to the weights, and for the small, contracting learning rates of these
  tests the differences add up at most linearly: 40 steps give 1e-5. Measured worst cases
  across the default, AVX2 and AVX-512 kernel paths are 3–10× below it.

Over a few small steps the weights barely move, so ‖Δw_T‖/‖w_T‖ would hide a wrong update:
compare the updates themselves, :func:`updates` (w_T − w₀), within the same ``per_steps(T)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

U = 2.0**-24  # float32 unit roundoff
ONE_PASS = 1e-6


def per_steps(steps: int) -> float:
    """The norm-wise bound for ``steps`` float32 training steps (see the module docstring)."""
    return max(ONE_PASS, steps * 4 * U)


def updates(after: Mapping[str, Tensor], before: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """What training changed: ``after[n] − before[n]`` for every name of ``before``."""
    return {n: after[n].detach().cpu() - before[n].detach().cpu() for n in before}


def _flat(x: Tensor | Mapping[str, Tensor] | Sequence[float]) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().double().flatten().cpu()
    if isinstance(x, Mapping):
        return torch.cat([_flat(x[k]) for k in sorted(x)])
    return torch.tensor(list(x), dtype=torch.float64)


def rel_dist(actual: object, expected: object) -> float:
    """‖actual − expected‖ / ‖expected‖ over every element (tensors, dicts of them, lists)."""
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        assert set(actual) == set(expected), sorted(set(actual) ^ set(expected))
    a, e = _flat(actual), _flat(expected)
    assert a.shape == e.shape, (a.shape, e.shape)
    num, den = float((a - e).norm()), float(e.norm())
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def assert_normwise(actual: object, expected: object, bound: float, what: str = "") -> None:
    """Fail unless ‖actual − expected‖ / ‖expected‖ ≤ ``bound``."""
    d = rel_dist(actual, expected)
    assert d <= bound, f"{what}: ‖Δ‖/‖ref‖ = {d:.3g} > {bound:.3g}"
