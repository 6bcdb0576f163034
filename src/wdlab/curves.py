"""Curves: a run's series on two epoch axes (every epoch, and the evaluations), read like a
dict; what :mod:`wdlab.records` stores for each run."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

PER_EPOCH = ("train_loss", "weight_norm")  # recorded every epoch; the rest at evaluations
DIAGNOSTIC_PREFIX = "diag."  # diagnostics' series (wdlab.diagnostics) are per epoch too


def is_per_epoch(name: str) -> bool:
    """Whether series ``name`` has one value per epoch (else one per evaluation)."""
    return name in PER_EPOCH or name.startswith(DIAGNOSTIC_PREFIX)


def nan_of(v: Any) -> Any:
    """JSON's null back to NaN (JSON has no NaN; results files write null)."""
    return math.nan if v is None else v


@dataclass(eq=False)
class Curves(Mapping[str, list]):
    """A run's curves: ``series`` by name, on two epoch axes.

    Series named in :data:`PER_EPOCH` (and diagnostics, ``diag.…``) have one value per
    ``epoch``; every other series has one value per ``eval_epoch`` (the evaluations, made with
    the weights after that epoch's update). ``train_loss`` is the epoch's mean over its
    mini-batches, each weighted by its examples (a short last batch counts for what it holds);
    ``train_loss_eval`` is the evaluation's, over the training split with the weights after
    the update, as the tables report it.
    ``curves["name"]`` reads ``epoch``, ``eval_epoch`` or a series, as a dict would.
    """

    epoch: list[int] = field(default_factory=list)
    eval_epoch: list[int] = field(default_factory=list)
    series: dict[str, list[float]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> list:
        if key == "epoch":
            return self.epoch
        if key == "eval_epoch":
            return self.eval_epoch
        return self.series[key]

    def __iter__(self) -> Iterator[str]:
        per_epoch = [k for k in self.series if is_per_epoch(k)]
        per_eval = [k for k in self.series if not is_per_epoch(k)]
        yield from ["epoch", *per_epoch, "eval_epoch", *per_eval]

    def __len__(self) -> int:
        return 2 + len(self.series)

    def __repr__(self) -> str:
        """A short summary: the epochs, the evaluations and the series' names."""
        names = ", ".join(self.series)
        return f"Curves({len(self.epoch)} epochs, {len(self.eval_epoch)} evaluations: {names})"

    def axis(self, name: str) -> list[int]:
        """The epochs of series ``name``: every epoch, or the evaluation epochs."""
        return self.epoch if is_per_epoch(name) else self.eval_epoch

    def upto(self, epochs: int) -> Curves:
        """The curves of the first ``epochs`` epochs (a run that stopped there); the axes are
        increasing, so each cut is a bisection (this runs once per run of every batch)."""
        n_epoch = bisect.bisect_left(self.epoch, epochs)
        n_eval = bisect.bisect_left(self.eval_epoch, epochs)
        if n_epoch == len(self.epoch) and n_eval == len(self.eval_epoch):
            return Curves(self.epoch, self.eval_epoch, dict(self.series))  # nothing to cut
        series = {k: v[: n_epoch if is_per_epoch(k) else n_eval] for k, v in self.series.items()}
        return Curves(self.epoch[:n_epoch], self.eval_epoch[:n_eval], series)

    def cut(self, epoch: int) -> None:
        """NaN from ``epoch`` on (a run that diverged there)."""
        for name, values in self.series.items():
            self.series[name] = [
                v if e < epoch else math.nan for e, v in zip(self.axis(name), values, strict=True)
            ]

    def to_dict(self) -> dict[str, list]:
        """JSON-ready form: ``epoch``, the per-epoch series, ``eval_epoch``, the rest."""
        return {k: list(self[k]) for k in self}

    @classmethod
    def from_dict(cls, d: Mapping[str, list]) -> Curves:
        """The inverse of :meth:`to_dict` (JSON nulls become NaN)."""
        series = {
            k: [nan_of(v) for v in vs] for k, vs in d.items() if k not in ("epoch", "eval_epoch")
        }
        return cls(list(d.get("epoch", [])), list(d.get("eval_epoch", [])), series)
