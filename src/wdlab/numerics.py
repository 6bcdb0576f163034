"""Norm-wise comparison for "same maths, different rounding" claims, and the bounds it uses.

Two computations of the same maths through different kernels (batched vs alone, the Gram path
vs the standard one, AVX-512 vs AVX2 vs the default kernels, a hand-written backward vs
autograd, a decay attached to torch's optimizer vs its own ``weight_decay``) agree to rounding,
not to bits. Element-wise relative checks then fail on entries near zero, on some CPUs and not
on others. :func:`rel_dist` compares whole sets of tensors as ‖Δ‖/‖ref‖ over all their
elements (in float64); ``wdlab verify`` and the test suite use it with these bounds, which
follow from the unit roundoff u (float32: :data:`U` = 2⁻²⁴ ≈ 6.0e-8; float64: :data:`U64`):

* :data:`ONE_PASS` (1e-6 in float32): one forward or backward pass. Each output is a reduction
  whose order a kernel may change; the relative error of such a sum is a few u for the short
  reductions here (≤ 48 terms, √48·u ≈ 4e-7), so 1e-6 leaves ~2× headroom and still fails for
  a wrong formula (which moves results by ≥ 1e-3).
* :func:`per_steps` (T·4·u, at least one pass's bound): T training steps. Each step adds a few
  u of relative rounding to the weights, and for the small, contracting learning rates used
  here the differences add up at most linearly: 40 float32 steps give 1e-5. Measured worst
  cases across the default, AVX2 and AVX-512 kernel paths are 3–10× below it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

U = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53  # float64 unit roundoff
ONE_PASS = 1e-6  # one float32 pass (see the module docstring)
DIFFERS = 1e-3  # a different formula moves results by at least this much (norm-wise)


def per_steps(steps: int, unit: float = U) -> float:
    """The norm-wise bound for ``steps`` training steps in the float type of roundoff ``unit``
    (float32 by default; :data:`U64` for float64): steps·4·u, at least one pass's bound."""
    return max(ONE_PASS * unit / U, steps * 4 * unit)


def _flat(x: Tensor | Mapping[str, Tensor] | Sequence[float]) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach().double().flatten().cpu()
    if isinstance(x, Mapping):
        if not x:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([_flat(x[k]) for k in sorted(x)])
    return torch.tensor(list(x), dtype=torch.float64)


def rel_dist(actual: object, expected: object) -> float:
    """‖actual − expected‖ / ‖expected‖ over every element (tensors, dicts of them by name,
    lists of numbers); 0 when both are zero, inf when only ``expected`` is."""
    if (
        isinstance(actual, Mapping)
        and isinstance(expected, Mapping)
        and set(actual) != set(expected)
    ):
        raise ValueError(f"names differ: {sorted(set(actual) ^ set(expected))}")
    a, e = _flat(actual), _flat(expected)
    if a.shape != e.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(e.shape)}")
    num, den = float((a - e).norm()), float(e.norm())
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)
