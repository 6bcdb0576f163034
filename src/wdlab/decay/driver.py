"""The one decay driver: every mode at its points of an optimizer step.

A step has four points, and a :class:`~wdlab.decay.modes.Mode` acts at some of them:

1. the loss (:func:`loss_term`): ``l2``'s (wd/2)·Σ‖w‖², which the caller adds before
   ``backward()``;
2. the gradient (:func:`at_gradient`, after ``backward()``): ``coupled``, ``to_init``, and
   ``l2``'s term as its gradient where no loss term is differentiated;
3. the update (:func:`at_update`, just before the optimizer's own update): ``decoupled``,
   ``independent``, ``corrected``; ``cautious`` keeps the weights;
4. after the update (:func:`after_update`): ``cautious``; then the group's step count moves on.

A mode whose optimizer does the work (``builtin``) acts at none of them: :func:`to_optimizer`
hands it the step's weight decay (its group's ``weight_decay``) before the step, where that
changes (a schedule). A group's weight decay is a float, one value per row, or a function of
its step count (:meth:`~wdlab.decay.group.DecayGroup.wd_now`).

Each runs over ``(mode, group)`` entries (:class:`~wdlab.decay.group.DecayGroup`). A
:class:`Driver` hooks points 2–4 onto an optimizer's ``step()`` (the trainer's, over its
stacked rows); :class:`wdlab.decay.attach.Attachment` does the same on a user's optimizer, where
closures, GradScaler and ``state_dict`` need a little more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from wdlab.decay.group import DecayGroup
from wdlab.decay.modes import Mode, l2_penalty

Entry = tuple[Mode, DecayGroup]


def loss_term(
    entries: Iterable[Entry], start: Tensor | None = None, *, per_row: bool = False
) -> Tensor:
    """Point 1: ``start`` plus (wd/2)·Σ‖w‖² of every group whose mode is a loss term (with
    ``per_row``: summed row by row, the rows being configurations), negated under
    ``maximize``. The tensors are the group's ``loss_params()`` (autograd views) where it has
    them, else its ``params``."""
    total = torch.zeros(()) if start is None else start
    for mode, g in entries:
        if not mode.penalty:
            continue
        params = g.loss_params() if g.loss_params is not None else g.params
        term = l2_penalty(params, g.wd_now(), per_row=per_row)
        term = term.sum() if per_row else term
        total = total - term if g.maximize else total + term
    return total


def to_optimizer(entries: Iterable[Entry]) -> None:
    """Before the step: the step's weight decay into the torch group of every mode whose
    optimizer applies it (``builtin``)."""
    for mode, g in entries:
        if mode.optimizer_wd:
            g.group["weight_decay"] = g.wd_now()


def at_gradient(entries: Iterable[Entry]) -> None:
    """Point 2: the gradient-point modes, after ``backward()`` (a sparse gradient, which
    takes no dense wd·w, refused in one line)."""
    for mode, g in entries:
        if mode.gradient is not None:
            if any(p.grad is not None and p.grad.is_sparse for p in g.params):
                raise ValueError(
                    f"mode '{mode.name}' adds to the gradient, and this one is sparse "
                    "(Embedding(sparse=True)): torch cannot add a dense wd·w to it; use mode "
                    "'decoupled' (it decays every row, also those the batch did not touch)"
                )
            mode.gradient(g, g.wd_now())


def at_update(entries: Iterable[Entry]) -> None:
    """Point 3: the modes that act just before the optimizer's update."""
    for mode, g in entries:
        if mode.update is not None:
            mode.update(g, g.wd_now())


def after_update(entries: Iterable[Entry]) -> None:
    """Point 4: the modes that act right after the update; every group's step moves on."""
    for mode, g in entries:
        if mode.after is not None:
            mode.after(g, g.wd_now())
        g.step += 1


class Driver:
    """Points 2–4 on every ``step()`` of one optimizer, over fixed decay groups."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = [(m, g) for m, g in entries if m.decays]
        # the entries acting before the step (built once: a step reads only these)
        self._before_step = [
            (m, g) for m, g in self.entries if m.optimizer_wd or m.gradient or m.update
        ]
        self._handles: list[Any] = []

    def loss_term(self, start: Tensor | None = None, *, per_row: bool = False) -> Tensor:
        """Point 1 over this driver's groups (see :func:`loss_term`)."""
        return loss_term(self.entries, start, per_row=per_row)

    def attach(self, optimizer: torch.optim.Optimizer) -> Driver:
        """Run points 2 and 3 (and :func:`to_optimizer`) before each ``optimizer.step()``,
        point 4 after it."""
        self._handles += [
            optimizer.register_step_pre_hook(self._before),
            optimizer.register_step_post_hook(self._after),
        ]
        return self

    def remove(self) -> None:
        """Detach from the optimizer."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _before(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._before_step:
            to_optimizer(self._before_step)
            at_gradient(self._before_step)
            at_update(self._before_step)

    def _after(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        after_update(self.entries)
