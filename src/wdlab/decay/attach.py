"""A decay strategy as a small piece of data, and attaching it to any torch optimizer.

:class:`Decay` (mode, weight decay, options) applies its mode on every ``optimizer.step()`` of
a user's own ``torch.optim`` optimizer (:meth:`Decay.attach`), through the very functions the
batched engine uses (:mod:`wdlab.decay.modes`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from wdlab.decay.modes import (
    FORMULAS,
    apply_before_step,
    check_mode,
    check_weight_decay,
    l2_penalty,
)
from wdlab.optimizers import BUILTIN_MEANING, class_name


def formula(mode: str, optimizer: str | None = None) -> str:
    """The update of ``mode``; for ``builtin`` with a known optimizer, what it does with wd."""
    check_mode(mode)
    if mode == "builtin" and optimizer is not None:
        meaning = BUILTIN_MEANING.get(class_name(optimizer))
        if meaning is not None:
            return f"{class_name(optimizer)}(weight_decay=wd) is {meaning}: {FORMULAS[meaning]}"
    return FORMULAS[mode]


@dataclass(frozen=True)
class Decay:
    """A weight-decay strategy: the mode, its strength and its options.

    ``base_lr`` is lr₀ for ``independent`` (taken from the optimizer's ``initial_lr`` when a
    scheduler set one, else from the first step's lr). ``anchor`` gives the weights that
    ``to_init`` decays toward; by default the weights at :meth:`attach` time.
    """

    mode: str = "none"
    weight_decay: float = 0.0
    base_lr: float | None = None
    anchor: Sequence[Tensor] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_mode(self.mode)
        check_weight_decay(self.weight_decay)
        if self.base_lr is not None and not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise ValueError(f"base_lr must be a positive number, got {self.base_lr!r}")

    @property
    def formula(self) -> str:
        """The update this mode makes, in one line."""
        return FORMULAS[self.mode]

    def optimizer_weight_decay(self) -> float:
        """The ``weight_decay`` to hand the optimizer: ``wd`` for builtin, else 0."""
        return self.weight_decay if self.mode == "builtin" else 0.0

    def penalty(self, optimizer: torch.optim.Optimizer) -> Tensor:
        """The ``l2`` loss term for the decaying groups of ``optimizer`` (0 for other modes)."""
        if self.mode != "l2":
            return torch.zeros(())
        total = torch.zeros(())
        for group in optimizer.param_groups:
            if group.get("decay", True):
                total = total + l2_penalty(group["params"], self.weight_decay)
        return total

    def attach(self, optimizer: torch.optim.Optimizer) -> torch.utils.hooks.RemovableHandle:
        """Apply this decay on every ``optimizer.step()`` of any torch optimizer.

        Groups with ``"decay": False`` (see :func:`param_groups`) are left alone. For ``l2``,
        add :meth:`penalty` to the loss yourself: a loss term cannot be hooked.
        """
        warn_if_surprising(self, optimizer)
        if self.mode == "builtin":
            for group in optimizer.param_groups:
                if group.get("decay", True):
                    group["weight_decay"] = self.weight_decay
        if self.mode == "to_init":
            params = [p for g in optimizer.param_groups for p in g["params"]]
            anchors = list(self.anchor) if self.anchor is not None else None
            if anchors is not None and len(anchors) != len(params):
                raise ValueError(
                    f"anchor has {len(anchors)} tensors but the optimizer has {len(params)}"
                )
            it = iter(anchors) if anchors is not None else None
            for group in optimizer.param_groups:
                group["anchor"] = [
                    (next(it) if it is not None else p).detach().clone() for p in group["params"]
                ]
        for group in optimizer.param_groups:
            group.setdefault("lr0", self.base_lr or group.get("initial_lr") or group["lr"])

        def hook(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
            for group in opt.param_groups:
                if group.get("decay", True):
                    apply_before_step(self.mode, group, self.weight_decay)

        return optimizer.register_step_pre_hook(hook)


# ---------------------------------------------------------------------------------------------
# Guarding the user.


def surprise_warnings(
    mode: str, wd: float, lr: float, optimizer: str, momentum: float = 0.0
) -> list[str]:
    """Warnings for settings that do something other than the user probably expects."""
    out = []
    optimizer = class_name(optimizer)
    if optimizer == "SGD" and mode in ("coupled", "decoupled", "builtin", "l2") and wd > 0:
        factor = 1.0 - lr * wd
        if factor <= 0:
            out.append(
                f"lr·wd = {lr * wd:g} ≥ 1: each SGD step multiplies the weights by "
                f"{factor:g}, which flips or zeroes them; use a smaller lr or weight decay"
            )
    if mode == "builtin" and wd > 0 and BUILTIN_MEANING.get(optimizer) == "decoupled":
        out.append(
            f"{optimizer}'s weight_decay is decoupled (w ← w·(1 − lr·wd)), not the L2/coupled "
            "decay of SGD and Adam; mode 'decoupled' says this explicitly"
        )
    if mode == "builtin" and wd > 0 and optimizer == "Adam":
        out.append(
            "Adam's weight_decay is coupled L2 (g ← g + wd·w), which Adam rescales per "
            "coordinate; for AdamW-style decay use mode 'decoupled'"
        )
    return out


def warn_if_surprising(decay: Decay, optimizer: torch.optim.Optimizer) -> None:
    """Emit :func:`surprise_warnings` for a decay attached to a live optimizer."""
    name = class_name(optimizer)
    for group in optimizer.param_groups:
        for msg in surprise_warnings(
            decay.mode, decay.weight_decay, group["lr"], name, group.get("momentum", 0.0)
        ):
            warnings.warn(msg, UserWarning, stacklevel=3)
        break
