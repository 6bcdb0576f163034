"""Comparing two sets of tensors for a check: bitwise, or norm-wise within a bound
(:mod:`wdlab.numerics`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from wdlab.numerics import rel_dist
from wdlab.records import Check


def max_diffs(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> tuple[float, float, bool]:
    """(max |a−b|, ‖a−b‖/‖b‖ over every element, bitwise identical) over tensors with the same
    names."""
    if set(a) != set(b):
        raise ValueError(f"parameter names differ: {sorted(set(a) ^ set(b))}")
    abs_diff, identical = 0.0, True
    for name in a:
        x, y = a[name].detach().double(), b[name].detach().double()
        if x.shape != y.shape:
            raise ValueError(f"shape of {name} differs: {tuple(x.shape)} vs {tuple(y.shape)}")
        identical &= torch.equal(a[name], b[name])
        if x.numel():
            abs_diff = max(abs_diff, float((x - y).abs().max()))
    rel = rel_dist(a, b) if abs_diff > 0 else 0.0
    return abs_diff, (rel if math.isfinite(rel) else math.inf), identical


def compare(
    name: str,
    reference: str,
    ours: Mapping[str, Tensor],
    theirs: Mapping[str, Tensor],
    *,
    tolerance: float = 0.0,
    detail: str = "",
) -> Check:
    """Compare two sets of tensors: ``tolerance`` 0 asks for bitwise identity, else a
    norm-wise bound ‖ours − theirs‖/‖theirs‖ ≤ ``tolerance`` (one of :mod:`wdlab.numerics`)."""
    abs_diff, rel, identical = max_diffs(ours, theirs)
    passed = identical if tolerance == 0 else rel <= tolerance
    return Check(name, reference, abs_diff, rel, identical, tolerance, passed, detail)
