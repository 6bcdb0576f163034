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
from typing import Any

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
        self.plan, self.engine, self.by_gradient = plan, engine, by_gradient
        self.full = engine.tensors
        rows = {r["name"]: r for r in table.rows}
        self.decays = {n: rows[engine.parameter(n)]["decays"] for n in self.full}
        self.normalized = {n: rows[engine.parameter(n)]["normalized"] for n in self.full}
        self.wds = WeightDecays.of(plan, engine, table)
        self._build(groups)

    def _build(self, groups: Sequence[ConfigGroup]) -> None:
        """The torch optimizer, the decay driver and the lr scheduler over ``groups``' rows of
        the engine's stacked tensors, freshly initialised."""
        self.groups = list(groups)
        self.rows: list[RowGroup] = []
        torch_groups: list[dict] = []
        for g in groups:
            # split by decay only where torch applies weight decay itself (builtin): fewer
            # groups, less per-step optimizer overhead
            for flag in (True, False) if g.builtin_wd else (None,):
                names = [
                    n
                    for n in self.full
                    if self.full[n].requires_grad and (flag is None or self.decays[n] is flag)
                ]  # a frozen tensor (requires_grad=False) is in no group: never trained
                for own, part in self.wds.split(names) if flag else [(None, names)]:
                    if part:  # builtin: one torch group per weight decay of its own
                        self.rows.append(self._row_group(g, part, len(self.engine), own))
                        torch_groups.append(self._torch_group(self.rows[-1], flag))
        plan = self.plan
        base = {"lr": groups[0].lr, **plan.optimizer.implementation(groups[0].options)}
        self.optimizer = plan.optimizer.cls(torch_groups, **base)
        owned = [
            (i, rg.config.mode, dg)
            for i, (rg, pg) in enumerate(zip(self.rows, self.optimizer.param_groups, strict=True))
            for dg in self._decay_groups(rg, pg, self.by_gradient)
        ]
        self.entry_rows = [i for i, _, _ in owned]  # each entry's position in :attr:`rows`
        self.entries = [(mode, dg) for _, mode, dg in owned]
        self.driver = Driver(self.entries)
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
                        grad = self.full[n].grad  # None: unused by the forward, not stepped
                        v.grad = None if grad is None else grad[rg.config.rows]
            self.optimizer.step()

    # -- the rows: the state, and dropping rows ---------------------------------------------

    def state(self) -> dict[str, Any]:
        """The optimizer's, the decay's and the scheduler's state (tensors and plain data;
        shares memory with them: valid until the next step). :meth:`load_state` restores it
        into a RowOptimizer over the same rows."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "decay": [{"step": g.step, "anchor": g.anchor} for _, g in self.entries],
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state` of a RowOptimizer over the same rows."""
        self.optimizer.load_state_dict(state["optimizer"])  # new param-group dicts:
        groups = self.optimizer.param_groups
        for (_, g), i in zip(self.entries, self.entry_rows, strict=True):
            g.group = groups[i]  # the decay reads the lr (as scheduled) from its group
        for (_, g), saved in zip(self.entries, state["decay"], strict=True):
            g.step = int(saved["step"])
            if saved["anchor"] is not None:
                g.anchor = [
                    a.to(p.device).clone() for a, p in zip(saved["anchor"], g.params, strict=True)
                ]
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (positions of the engine's rows before it kept them, ascending;
        the engine keeps them first). Each kept row's optimizer state, weight decay (as the
        same float or tensor entry), decay anchor and step, and lr go on unchanged; the
        optimizer, the driver and the scheduler are rebuilt over the kept rows (hook the
        driver on again: :meth:`attach`)."""
        old_rows, old_groups = self.rows, self.optimizer.param_groups
        old_state, old_entries = self.optimizer.state, self._entries_by_row()
        old_sched = self.scheduler.state_dict() if self.scheduler is not None else None
        self.driver.remove()
        groups, local = _kept_groups(self.groups, rows)
        self._build(groups)
        new_entries = self._entries_by_row()
        kept = [i for i, rg in enumerate(old_rows) if id(rg.config) in local]
        for j, i in enumerate(kept):
            old, new, idx = old_rows[i], self.rows[j], local[id(old_rows[i].config)]
            n = old.config.rows.stop - old.config.rows.start
            for ov, nv in zip(old.views, new.views, strict=True):
                if ov in old_state:
                    self.optimizer.state[nv] = {
                        k: _pick(v, idx, n) for k, v in old_state[ov].items()
                    }
            for old_dg, new_dg in zip(old_entries.get(i, []), new_entries.get(j, []), strict=True):
                _carry(old_dg, new_dg, idx)
        if old_sched is not None:
            self.scheduler.load_state_dict(_kept_lists(old_sched, kept, len(old_rows)))
        for j, i in enumerate(kept):  # the lr now (scheduled), its initial value, the options
            self.optimizer.param_groups[j].update(
                {k: v for k, v in old_groups[i].items() if k != "params"}
            )

    def _entries_by_row(self) -> dict[int, list[DecayGroup]]:
        """The decay groups of each position of :attr:`rows` that has some, in order."""
        out: dict[int, list[DecayGroup]] = {}
        for i, (_, dg) in zip(self.entry_rows, self.entries, strict=True):
            out.setdefault(i, []).append(dg)
        return out


def _kept_groups(
    groups: Sequence[ConfigGroup], rows: Sequence[int]
) -> tuple[list[ConfigGroup], dict[int, list[int]]]:
    """The config groups over the kept ``rows``, renumbered, each with its weight decay as
    before (a float, or its tensor's kept entries); and per old group (by id) the kept rows'
    positions within it."""
    out, local, start = [], {}, 0
    for g in groups:
        idx = [r - g.rows.start for r in rows if g.rows.start <= r < g.rows.stop]
        if not idx:
            continue
        wd = g.wd[idx] if isinstance(g.wd, Tensor) else g.wd
        out.append(ConfigGroup(g.key, slice(start, start + len(idx)), g.mode, wd))
        local[id(g)] = idx
        start += len(idx)
    return out, local


def _rows_of(
    full: Mapping[str, Tensor], names: list[str], rows: slice
) -> Callable[[], list[Tensor]]:
    """Autograd views of some rows of the named stacked tensors, made afresh at each call."""
    return lambda: [full[n][rows] for n in names]


def _pick(value: Any, idx: list[int], n: int) -> Any:
    """One optimizer-state entry of a group of ``n`` rows, for its kept rows ``idx``: a tensor
    whose leading dimension is the rows (moments, momentum) is indexed, anything else (the
    step) carried as it is."""
    if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == n:
        return value[idx].clone()
    return value.clone() if isinstance(value, Tensor) else value


def _carry(old: DecayGroup, new: DecayGroup, idx: list[int]) -> None:
    """The decay's state of the kept rows ``idx``: the step count and the anchors."""
    new.step = old.step
    if old.anchor is not None:
        new.anchor = [a[idx].clone() for a in old.anchor]


def _kept_lists(state: dict[str, Any], kept: list[int], n: int) -> dict[str, Any]:
    """A scheduler's state with its per-param-group lists (``base_lrs``, ``_last_lr``) cut to
    the ``kept`` groups of ``n``."""
    return {
        k: [v[i] for i in kept] if isinstance(v, list) and len(v) == n else v
        for k, v in state.items()
    }
