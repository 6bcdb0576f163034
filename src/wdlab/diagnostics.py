"""Opt-in training diagnostics, recorded per layer and epoch (a registry).

Placeholder: the issue-15 work fills this module with ``rotation`` (Kosson et al., ICML 2024).
Contract used by the trainer (every tensor is stacked: a leading dimension K, one row per
configuration): ``make(name, weights, configs, optimizer)`` builds a diagnostic for the named
weights; the trainer calls ``before_step(tensors)`` and ``after_step(tensors)`` around every
optimizer step, ``end_epoch(epoch)`` after each epoch, and ``series(row)`` at the end: per-epoch
series whose names start with ``diag.`` (stored and plotted like the train loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from torch import Tensor

from wdlab.optimizers import OptimizerSpec
from wdlab.records import RunConfig


class Diagnostic(Protocol):
    """What the trainer calls; see the module docstring."""

    def before_step(self, tensors: dict[str, Tensor]) -> None: ...
    def after_step(self, tensors: dict[str, Tensor]) -> None: ...
    def end_epoch(self, epoch: int) -> None: ...
    def series(self, row: int) -> dict[str, list[float]]: ...


DIAGNOSTICS: dict[str, type] = {}


def make(
    name: str, weights: Sequence[str], configs: Sequence[RunConfig], optimizer: OptimizerSpec
) -> Diagnostic:
    """The diagnostic called ``name`` over the named (stacked) weights."""
    cls = DIAGNOSTICS.get(name)
    if cls is None:
        raise ValueError(
            f"unknown diagnostics {name!r}; valid: {', '.join(DIAGNOSTICS) or 'none yet'}"
        )
    return cls(weights, configs, optimizer)
