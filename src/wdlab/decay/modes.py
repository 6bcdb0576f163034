"""The decay modes: a registry of small objects, each applied at one named point of a step.

* **loss**: ``l2`` adds ``(wd/2)·Σ‖w‖²`` to the loss before ``backward()``;
* **grad** (after ``backward()``, before ``optimizer.step()``): ``coupled`` adds ``wd·w`` to the
  gradient, ``to_init`` adds ``wd·(w − w₀)``;
* **param** (just before the optimizer's own update): ``decoupled`` multiplies ``w`` by
  ``1 − lr_t·wd``; ``independent`` by ``1 − wd·lr_t/lr₀``;
* **optimizer**: ``builtin`` hands ``weight_decay=wd`` to the optimizer itself.

Each mode's function works on one torch parameter group (a dict with ``params``, ``lr`` and
whatever state the mode needs: ``anchor`` for ``to_init``, ``lr0`` for ``independent``), so the
same code serves a user's own optimizer (:meth:`wdlab.decay.Decay.attach`) and the batched
engine, where one group holds the rows of many configurations and ``wd`` may be a tensor with
one value per row. A float ``wd`` takes exactly torch's own arithmetic (``add_(p, alpha=wd)``),
so ``coupled`` is bitwise equal to ``SGD(weight_decay=wd)``.

Parameters whose ``.grad`` is ``None`` are skipped by every mode, exactly as torch's optimizers
skip them: a parameter that took no part in the loss is neither updated nor decayed.

Adding a mode is one :class:`Mode` entry in :data:`MODES` (and its oracle test).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

WD = float | Tensor  # one value for the whole group, or one per configuration row
GroupFn = Callable[[dict, WD], None]


def _rows(wd: Tensor, p: Tensor) -> Tensor:
    return wd.view(-1, *([1] * (p.dim() - 1))).to(p.dtype)


def l2_penalty(params: Iterable[Tensor], wd: WD, *, per_row: bool = False) -> Tensor:
    """(wd/2)·Σ‖w‖²; with ``per_row`` one value per leading row (configuration)."""
    terms = []
    for p in params:
        sq = p.pow(2).reshape(p.shape[0], -1).sum(1) if per_row else p.pow(2).sum()
        terms.append(sq)
    if not terms:
        return torch.zeros(())
    total = torch.stack(terms).sum(0)
    return 0.5 * (wd.to(total.dtype) if isinstance(wd, Tensor) else wd) * total


def coupled(params: Sequence[Tensor], wd: WD) -> None:
    """g ← g + wd·w, for every parameter that has a gradient."""
    for p in params:
        if p.grad is None:
            continue
        if isinstance(wd, Tensor):
            p.grad.addcmul_(p.detach(), _rows(wd, p))
        else:
            p.grad.add_(p.detach(), alpha=wd)


def to_init(params: Sequence[Tensor], anchors: Sequence[Tensor], wd: WD) -> None:
    """g ← g + wd·(w − w₀), for every parameter that has a gradient."""
    for p, p0 in zip(params, anchors, strict=True):
        if p.grad is None:
            continue
        diff = p.detach() - p0
        if isinstance(wd, Tensor):
            p.grad.add_(diff * _rows(wd, p))
        else:
            p.grad.add_(diff, alpha=wd)


def shrink(params: Sequence[Tensor], factor: WD) -> None:
    """w ← w·factor, for every parameter that has a gradient (decoupled / independent)."""
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                continue
            p.mul_(_rows(factor, p) if isinstance(factor, Tensor) else factor)


def decoupled_factor(lr: float, wd: WD) -> WD:
    """1 − lr_t·wd, the AdamW factor."""
    return 1.0 - lr * wd


def independent_factor(lr: float, lr0: float, wd: WD) -> WD:
    """1 − wd·lr_t/lr₀: follows the schedule's shape but not the base lr."""
    return 1.0 - wd * (lr / lr0)


def _coupled(group: dict, wd: WD) -> None:
    coupled(group["params"], wd)


def _to_init(group: dict, wd: WD) -> None:
    to_init(group["params"], group["anchor"], wd)


def _decoupled(group: dict, wd: WD) -> None:
    shrink(group["params"], decoupled_factor(group["lr"], wd))


def _independent(group: dict, wd: WD) -> None:
    lr0 = group.get("lr0") or group.get("initial_lr")
    if not lr0:
        raise ValueError("mode 'independent' needs the base lr (lr0); none is known")
    shrink(group["params"], independent_factor(group["lr"], lr0, wd))


@dataclass(frozen=True)
class Mode:
    """One decay mode.

    ``hook`` names where it acts (``loss``, ``grad``, ``param``, ``optimizer`` or ``None``);
    ``before_step`` is what it does to a parameter group between ``backward()`` and the
    optimizer's update. ``penalty``: a loss term, ``(wd/2)·Σ‖w‖²``, whose gradient
    ``as_gradient`` applies where the loss is not differentiated by autograd.
    ``optimizer_wd``: the optimizer's own ``weight_decay`` does the work. ``needs_anchor`` /
    ``needs_base_lr``: the state the group must carry. ``fast_path``: linear in the weights, so
    the exact Gram fast path (``wdlab.params``) supports it.
    """

    name: str
    formula: str
    hook: str | None
    before_step: GroupFn | None = None
    penalty: bool = False
    as_gradient: GroupFn | None = None
    optimizer_wd: bool = False
    needs_anchor: bool = False
    needs_base_lr: bool = False
    fast_path: bool = True
    known_as: str = ""

    def apply(self, group: dict, wd: WD) -> None:
        """Everything this mode does to ``group`` between ``backward()`` and the update."""
        if self.before_step is not None:
            self.before_step(group, wd)


_MODES = [
    Mode("none", "w ← opt(w, g)", None),
    Mode(
        "l2",
        "loss ← loss + (wd/2)·Σ‖w‖²   (so g ← g + wd·w through autograd)",
        "loss",
        penalty=True,
        as_gradient=_coupled,
        known_as="textbooks, Andrew Ng's slide, Keras `kernel_regularizer=l2`",
    ),
    Mode(
        "coupled",
        "g ← g + wd·w   (after backward, before the optimizer)",
        "grad",
        _coupled,
        known_as="torch SGD/Adam `weight_decay`, fastai `l2_reg`",
    ),
    Mode(
        "builtin",
        "optimizer(weight_decay=wd): whatever that optimizer does with it",
        "optimizer",
        optimizer_wd=True,
        known_as="torch.optim",
    ),
    Mode(
        "decoupled",
        "w ← w·(1 − lr_t·wd)   (before the optimizer's update, as AdamW)",
        "param",
        _decoupled,
        known_as="AdamW, SGDW, fastai `weight_decay`, optax `adamw`",
    ),
    Mode(
        "independent",
        "w ← w·(1 − wd·lr_t/lr₀)   (not scaled by the base lr)",
        "param",
        _independent,
        needs_base_lr=True,
        known_as="Loshchilov & Hutter's original, Composer `DecoupledAdamW`",
    ),
    Mode(
        "to_init",
        "g ← g + wd·(w − w₀)   (L2-SP: decay toward the initial weights)",
        "grad",
        _to_init,
        needs_anchor=True,
        known_as="transfer learning (L2-SP)",
    ),
]

#: Every decay mode by name, in the order tables list them.
MODES: dict[str, Mode] = {m.name: m for m in _MODES}

#: The update each mode makes, as shown in reports and ``wdlab verify``.
FORMULAS: dict[str, str] = {m.name: m.formula for m in _MODES}


def get_mode(name: str) -> Mode:
    """The mode called ``name``, or a ``ValueError`` listing the valid modes."""
    mode = MODES.get(name) if isinstance(name, str) else None
    if mode is None:
        raise ValueError(f"unknown decay mode {name!r}; valid modes: {', '.join(MODES)}")
    return mode


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a known decay mode, else raise a ``ValueError`` listing them."""
    return get_mode(mode).name


def check_weight_decay(wd: float) -> float:
    """Return ``wd`` if it is a finite number ≥ 0, else raise ``ValueError``."""
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
        raise ValueError(f"weight decay must be a finite number >= 0, got {wd!r}")
    return float(wd)


def apply_before_step(mode: str, group: dict, wd: WD) -> None:
    """Everything a mode does between ``backward()`` and the optimizer's update."""
    get_mode(mode).apply(group, wd)


def apply_after_backward(mode: str, group: dict, wd: WD) -> None:
    """The grad-point modes (``coupled``, ``to_init``) on one parameter group."""
    m = get_mode(mode)
    if m.hook == "grad":
        m.apply(group, wd)


def apply_param_point(mode: str, group: dict, wd: WD) -> None:
    """The param-point modes (``decoupled``, ``independent``) on one parameter group."""
    m = get_mode(mode)
    if m.hook == "param":
        m.apply(group, wd)
