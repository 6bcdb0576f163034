"""Equivalence checks: wdlab's decay modes against torch.optim and scikit-learn."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass
class Check:
    """One equivalence check: what was compared with what, and how far apart they ended."""

    name: str
    reference: str
    max_abs_diff: float
    max_rel_diff: float
    identical: bool
    tolerance: float
    passed: bool
    detail: str = ""

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def max_diffs(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> tuple[float, float, bool]:
    """(max |a−b|, max |a−b| / max |b|, bitwise identical) over tensors with the same names."""
    if set(a) != set(b):
        raise ValueError(f"parameter names differ: {sorted(set(a) ^ set(b))}")
    abs_diff, scale, identical = 0.0, 0.0, True
    for name in a:
        x, y = a[name].detach().double(), b[name].detach().double()
        if x.shape != y.shape:
            raise ValueError(f"shape of {name} differs: {tuple(x.shape)} vs {tuple(y.shape)}")
        identical &= torch.equal(a[name], b[name])
        if x.numel():
            abs_diff = max(abs_diff, float((x - y).abs().max()))
            scale = max(scale, float(y.abs().max()))
    rel = abs_diff / scale if scale > 0 else (0.0 if abs_diff == 0 else math.inf)
    return abs_diff, rel, identical


def compare(
    name: str,
    reference: str,
    ours: Mapping[str, Tensor],
    theirs: Mapping[str, Tensor],
    *,
    tolerance: float = 0.0,
    detail: str = "",
) -> Check:
    """Compare two sets of tensors; ``tolerance`` 0 asks for bitwise identity (relative else)."""
    abs_diff, rel, identical = max_diffs(ours, theirs)
    passed = identical if tolerance == 0 else rel <= tolerance
    return Check(name, reference, abs_diff, rel, identical, tolerance, passed, detail)
