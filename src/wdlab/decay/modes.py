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

Each mode's functions work on one torch parameter group (a dict with ``params``, ``lr`` and
whatever state the mode needs: ``anchor`` for ``to_init``, ``lr0`` — the schedule's peak lr —
for ``independent`` and ``corrected``, ``normalized`` for ``corrected``, ``prev`` for
``cautious``), so the same code serves a user's own optimizer (:meth:`wdlab.decay.Decay.attach`)
and the batched engine, where one group holds the rows of many configurations and ``wd`` may be
a tensor with one value per row. A float ``wd`` takes exactly torch's own arithmetic
(``add_(p, alpha=wd)``), so ``coupled`` is bitwise equal to ``SGD(weight_decay=wd)``.

A group with ``maximize`` set (torch's ``maximize=True``) ascends its objective: torch negates
the gradient *before* adding its own ``weight_decay``, so the gradient-point modes subtract
their term (torch's negation then turns it into decay, as torch's own ``weight_decay`` does).
Under a ``GradScaler`` whose fused optimizer unscales inside its kernel, the group carries
``grad_scale`` and the gradient-point terms are scaled to match the still-scaled gradients.

Parameters whose ``.grad`` is ``None`` are skipped by every mode, exactly as torch's optimizers
skip them: a parameter that took no part in the loss is neither updated nor decayed.

Adding a mode is one :class:`Mode` entry in :data:`MODES` (and its oracle test).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from wdlab.optimizers import optimizer_spec

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
    """g ← g + wd·w, for every parameter that has a gradient (``wd`` negative: g − |wd|·w)."""
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


def gradient_wd(group: dict, wd: WD) -> WD:
    """The weight decay as a gradient term for this group: negated under ``maximize`` (torch
    negates the gradient before its own decay) and multiplied by a pending ``grad_scale``."""
    scale = group.get("grad_scale")
    if scale is not None:
        wd = wd * scale
    return -wd if group.get("maximize") else wd


def _coupled(group: dict, wd: WD) -> None:
    coupled(group["params"], gradient_wd(group, wd))


def _to_init(group: dict, wd: WD) -> None:
    to_init(group["params"], group["anchor"], gradient_wd(group, wd))


def _decoupled(group: dict, wd: WD) -> None:
    shrink(group["params"], decoupled_factor(group["lr"], wd))


def peak_lr(group: dict, mode: str) -> float:
    """The schedule's peak lr of a group (``lr0``), which ``independent`` and ``corrected``
    measure the current lr against."""
    lr0 = group.get("lr0") or group.get("initial_lr")
    if not lr0:
        raise ValueError(f"mode {mode!r} needs the base lr (lr0); none is known")
    return lr0


def _independent(group: dict, wd: WD) -> None:
    shrink(group["params"], independent_factor(group["lr"], peak_lr(group, "independent"), wd))


def corrected_factor(lr: float, lr_max: float, wd: WD) -> WD:
    """1 − wd·lr_t²/lr_max, AdamC's factor for normalized layers."""
    return 1.0 - wd * (lr * lr / lr_max)


def _corrected(group: dict, wd: WD) -> None:
    """AdamC: normalized layers by 1 − wd·lr_t²/lr_max, the rest as AdamW. ``normalized`` is
    one flag for the whole group, or one per parameter."""
    lr, params = group["lr"], group["params"]
    flags = group.get("normalized", False)
    if not isinstance(flags, list):
        flags = [flags] * len(params)
    normed = [p for p, f in zip(params, flags, strict=True) if f]
    rest = [p for p, f in zip(params, flags, strict=True) if not f]
    shrink(normed, corrected_factor(lr, peak_lr(group, "corrected"), wd))
    shrink(rest, decoupled_factor(lr, wd))


def _cautious_before(group: dict, wd: WD) -> None:
    group["prev"] = [p.detach().clone() if p.grad is not None else None for p in group["params"]]


def _cautious_after(group: dict, wd: WD) -> None:
    """x ← x − lr_t·wd·𝟙(u ⊙ x_prev ≥ 0) ⊙ x_prev, with lr_t·u = x_prev − x, the update the
    optimizer just made (Chen et al.'s Algorithm 1, for any optimizer).

    The update is read as applied, i.e. rounded: a coordinate whose update is lost to rounding
    (|lr_t·u| below half a unit in the last place of its weight) counts as u = 0 and decays,
    as Algorithm 1's ≥ decays u = 0, whatever the sign of the optimizer's exact u.
    """
    lr = group["lr"]
    with torch.no_grad():
        for p, x in zip(group["params"], group.pop("prev"), strict=True):
            if x is None:
                continue
            mask = ((x - p) * x) >= 0
            w = wd if not isinstance(wd, Tensor) else _rows(wd, p)
            p.sub_(torch.where(mask, x, 0.0).mul_(lr * w))


def decay_rate(
    mode: str,
    lr: float,
    wd: float,
    optimizer: str = "sgd",
    options: Mapping[str, object] | None = None,
) -> tuple[float, str]:
    """(r, why): the fraction of the weights the decay removes per step at the base (peak) lr,
    so that τ_iter = 1/r (Wang & Aitchison); NaN where no single rate exists, 0 for wd = 0.

    By the mode's ``timescale`` family: ``decoupled`` r = lr·wd (``cautious``: an upper bound,
    its mask only removes decay; ``corrected``: at the peak, where lr_t²/lr_max = lr);
    ``independent`` r = wd (its factor 1 − wd·lr_t/lr₀ at lr_t = lr₀); ``coupled`` (``l2``,
    ``coupled``, ``to_init``) only for SGD, where momentum μ and dampening d carry the decay
    term like a gradient, r = lr·wd·(1 − d)/(1 − μ), exact to first order in r (the slow
    eigenvalue of the momentum recursion); ``builtin`` by what the optimizer's
    ``weight_decay`` means (:mod:`wdlab.optimizers`). Adam-like optimizers rescale a coupled
    decay per coordinate by their gradient statistics, so it has no timescale of its own.
    """
    opts = dict(options or {})
    m = get_mode(mode)
    family = m.timescale
    spec = optimizer_spec(optimizer)
    if family == "builtin":
        family = spec.builtin_meaning(opts) or "none"
        if family == "none":
            return math.nan, f"{spec.cls_name} has no weight_decay of its own"
    if family == "none":
        return math.nan, "no decay, no timescale"
    if family == "independent":
        return float(wd), "w·(1 − wd·lr_t/lr₀): wd per step at the peak lr"
    if family == "decoupled":
        return lr * wd, m.timescale_note or "w·(1 − lr·wd) each step"
    if not spec.linear:  # only (momentum) SGD leaves the decay term unscaled
        return math.nan, (
            f"{spec.cls_name} rescales the coupled decay term per coordinate by its gradient "
            "statistics: no single timescale"
        )
    mu, damp = float(opts.get("momentum", 0.0)), float(opts.get("dampening", 0.0))
    if mu >= 1.0:
        return math.nan, f"SGD momentum {mu:g} >= 1 never forgets: no timescale"
    if mu == 0.0:
        return lr * wd, "SGD: g + wd·w shrinks w by lr·wd each step"
    return lr * wd * (1.0 - damp) / (1.0 - mu), (
        f"SGD momentum {mu:g}: the decay term rides the momentum, effective lr·(1 − d)/(1 − μ)"
    )


@dataclass(frozen=True)
class Mode:
    """One decay mode.

    ``hook`` names where it acts (``loss``, ``grad``, ``param``, ``around``, ``optimizer`` or
    ``None``); ``before_step`` is what it does to a parameter group between ``backward()`` and
    the optimizer's update, ``after_step`` what it does right after the update. ``penalty``:
    a loss term, ``(wd/2)·Σ‖w‖²``, whose gradient ``as_gradient`` applies where the loss is not
    differentiated by autograd.
    ``optimizer_wd``: the optimizer's own ``weight_decay`` does the work. ``needs_anchor`` /
    ``needs_base_lr``: the state the group must carry. ``fast_path``: linear in the weights, so
    the exact Gram fast path (``wdlab.params``) supports it. ``timescale``: the family that
    says how the weights' averaging timescale τ follows from lr and wd (``decoupled``:
    1/(lr·wd); ``independent``: 1/wd; ``coupled``: SGD's, through its momentum; ``builtin``:
    by the optimizer; ``none``: not defined), see :func:`decay_rate` and :mod:`wdlab.timescale`;
    ``timescale_note`` says what τ means for this mode where it is not the plain 1/(lr·wd).
    """

    name: str
    formula: str
    hook: str | None
    before_step: GroupFn | None = None
    after_step: GroupFn | None = None
    penalty: bool = False
    as_gradient: GroupFn | None = None
    optimizer_wd: bool = False
    needs_anchor: bool = False
    needs_base_lr: bool = False
    fast_path: bool = True
    known_as: str = ""
    timescale: str = "none"
    timescale_note: str = ""

    def apply(self, group: dict, wd: WD) -> None:
        """Everything this mode does to ``group`` between ``backward()`` and the update."""
        if self.before_step is not None:
            self.before_step(group, wd)

    def finish(self, group: dict, wd: WD) -> None:
        """What this mode does to ``group`` right after the optimizer's update."""
        if self.after_step is not None:
            self.after_step(group, wd)


_MODES = [
    Mode("none", "w ← opt(w, g)", None),
    Mode(
        "l2",
        "loss ← loss + (wd/2)·Σ‖w‖²   (so g ← g + wd·w through autograd)",
        "loss",
        penalty=True,
        as_gradient=_coupled,
        known_as="textbooks, Andrew Ng's slide, Keras `kernel_regularizer=l2`",
        timescale="coupled",
    ),
    Mode(
        "coupled",
        "g ← g + wd·w   (after backward, before the optimizer)",
        "grad",
        _coupled,
        known_as="torch SGD/Adam `weight_decay`, fastai `l2_reg`",
        timescale="coupled",
    ),
    Mode(
        "builtin",
        "optimizer(weight_decay=wd): whatever that optimizer does with it",
        "optimizer",
        optimizer_wd=True,
        known_as="torch.optim",
        timescale="builtin",
    ),
    Mode(
        "decoupled",
        "w ← w·(1 − lr_t·wd)   (before the optimizer's update, as AdamW)",
        "param",
        _decoupled,
        known_as="AdamW, SGDW, fastai `weight_decay`, optax `adamw`",
        timescale="decoupled",
    ),
    Mode(
        "independent",
        "w ← w·(1 − wd·lr_t/lr₀)   (not scaled by the base lr)",
        "param",
        _independent,
        needs_base_lr=True,
        known_as="Loshchilov & Hutter's original, Composer `DecoupledAdamW`",
        timescale="independent",
    ),
    Mode(
        "to_init",
        "g ← g + wd·(w − w₀)   (L2-SP: decay toward the initial weights)",
        "grad",
        _to_init,
        needs_anchor=True,
        known_as="transfer learning (L2-SP)",
        timescale="coupled",
    ),
    Mode(
        "cautious",
        "w ← opt(w, g) − lr_t·wd·𝟙(u ⊙ w ≥ 0) ⊙ w   (decoupled, only where the update u "
        "has the weight's sign; CWD)",
        "around",
        _cautious_before,
        _cautious_after,
        fast_path=False,
        known_as="Cautious Weight Decay (Chen et al., 2025)",
        timescale="decoupled",
        timescale_note="lr·wd per step at most: the mask only removes decay",
    ),
    Mode(
        "corrected",
        "w ← w·(1 − wd·lr_t²/lr_max) on normalized layers, w·(1 − lr_t·wd) elsewhere   (AdamC)",
        "param",
        _corrected,
        needs_base_lr=True,
        fast_path=False,
        known_as="AdamC (Defazio, 2025)",
        timescale="decoupled",
        timescale_note="lr·wd per step at the peak lr; AdamC's normalized layers decay slower "
        "as the lr falls",
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


def is_nonneg_finite(v: object) -> bool:
    """Whether ``v`` is a real number (not a bool), finite and ≥ 0: a valid weight decay."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def check_weight_decay(wd: float) -> float:
    """Return ``wd`` if it is a finite number ≥ 0, else raise ``ValueError``."""
    if not is_nonneg_finite(wd):
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
