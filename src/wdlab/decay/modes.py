"""The decay modes: a registry of small objects, each applied at one named point of a step.

* **loss**: ``l2`` adds ``(wd/2)·Σ‖w‖²`` to the loss before ``backward()``;
* **grad** (after ``backward()``, before ``optimizer.step()``): ``coupled`` adds ``wd·w`` to the
  gradient, ``to_init`` adds ``wd·(w − w₀)``;
* **param** (just before the optimizer's own update): ``decoupled`` multiplies ``w`` by
  ``1 − lr_t·wd``; ``independent`` by ``1 − wd·lr_t/lr₀``; ``corrected`` (AdamC) by
  ``1 − wd·lr_t²/lr_max`` on normalized layers and ``1 − lr_t·wd`` elsewhere;
* **around the step**: ``cautious`` (CWD) decays, after the optimizer's update, only the
  coordinates whose update has the sign of the weight;
* **optimizer**: ``builtin`` hands ``weight_decay=wd`` to the optimizer itself.

Each mode's point functions work on one :class:`~wdlab.decay.group.DecayGroup` (the tensors,
the lr, and the state the mode needs: the ``to_init`` anchor, lr₀ for ``independent`` and
``corrected``, AdamC's normalized flags, the weights before the update for ``cautious``), and
the one driver (:mod:`wdlab.decay.driver`) calls them at their points, for a user's optimizer
(:meth:`wdlab.decay.Decay.attach`) and for the trainer's stacked rows, where ``wd`` may be a
tensor with one value per row. A float ``wd`` takes exactly torch's own arithmetic
(``add_(p, alpha=wd)``), so ``coupled`` is bitwise equal to ``SGD(weight_decay=wd)``.

A group with ``maximize`` set (torch's ``maximize=True``) ascends its objective: torch negates
the gradient *before* adding its own ``weight_decay``, so the gradient-point modes subtract
their term (torch's negation then turns it into decay, as torch's own ``weight_decay`` does).
Under a ``GradScaler`` whose fused optimizer unscales inside its kernel, the group carries
``grad_scale`` and the gradient-point terms are scaled to match the still-scaled gradients.

Parameters whose ``.grad`` is ``None`` are skipped by every mode, exactly as torch's optimizers
skip them: a parameter that took no part in the loss is neither updated nor decayed.

Every fact about a mode is a field of its :class:`Mode` (where it acts, the state it needs,
its timescale, whether :func:`wdlab.timescale.transfer` carries it, whether the rotational
equilibrium predicts it…); adding a mode is one entry in :data:`MODES` (and its oracle test).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from wdlab.decay.group import WD, DecayGroup, row_view
from wdlab.decay.timescales import (
    BY_OPTIMIZER,
    COUPLED,
    DECOUPLED,
    INDEPENDENT,
    NO_TIMESCALE,
    Timescale,
)
from wdlab.optimizers import optimizer_spec

PointFn = Callable[[DecayGroup, WD], None]


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


def coupled(params: Sequence[Tensor], wd: WD, shaped: Sequence[WD] | None = None) -> None:
    """g ← g + wd·w, for every parameter that has a gradient (``wd`` negative: g − |wd|·w).

    ``shaped``: ``wd`` for each parameter (:meth:`DecayGroup.per_row`), where already made."""
    for p, w in zip(params, shaped or _shape(wd, params), strict=True):
        if p.grad is None:
            continue
        if isinstance(w, Tensor):
            p.grad.addcmul_(p.detach(), w)
        else:
            p.grad.add_(p.detach(), alpha=w)


def _shape(wd: WD, params: Sequence[Tensor]) -> list[WD]:
    """``wd`` for each of ``params`` (see :meth:`DecayGroup.per_row`), made now."""
    return [row_view(wd, p) if isinstance(wd, Tensor) else wd for p in params]


def to_init(params: Sequence[Tensor], anchors: Sequence[Tensor], wd: WD) -> None:
    """g ← g + wd·(w − w₀), for every parameter that has a gradient."""
    for p, p0 in zip(params, anchors, strict=True):
        if p.grad is None:
            continue
        diff = p.detach() - p0
        if isinstance(wd, Tensor):
            p.grad.add_(diff * row_view(wd, p))
        else:
            p.grad.add_(diff, alpha=wd)


def shrink(params: Sequence[Tensor], factor: WD) -> None:
    """w ← w·factor, for every parameter that has a gradient (decoupled / independent)."""
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                continue
            p.mul_(row_view(factor, p) if isinstance(factor, Tensor) else factor)


def decoupled_factor(lr: float, wd: WD) -> WD:
    """1 − lr_t·wd, the AdamW factor."""
    return 1.0 - lr * wd


def independent_factor(lr: float, lr0: float, wd: WD) -> WD:
    """1 − wd·lr_t/lr₀: follows the schedule's shape but not the base lr."""
    return 1.0 - wd * (lr / lr0)


def corrected_factor(lr: float, lr_max: float, wd: WD) -> WD:
    """1 − wd·lr_t²/lr_max, AdamC's factor for normalized layers."""
    return 1.0 - wd * (lr * lr / lr_max)


def gradient_wd(g: DecayGroup, wd: WD) -> WD:
    """The weight decay as a gradient term for this group: negated under ``maximize`` (torch
    negates the gradient before its own decay) and multiplied by a pending ``grad_scale``."""
    if g.grad_scale is not None:
        wd = wd * g.grad_scale
    return -wd if g.maximize else wd


# -- each mode at its points -------------------------------------------------------------------


def _coupled(g: DecayGroup, wd: WD) -> None:
    wd = gradient_wd(g, wd)
    coupled(g.params, wd, g.per_row(wd, g.params))


def _l2_by_gradient(g: DecayGroup, wd: WD) -> None:
    """l2's loss term as its gradient, for the tensors no autograd loss term reaches."""
    wd = gradient_wd(g, wd)
    coupled(g.by_gradient, wd, g.per_row(wd, g.by_gradient))


def _to_init(g: DecayGroup, wd: WD) -> None:
    to_init(g.params, g.anchor, gradient_wd(g, wd))


def _decoupled(g: DecayGroup, wd: WD) -> None:
    shrink(g.params, decoupled_factor(g.lr, wd))


def _independent(g: DecayGroup, wd: WD) -> None:
    shrink(g.params, independent_factor(g.lr, g.peak_lr("independent"), wd))


def _corrected(g: DecayGroup, wd: WD) -> None:
    """AdamC: normalized layers by 1 − wd·lr_t²/lr_max, the rest as AdamW."""
    lr, flags = g.lr, g.flags()
    normed = [p for p, f in zip(g.params, flags, strict=True) if f]
    rest = [p for p, f in zip(g.params, flags, strict=True) if not f]
    shrink(normed, corrected_factor(lr, g.peak_lr("corrected"), wd))
    shrink(rest, decoupled_factor(lr, wd))


def _cautious_before(g: DecayGroup, wd: WD) -> None:
    g.prev = [p.detach().clone() if p.grad is not None else None for p in g.params]


def _cautious_after(g: DecayGroup, wd: WD) -> None:
    """x ← x − lr_t·wd·𝟙(u ⊙ x_prev ≥ 0) ⊙ x_prev, with lr_t·u = x_prev − x, the update the
    optimizer just made (Chen et al.'s Algorithm 1, for any optimizer).

    The update is read as applied, i.e. rounded: a coordinate whose update is lost to rounding
    (|lr_t·u| below half a unit in the last place of its weight) counts as u = 0 and decays,
    as Algorithm 1's ≥ decays u = 0, whatever the sign of the optimizer's exact u.
    """
    lr, prev = g.lr, g.prev or []
    g.prev = None
    with torch.no_grad():
        for p, x in zip(g.params, prev, strict=True):
            if x is None:
                continue
            mask = ((x - p) * x) >= 0
            w = wd if not isinstance(wd, Tensor) else row_view(wd, p)
            p.sub_(torch.where(mask, x, 0.0).mul_(lr * w))


@dataclass(frozen=True)
class Mode:
    """One decay mode: every fact about it.

    ``hook`` names where it acts (``loss``, ``grad``, ``param``, ``around``, ``optimizer`` or
    ``None``). The driver calls ``gradient`` after ``backward()``, ``update`` just before the
    optimizer's update and ``after`` right after it. ``penalty``: a loss term
    ``(wd/2)·Σ‖w‖²`` (its gradient is applied by ``gradient`` where no loss term is
    differentiated). ``optimizer_wd``: the optimizer's own ``weight_decay`` does the work.
    ``needs_anchor`` / ``needs_base_lr`` / ``normalized``: the state the group must carry (the
    anchor, lr₀, AdamC's normalized-layer flags). ``fast_path``: linear in the weights, so the
    exact Gram fast path supports it. ``timescale``: how τ follows from lr and wd
    (:func:`decay_rate`); ``timescale_note`` says what τ means where it is not the plain
    1/r. ``transfer``: :func:`wdlab.timescale.transfer` carries it (its rate has no optimizer
    in it). ``no_equilibrium``: why Kosson et al.'s rotational equilibrium does not predict it
    (empty: it does).
    """

    name: str
    formula: str
    hook: str | None
    gradient: PointFn | None = None
    update: PointFn | None = None
    after: PointFn | None = None
    penalty: bool = False
    optimizer_wd: bool = False
    needs_anchor: bool = False
    needs_base_lr: bool = False
    normalized: bool = False
    fast_path: bool = True
    known_as: str = ""
    timescale: Timescale = NO_TIMESCALE
    timescale_note: str = ""
    transfer: bool = False
    no_equilibrium: str = ""

    @property
    def decays(self) -> bool:
        """Whether the mode decays at all (``none`` does not)."""
        return self.hook is not None

    @property
    def by_wdlab(self) -> bool:
        """Whether wdlab applies the decay (not the optimizer's own ``weight_decay``)."""
        return self.decays and not self.optimizer_wd


_MODES = [
    Mode("none", "w ← opt(w, g)", None),
    Mode(
        "l2",
        "loss ← loss + (wd/2)·Σ‖w‖²   (so g ← g + wd·w through autograd)",
        "loss",
        gradient=_l2_by_gradient,
        penalty=True,
        known_as="textbooks, Andrew Ng's slide, Keras `kernel_regularizer=l2`",
        timescale=COUPLED,
    ),
    Mode(
        "coupled",
        "g ← g + wd·w   (after backward, before the optimizer)",
        "grad",
        gradient=_coupled,
        known_as="torch SGD/Adam `weight_decay`, fastai `l2_reg`",
        timescale=COUPLED,
    ),
    Mode(
        "builtin",
        "optimizer(weight_decay=wd): whatever that optimizer does with it",
        "optimizer",
        optimizer_wd=True,
        known_as="torch.optim",
        timescale=BY_OPTIMIZER,
    ),
    Mode(
        "decoupled",
        "w ← w·(1 − lr_t·wd)   (before the optimizer's update, as AdamW)",
        "param",
        update=_decoupled,
        known_as="AdamW, SGDW, fastai `weight_decay`, optax `adamw`",
        timescale=DECOUPLED,
        transfer=True,
    ),
    Mode(
        "independent",
        "w ← w·(1 − wd·lr_t/lr₀)   (not scaled by the base lr)",
        "param",
        update=_independent,
        needs_base_lr=True,
        known_as="Loshchilov & Hutter's original, Composer `DecoupledAdamW`",
        timescale=INDEPENDENT,
        transfer=True,
    ),
    Mode(
        "to_init",
        "g ← g + wd·(w − w₀)   (L2-SP: decay toward the initial weights)",
        "grad",
        gradient=_to_init,
        needs_anchor=True,
        known_as="transfer learning (L2-SP)",
        timescale=COUPLED,
        no_equilibrium="it decays toward w₀, not toward 0",
    ),
    Mode(
        "cautious",
        "w ← opt(w, g) − lr_t·wd·𝟙(u ⊙ w ≥ 0) ⊙ w   (decoupled, only where the update u "
        "has the weight's sign; CWD)",
        "around",
        update=_cautious_before,
        after=_cautious_after,
        fast_path=False,
        known_as="Cautious Weight Decay (Chen et al., 2025)",
        timescale=DECOUPLED,
        timescale_note="lr·wd per step at most: the mask only removes decay",
        no_equilibrium="its mask decays only some coordinates (not covered by Kosson et al.)",
    ),
    Mode(
        "corrected",
        "w ← w·(1 − wd·lr_t²/lr_max) on normalized layers, w·(1 − lr_t·wd) elsewhere   (AdamC)",
        "param",
        update=_corrected,
        needs_base_lr=True,
        normalized=True,
        fast_path=False,
        known_as="AdamC (Defazio, 2025)",
        timescale=DECOUPLED,
        timescale_note="lr·wd per step at the peak lr; AdamC's normalized layers decay slower "
        "as the lr falls",
    ),
]

#: Every decay mode by name, in the order tables list them.
MODES: dict[str, Mode] = {m.name: m for m in _MODES}
#: The mode that does not decay: the wd = 0 reference every sweep trains beside the others.
REFERENCE_MODE = next(name for name, m in MODES.items() if not m.decays)

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


def check_pairing(mode: str, optimizer: str, has_weight_decay: bool | None = None) -> None:
    """Refuse a mode that cannot act with this optimizer (``builtin`` with an optimizer that
    has no ``weight_decay`` of its own, e.g. Rprop), naming the modes that do work with it.
    ``has_weight_decay``: for a class wdlab does not know (LBFGS, SparseAdam, a user's own),
    whether its defaults hold one; None: the registry says."""
    m = get_mode(mode)
    if has_weight_decay is None:
        spec = optimizer_spec(optimizer)
        optimizer, has_weight_decay = spec.cls_name, spec.has_weight_decay
    if m.optimizer_wd and not has_weight_decay:
        works = ", ".join(n for n, other in MODES.items() if other.by_wdlab)
        raise ValueError(
            f"mode {m.name!r} hands weight_decay to the optimizer, but {optimizer} has no "
            f"weight_decay of its own (the decay would be ignored); modes that work with "
            f"{optimizer}: {works}"
        )


def is_nonneg_finite(v: object) -> bool:
    """Whether ``v`` is a real number (not a bool; NumPy's scalars too), finite and ≥ 0: a
    valid weight decay."""
    real = isinstance(v, numbers.Real) and not isinstance(v, bool)
    return real and math.isfinite(v) and v >= 0


def check_weight_decay(wd: float) -> float:
    """Return ``wd`` if it is a finite number ≥ 0, else raise ``ValueError``."""
    if not is_nonneg_finite(wd):
        raise ValueError(f"weight decay must be a finite number >= 0, got {wd!r}")
    return float(wd)


def acting_mode(mode: str, optimizer: str, options: Mapping[str, object] | None = None) -> Mode:
    """The mode that does the work: ``builtin`` is what the optimizer's ``weight_decay`` means
    (``coupled`` for SGD and Adam, ``decoupled`` for AdamW; ``none`` for an optimizer without
    one), every other mode itself."""
    m = get_mode(mode)
    if not m.optimizer_wd:
        return m
    meaning = optimizer_spec(optimizer).own_wd_mode_with(dict(options or {}))
    return get_mode(meaning or "none")


def decay_rate(
    mode: str,
    lr: float,
    wd: float,
    optimizer: str = "sgd",
    options: Mapping[str, object] | None = None,
    *,
    through_momentum: bool = True,
) -> tuple[float, str]:
    """(r, why): the fraction of the weights the decay removes per step at the base (peak) lr,
    so that τ_iter = 1/r (Wang & Aitchison); NaN where no single rate exists, 0 for wd = 0.

    The one place the per-step rate is computed: by the mode's :class:`Timescale`
    (``decoupled`` r = lr·wd, an upper bound for ``cautious``, at the peak for ``corrected``;
    ``independent`` r = wd; coupled modes only for SGD, through its momentum; ``builtin`` by
    what the optimizer's ``weight_decay`` means, :mod:`wdlab.optimizers`). Adam-like optimizers
    rescale a coupled decay per coordinate by their gradient statistics, so it has no timescale
    of its own. ``through_momentum`` False: the immediate factor of one step, 1 − r.
    """
    opts = dict(options or {})
    spec = optimizer_spec(optimizer)
    m = acting_mode(mode, optimizer, opts)
    if get_mode(mode).optimizer_wd and not m.decays:
        return math.nan, f"{spec.cls_name} has no weight_decay of its own"
    if m.timescale.rate is None:
        return math.nan, "no decay, no timescale"
    rate, why = m.timescale.rate(lr, wd, spec, opts, through_momentum)
    return rate, (m.timescale_note or why) if math.isfinite(rate) else why


def apply_param_point(mode: str, group: dict, wd: WD) -> None:
    """A mode's parameter-point update on one torch param group.

    Its state is read from the group's keys. This is what ``decoupled``, ``independent``,
    ``corrected`` do before the update."""
    m = get_mode(mode)
    if m.update is not None and m.after is None:
        m.update(DecayGroup.of(group), wd)
