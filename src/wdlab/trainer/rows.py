"""The trainer's optimizer: one real ``torch.optim`` optimizer over the stacked rows, with the
decay driver attached.

Configurations that share the optimizer's settings (a :class:`~wdlab.trainer.plan.ConfigGroup`)
form one torch parameter group whose tensors are *views* of their rows of the stacked tensors
(the stacked tensors themselves for a group of every row), so torch's own update code runs and
any element-wise torch optimizer and lr scheduler works. Each group's decay is one
:class:`~wdlab.decay.DecayGroup` over its decaying views, with one weight decay per row where
the rows differ, applied by the same driver :meth:`wdlab.decay.Decay.attach` uses
(:class:`~wdlab.decay.Driver`): a step is "gradients into the views, ``optimizer.step()``".
Tensors with a weight decay of their own (``group_wd``) form decay groups of their own, and a
weight-decay schedule makes each group's weight decay a function of the step
(:mod:`.decays`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from wdlab.decay import WD, DecayGroup, DecayTable, Driver
from wdlab.engines import Engine
from wdlab.trainer.decays import WeightDecays
from wdlab.trainer.plan import ConfigGroup, Plan
from wdlab.trainer.schedules import make_scheduler


@dataclass
class RowGroup:
    """One torch parameter group: configuration group ``config``'s rows of the stacked
    tensors ``names``, as ``views`` (``whole``: the group holds every row, and the views are
    the stacked tensors themselves)."""

    config: ConfigGroup
    names: list[str]
    views: list[Tensor]
    whole: bool
    own: float | None = None  # builtin: the tensors' own weight decay (group_wd), if any


class RowOptimizer:
    """The optimizer, its lr scheduler and the decay driver over an engine's stacked rows.

    ``by_gradient``: the stacked tensors whose ``l2`` term is applied as its gradient (all of
    them under a hand-written backward; else the engine's own, e.g. Gram coefficients); the
    others take it as a loss term (:meth:`loss_term`), under autograd.
    """

    def __init__(
        self,
        plan: Plan,
        engine: Engine,
        groups: Sequence[ConfigGroup],
        table: DecayTable,
        by_gradient: set[str],
    ) -> None:
        self.full = engine.tensors
        rows = {r["name"]: r for r in table.rows}
        self.decays = {n: rows[engine.parameter(n)]["decays"] for n in self.full}
        self.normalized = {n: rows[engine.parameter(n)]["normalized"] for n in self.full}
        self.wds = WeightDecays.of(plan, engine, table)
        self.rows: list[RowGroup] = []
        torch_groups: list[dict] = []
        for g in groups:
            # split by decay only where torch applies weight decay itself (builtin): fewer
            # groups, less per-step optimizer overhead
            for flag in (True, False) if g.builtin_wd else (None,):
                names = [n for n in self.full if flag is None or self.decays[n] is flag]
                for own, part in self.wds.split(names) if flag else [(None, names)]:
                    if part:  # builtin: one torch group per weight decay of its own
                        self.rows.append(self._row_group(g, part, len(engine), own))
                        torch_groups.append(self._torch_group(self.rows[-1], flag))
        base = {"lr": groups[0].lr, **plan.optimizer.implementation(groups[0].options)}
        self.optimizer = plan.optimizer.cls(torch_groups, **base)
        entries = [
            (rg.config.mode, dg)
            for rg, pg in zip(self.rows, self.optimizer.param_groups, strict=True)
            for dg in self._decay_groups(rg, pg, by_gradient)
        ]
        self.driver = Driver(entries)
        self.scheduler = make_scheduler(
            self.optimizer, plan.schedule, plan.epochs, plan.total_steps
        )

    def _row_group(
        self, g: ConfigGroup, names: list[str], k: int, own: float | None = None
    ) -> RowGroup:
        whole = g.rows == slice(0, k)
        views = [
            self.full[n] if whole else self.full[n].detach()[g.rows].requires_grad_(True)
            for n in names
        ]
        return RowGroup(g, names, views, whole, own)

    def _torch_group(self, rg: RowGroup, flag: bool | None) -> dict:
        g = rg.config
        return {
            "params": rg.views,
            "lr": g.lr,
            "weight_decay": self.wds.at_start(g.builtin_wd, rg.own) if flag else 0.0,
            **g.options,
        }

    def _decay_groups(self, rg: RowGroup, pg: dict, by_gradient: set[str]) -> list[DecayGroup]:
        """The decay groups of one row group: for a mode wdlab applies, its decaying views by
        their weight decay (one per row where the rows differ); for ``builtin`` under a
        schedule, the torch group whose ``weight_decay`` the driver sets each step."""
        g = rg.config
        decayed = [n for n in rg.names if self.decays[n]]
        if g.mode.optimizer_wd and self.wds.schedule is not None and g.builtin_wd and decayed:
            return [DecayGroup(pg, rg.views, wd=self.wds.wd(g.builtin_wd, rg.own))]
        if not g.mode.by_wdlab:
            return []
        return [
            self._decay_group(rg, pg, by_gradient, part, self.wds.wd(g.wd, own))
            for own, part in self.wds.split(decayed)
        ]

    def _decay_group(
        self,
        rg: RowGroup,
        pg: dict,
        by_gradient: set[str],
        names: list[str],
        wd: WD | Callable[[int], WD],
    ) -> DecayGroup:
        """The decay of some decaying tensors of one row group, at weight decay ``wd``."""
        g = rg.config
        view = dict(zip(rg.names, rg.views, strict=True))
        decayed = [(n, view[n]) for n in names]
        loss_names = [n for n, _ in decayed if n not in by_gradient]
        return DecayGroup(
            pg,
            [v for _, v in decayed],
            wd=wd,
            lr0=g.lr,
            anchor=[v.detach().clone() for _, v in decayed] if g.mode.needs_anchor else None,
            normalized=[self.normalized[n] for n, _ in decayed],
            by_gradient=[v for n, v in decayed if n in by_gradient],
            loss_params=_rows_of(self.full, loss_names, g.rows) if g.mode.penalty else None,
        )

    def attach(self) -> None:
        """Hook the decay driver onto the optimizer's step (see :class:`wdlab.decay.Driver`)."""
        self.driver.attach(self.optimizer)

    def loss_term(self, losses: Tensor) -> Tensor:
        """Σ_k loss_k plus the ``l2`` loss terms, for autograd."""
        return self.driver.loss_term(losses.sum(), per_row=True)

    def step(self) -> None:
        """One update of every configuration: the gradients into the views, then the
        optimizer's step (the decay driver acts at its points around it)."""
        with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
            for rg in self.rows:
                if not rg.whole:
                    for n, v in zip(rg.names, rg.views, strict=True):
                        v.grad = self.full[n].grad[rg.config.rows]
            self.optimizer.step()


def _rows_of(
    full: Mapping[str, Tensor], names: list[str], rows: slice
) -> Callable[[], list[Tensor]]:
    """Autograd views of some rows of the named stacked tensors, made afresh at each call."""
    return lambda: [full[n][rows] for n in names]
