"""How each decay mode sets the weights' averaging timescale (Wang & Aitchison): the per-step
rate r of a :class:`Timescale`, τ_iter = 1/r. A :class:`~wdlab.decay.modes.Mode` names its
timescale; :func:`wdlab.decay.modes.decay_rate` is the one place r is computed from it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from wdlab.optimizers import OptimizerSpec

RateFn = Callable[[float, float, OptimizerSpec, Mapping[str, object], bool], tuple[float, str]]


@dataclass(frozen=True)
class Timescale:
    """How a mode's decay sets the weights' averaging timescale τ_iter = 1/r (Wang & Aitchison).

    ``rate(lr, wd, optimizer, options, through_momentum)`` gives r, the fraction of the weights
    one step's decay removes at the base lr, and why; ``through_momentum`` False gives the
    immediate factor of one step (1 − r), before momentum carries the term on. ``formula``:
    r in words; ``lr_in_rate``: r scales with the lr (what :func:`wdlab.timescale.transfer`
    must carry over).
    """

    formula: str
    rate: RateFn | None = None
    lr_in_rate: bool = False


def _decoupled_rate(
    lr: float, wd: float, spec: OptimizerSpec, opts: Mapping[str, object], through_momentum: bool
) -> tuple[float, str]:
    return lr * wd, "w·(1 − lr·wd) each step"


def _independent_rate(
    lr: float, wd: float, spec: OptimizerSpec, opts: Mapping[str, object], through_momentum: bool
) -> tuple[float, str]:
    return float(wd), "w·(1 − wd·lr_t/lr₀): wd per step at the peak lr"


def _coupled_rate(
    lr: float, wd: float, spec: OptimizerSpec, opts: Mapping[str, object], through_momentum: bool
) -> tuple[float, str]:
    """Only (momentum) SGD leaves a coupled decay term unscaled: momentum μ and dampening d
    carry it like a gradient, r = lr·wd·(1 − d)/(1 − μ), exact to first order in r (the slow
    eigenvalue of the momentum recursion). ASGD steps it as plain SGD does, by a step size
    that starts at lr and falls slowly (lr/(1 + lambd·lr·t)^alpha), and shrinks the weights by
    its own lambd too: r = lr·(wd + lambd) at its first steps."""
    if not spec.plain_step:
        return math.nan, (
            f"{spec.cls_name} rescales the coupled decay term per coordinate by its gradient "
            "statistics: no single timescale"
        )
    mu, damp = float(opts.get("momentum", 0.0)), float(opts.get("dampening", 0.0))
    if mu == 0.0 or not through_momentum:
        why = f"{spec.cls_name}: g + wd·w shrinks w by lr·wd each step"
        if spec.own_shrink is None:
            return lr * wd, why
        name, default = spec.own_shrink  # ASGD's lambd shrinks w by lr·lambd more
        return lr * (wd + float(opts.get(name, default))), f"{why}, its own {name} by lr·{name}"
    if mu >= 1.0:
        return math.nan, f"SGD momentum {mu:g} >= 1 never forgets: no timescale"
    return lr * wd * (1.0 - damp) / (1.0 - mu), (
        f"SGD momentum {mu:g}: the decay term rides the momentum, effective lr·(1 − d)/(1 − μ)"
    )


NO_TIMESCALE = Timescale("not defined")
DECOUPLED = Timescale("r = lr·wd", _decoupled_rate, lr_in_rate=True)
INDEPENDENT = Timescale("r = wd", _independent_rate)
COUPLED = Timescale("r = lr·wd·(1 − d)/(1 − μ) with SGD; none under Adam-like", _coupled_rate, True)
BY_OPTIMIZER = Timescale("that of the optimizer's weight_decay (coupled or decoupled)")
