"""The weight decays of the trainer's decay groups: one per row, per tensor group, per step.

A row's weight decay is its configuration's (``RunConfig.weight_decay``). ``group_wd`` gives the
decaying tensors a pattern matches a weight decay of their own (fnmatch patterns of parameter
names, taken in order, as :func:`wdlab.param_groups` takes its ``weight_decays``): in a row that
decays (wd > 0) they decay at that weight decay instead of the row's, as
``param_groups(model, Decay(mode, wd), weight_decays=group_wd)`` makes them; a row with wd = 0
is the no-decay reference every choice is measured against, and decays nothing. A weight-decay
schedule (``wd_schedule``) makes each of these a function of the optimizer step that starts at
it and follows the schedule's shape: ``schedule(step)·wd/START``
(:func:`wdlab.decay.schedules.scaled`), which is what ``Decay(mode, weight_decay=START,
schedule=...)`` does to a param group with a weight decay of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from wdlab.decay import WD, DecayTable, WDSchedule
from wdlab.decay.rules import own_groups
from wdlab.decay.schedules import scaled
from wdlab.engines import Engine
from wdlab.trainer.plan import Plan


@dataclass(frozen=True)
class WeightDecays:
    """``own``: stacked tensor name → its own weight decay (a name absent: the row's);
    ``schedule``: the weight-decay schedule, or ``None``."""

    own: dict[str, float]
    schedule: WDSchedule | None = None

    @classmethod
    def of(cls, plan: Plan, engine: Engine, table: DecayTable) -> WeightDecays:
        """The plan's ``group_wd`` and ``wd_schedule`` over an engine's stacked tensors (a
        pattern that matches no decaying tensor is refused in one line)."""
        groups = own_groups(table, dict(plan.group_wd))
        by_param = {name: wd for _, names, wd in groups for name in names}
        own = {n: by_param[p] for n in engine.tensors if (p := engine.parameter(n)) in by_param}
        return cls(own, plan.wd_schedule)

    def split(self, names: Sequence[str]) -> list[tuple[float | None, list[str]]]:
        """``names`` grouped by their own weight decay (``None``: the row's), in order."""
        out: dict[float | None, list[str]] = {}
        for n in names:
            out.setdefault(self.own.get(n), []).append(n)
        return list(out.items())

    def wd(self, row_wd: WD, own: float | None) -> WD | Callable[[int], WD]:
        """The weight decay of a tensor group whose rows decay at ``row_wd`` (a float, or one
        per row) and whose own weight decay is ``own``: a value, or a function of the step."""
        base = row_wd if own is None else own_per_row(row_wd, own)
        return base if self.schedule is None else scaled(self.schedule, base)

    def at_start(self, row_wd: WD, own: float | None) -> WD:
        """:meth:`wd` at step 0."""
        wd = self.wd(row_wd, own)
        return wd(0) if callable(wd) else wd


def own_per_row(row_wd: WD, own: float) -> WD:
    """``own`` in every row that decays (wd > 0), 0 in the others."""
    if isinstance(row_wd, torch.Tensor):  # own exactly (times 1.0), in the rows' dtype
        return (row_wd > 0).to(row_wd.dtype) * own
    return own if row_wd > 0 else 0.0
