"""Opt-in training diagnostics, recorded per layer and epoch (a registry).

Contract used by the trainer (every tensor is stacked: a leading dimension K, one row per
configuration): ``make(name, weights, configs, optimizer)`` builds a diagnostic for the named
weights; the trainer calls ``before_step(tensors)`` and ``after_step(tensors)`` around every
optimizer step, ``end_epoch(epoch)`` after each epoch, and ``series(row)`` at the end: per-epoch
series whose names start with ``diag.`` (stored and plotted like the train loss). When rows
stop, ``keep(rows, k)`` says which of the K rows the tensors hold from then on (``rows``:
their indices); ``state()`` and ``load_state()`` carry the records through a checkpoint.

``rotation`` (:class:`Rotation`) follows Kosson, Messmer & Jaggi, "Rotational Equilibrium: How
Weight Decay Balances Learning Across Neural Networks" (ICML 2024): each neuron's weight vector
(a row of a weight matrix, a convolution filter) settles at an equilibrium norm and turns by an
equilibrium angle per step. :func:`equilibrium` gives their predicted values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from wdlab.decay.modes import decay_rate, get_mode
from wdlab.optimizers import OptimizerSpec, optimizer_spec
from wdlab.records import RunConfig

PREFIX = "diag.rotation."  # series: diag.rotation.<weight>.<norm|angle|norm_eq|angle_eq>


class Diagnostic(Protocol):
    """What the trainer calls; see the module docstring."""

    def before_step(self, tensors: dict[str, Tensor]) -> None: ...
    def after_step(self, tensors: dict[str, Tensor]) -> None: ...
    def end_epoch(self, epoch: int) -> None: ...
    def series(self, row: int) -> dict[str, list[float]]: ...
    def keep(self, rows: Tensor, k: int) -> None: ...
    def state(self) -> dict[str, Any]: ...
    def load_state(self, state: Mapping[str, Any]) -> None: ...


def equilibrium(
    config: RunConfig, neuron_size: int, grad_sq: float = math.nan
) -> tuple[float, float, str]:
    """(RMS neuron norm, angle per step, why) at rotational equilibrium (Kosson et al.).

    With r the decay's per-step rate at the base lr (:func:`wdlab.decay.modes.decay_rate`,
    η·λ for AdamW), C = ``neuron_size`` elements per neuron and, for SGD, ĝ² = ``grad_sq`` the
    mean squared norm of the gradient at unit weight norm (‖g⊥‖²·‖ω‖², measured):

    * Adam/AdamW (β₁): ‖ω‖ = η·√(C/(2r)), angle = √(2r·(1−β₁)/(1+β₁)); for r = η·λ the paper's
      √(η·C/(2λ)) and √(2η·λ·(1−β₁)/(1+β₁));
    * SGD, momentum α: ‖ω‖⁴ = η²·ĝ²/(2r·(1−α)²), angle = √(2r·(1−α)/(1+α)); for torch's
      coupled decay (r = η·λ/(1−α)) the paper's (η·ĝ²/(2λ(1−α)))^¼ and √(2η·λ/(1+α)); for
      decoupled SGD (r = η·λ) derived the same way (random-walk model, checked by simulation).

    NaN with the reason where no formula applies (other optimizers, nesterov or dampening,
    coupled decay under Adam, ``cautious``, ``to_init``, no decay). Under an lr schedule the
    values are those of the base lr: equilibrium needs η roughly constant over ~1/r steps.
    """
    nan = math.nan
    opts = dict(config.options)
    why_not = get_mode(config.mode).no_equilibrium
    if why_not:
        return nan, nan, why_not
    rate, why = decay_rate(config.mode, config.lr, config.weight_decay, config.optimizer, opts)
    if not rate > 0:
        return nan, nan, why if math.isnan(rate) else "no decay: no equilibrium"
    spec = optimizer_spec(config.optimizer)
    formula = EQUILIBRIA.get(spec.equilibrium or "")
    if formula is None:
        return nan, nan, f"no equilibrium formula for {spec.cls_name} with these options"
    return formula(spec.cls_name, config.lr, rate, opts, neuron_size, grad_sq)


def _adaptive(
    cls: str, lr: float, rate: float, opts: dict, neuron_size: int, grad_sq: float
) -> tuple[float, float, str]:
    """Adam/AdamW (β₁): ‖ω‖ = η·√(C/(2r)), angle = √(2r·(1−β₁)/(1+β₁))."""
    beta1 = float(opts.get("betas", (0.9, 0.999))[0])
    angle = math.sqrt(2 * rate * (1 - beta1) / (1 + beta1))
    return lr * math.sqrt(neuron_size / (2 * rate)), angle, f"{cls}, Kosson et al."


def _momentum(
    cls: str, lr: float, rate: float, opts: dict, neuron_size: int, grad_sq: float
) -> tuple[float, float, str]:
    """SGD, momentum α: ‖ω‖⁴ = η²·ĝ²/(2r·(1−α)²), angle = √(2r·(1−α)/(1+α)); not for nesterov
    or dampening."""
    if opts.get("nesterov") or opts.get("dampening"):
        return math.nan, math.nan, f"no equilibrium formula for {cls} with these options"
    a = float(opts.get("momentum", 0.0))
    norm = (lr * lr * grad_sq / (2 * rate * (1 - a) ** 2)) ** 0.25
    return norm, math.sqrt(2 * rate * (1 - a) / (1 + a)), f"{cls}, Kosson et al."


#: The rotational-equilibrium formulas, by :attr:`wdlab.optimizers.OptimizerSpec.equilibrium`.
EQUILIBRIA = {"adaptive": _adaptive, "momentum": _momentum}


def _neurons(t: Tensor) -> Tensor:
    """A stacked weight (K, out, …) as (K, out, C): one row per neuron."""
    return t.detach().reshape(t.shape[0], t.shape[1], -1)


def neuron_angles(before: Tensor, after: Tensor) -> Tensor:
    """Angle (radians) each neuron turned, (K, out) from two stacked weights (K, out, …).

    2·atan2(‖â − b̂‖, ‖â + b̂‖): accurate for the small angles of one step, where arccos of
    the cosine loses them to rounding.
    """
    a, b = _neurons(before), _neurons(after)
    tiny = torch.finfo(a.dtype).tiny
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(tiny)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(tiny)
    return 2 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))


def rms_neuron_norm(w: Tensor) -> Tensor:
    """√(mean over neurons of ‖ω‖²), one value per configuration row: (K,)."""
    return _neurons(w).pow(2).sum(-1).mean(-1).sqrt()


def tangent_grad_sq(w: Tensor, grad: Tensor) -> Tensor:
    """Mean over neurons of ‖g⊥‖²·‖ω‖² (K,): the squared gradient at unit norm, with the
    radial part (the decay term, any scale-variant part) removed."""
    n, g = _neurons(w), _neurons(grad)
    sq = n.pow(2).sum(-1, keepdim=True).clamp_min(torch.finfo(n.dtype).tiny)
    tangent = g - (g * n).sum(-1, keepdim=True) / sq * n
    return (tangent.pow(2).sum(-1) * sq.squeeze(-1)).mean(-1)


class Rotation:
    """Per decaying ≥2-D weight: the RMS neuron norm after each epoch, the mean angle a neuron
    turns per step over the epoch, and their equilibrium values (:func:`equilibrium`).

    Series ``diag.rotation.<weight>.norm``, ``.angle``, ``.norm_eq``, ``.angle_eq``; for SGD
    the equilibrium norm uses each epoch's measured ĝ² (:func:`tangent_grad_sq`).
    """

    def __init__(
        self, weights: Sequence[str], configs: Sequence[RunConfig], optimizer: OptimizerSpec
    ) -> None:
        self.weights = list(weights)
        self.configs = list(configs)
        self.needs_grad = optimizer.equilibrium == "momentum"  # ĝ² enters its formula
        self.prev: dict[str, Tensor] = {}
        self.last: Mapping[str, Tensor] = {}
        self.steps = 0
        self.angle_sum: dict[str, Tensor] = {}
        self.grad_sum: dict[str, Tensor] = {}
        self.rows: dict[str, list[Tensor]] = {}  # "<weight>.<kind>" -> one (K,) per epoch
        self.sizes: dict[str, int] = {}
        self._cache: dict[str, list[list[float]]] | None = None
        self.index: Tensor | None = None  # the rows the tensors hold, where some stopped

    def before_step(self, tensors: dict[str, Tensor]) -> None:
        """Keep the weights before the update (and, for SGD, their gradients' scale)."""
        for n in self.weights:
            t = tensors[n]
            self.prev[n] = t.detach().clone()
            self.sizes[n] = _neurons(t).shape[-1]
            if self.needs_grad and t.grad is not None:
                self._add(self.grad_sum, n, tangent_grad_sq(t, t.grad))

    def after_step(self, tensors: dict[str, Tensor]) -> None:
        """Add each neuron's turn in this step."""
        for n in self.weights:
            self._add(self.angle_sum, n, neuron_angles(self.prev[n], tensors[n]).mean(-1))
        self.last = tensors
        self.steps += 1

    @staticmethod
    def _add(into: dict[str, Tensor], name: str, value: Tensor) -> None:
        into[name] = into[name] + value if name in into else value

    def end_epoch(self, epoch: int) -> None:
        """This epoch's values: the norm now, the angle and ĝ² averaged over its steps."""
        steps = max(self.steps, 1)
        for n in self.weights:
            self._append(f"{n}.norm", rms_neuron_norm(self.last[n]))
            self._append(f"{n}.angle", self.angle_sum.pop(n) / steps)
            if n in self.grad_sum:
                self._append(f"{n}.grad_sq", self.grad_sum.pop(n) / steps)
        self.steps = 0

    def _append(self, key: str, values: Tensor) -> None:
        """One epoch's values of the rows held, as a row of all K (NaN for stopped rows)."""
        if self.index is not None:
            full = torch.full((len(self.configs),), math.nan, device=values.device)
            full[self.index] = values
            values = full
        self.rows.setdefault(key, []).append(values)

    def keep(self, rows: Tensor, k: int) -> None:
        """From now on the tensors hold rows ``rows`` of the ``k``."""
        self.index = rows

    def state(self) -> dict[str, Any]:
        """The records so far (on the CPU), for :meth:`load_state`."""
        return {
            "rows": {k: torch.stack(v).cpu() for k, v in self.rows.items()},
            "sizes": dict(self.sizes),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue the records of :meth:`state`."""
        self.rows = {k: list(v.unbind(0)) for k, v in state["rows"].items()}
        self.sizes = dict(state["sizes"])

    def series(self, row: int) -> dict[str, list[float]]:
        """Configuration ``row``'s series, measured and predicted."""
        if self._cache is None:  # one transfer for every row
            self._cache = {
                k: torch.stack([t.cpu() for t in v]).t().tolist() for k, v in self.rows.items()
            }
        cfg, out = self.configs[row], {}
        for n in self.weights:
            norm, angle = self._cache[f"{n}.norm"][row], self._cache[f"{n}.angle"][row]
            grads = self._cache.get(f"{n}.grad_sq")
            eq = [
                equilibrium(cfg, self.sizes[n], g)
                for g in (grads[row] if grads else [math.nan] * len(norm))
            ]
            out[f"{PREFIX}{n}.norm"] = norm
            out[f"{PREFIX}{n}.angle"] = angle
            out[f"{PREFIX}{n}.norm_eq"] = [e[0] for e in eq]
            out[f"{PREFIX}{n}.angle_eq"] = [e[1] for e in eq]
        return out


DIAGNOSTICS: dict[str, type] = {"rotation": Rotation}


def make(
    name: str, weights: Sequence[str], configs: Sequence[RunConfig], optimizer: OptimizerSpec
) -> Diagnostic:
    """The diagnostic called ``name`` over the named (stacked) weights."""
    cls = DIAGNOSTICS.get(name)
    if cls is None:
        raise ValueError(f"unknown diagnostics {name!r}; valid: {', '.join(DIAGNOSTICS)}")
    return cls(weights, configs, optimizer)
