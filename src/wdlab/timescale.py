"""Weight-decay timescales (Wang & Aitchison, ICML 2025) and carrying a setting over.

With decoupled decay each step shrinks the weights by the factor 1 − η·λ, so the weights are an
exponential moving average of the recent updates with timescale

    τ_iter = 1/(η·λ) iterations,   τ_epoch = τ_iter / M epochs,   M = N/B iterations per epoch.

Wang & Aitchison find the best τ_epoch roughly constant as model and data size change, so λ
must be rescaled whenever η, N or B changes: keeping τ_epoch fixed gives

    λ' = λ·(η·N·B')/(η'·N'·B)                                        (:func:`transfer`).

:func:`timescales` gives every run's τ from its mode's per-step rate r
(:func:`wdlab.decay.modes.decay_rate`, τ_iter = 1/r), always at the base lr, which for wdlab's
schedules (constant, cosine, step) is the peak:

* ``decoupled``, ``cautious``, ``corrected``: r = η·λ (``cautious``: at most, its mask only
  removes decay, so τ is a lower bound; ``corrected``: at the peak, where AdamC's factor
  η_t²/η_max equals η);
* ``independent``: r = λ, its factor 1 − λ·η_t/η₀ at η_t = η₀ (η is not in it);
* ``coupled``, ``l2``, ``to_init`` with SGD: r = η·λ; with momentum μ (and dampening d) the
  decay term rides the momentum buffer like a gradient, so the effective lr is η·(1 − d)/(1 − μ)
  and r = η·λ·(1 − d)/(1 − μ) (to first order in r: the slow eigenvalue of the momentum
  recursion, checked in the tests);
* ``builtin``: by what the optimizer's ``weight_decay`` means (SGD: coupled; AdamW, or Adam with
  ``decoupled_weight_decay``: decoupled);
* NaN, not defined: mode ``none``; coupled decay (``l2``, ``coupled``, ``to_init``, builtin
  Adam…) under Adam-like optimizers, which rescale the decay term per coordinate by their
  gradient statistics, so it has no timescale of its own; optimizers without a
  ``weight_decay`` (Rprop). λ = 0 gives τ = ∞.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from wdlab.decay.modes import MODES, decay_rate, get_mode
from wdlab.records import RunConfig

#: The modes :func:`transfer` knows (:attr:`wdlab.decay.Mode.transfer`): the per-step rate is
#: η·λ (decoupled and its kin: AdamW, cautious, corrected, coupled plain SGD) or λ
#: (independent), whatever the optimizer.
TRANSFER_MODES = tuple(name for name, m in MODES.items() if m.transfer)


def _tau(rate: float) -> float:
    if math.isnan(rate):
        return math.nan
    return math.inf if rate == 0 else 1.0 / rate


def timescales(config: RunConfig, iters_per_epoch: float) -> dict[str, float]:
    """τ_iter and τ_epoch of one configuration (NaN where not defined, see the module)."""
    m = _positive("iters_per_epoch", iters_per_epoch)
    rate, _ = decay_rate(
        config.mode, config.lr, config.weight_decay, config.optimizer, dict(config.options)
    )
    tau = _tau(rate)
    return {"tau_iter": tau, "tau_epoch": tau / m}


def explain(config: RunConfig) -> str:
    """Why τ is what it is for this configuration (or why it is not defined), in one line."""
    rate, why = decay_rate(
        config.mode, config.lr, config.weight_decay, config.optimizer, dict(config.options)
    )
    if math.isnan(rate):
        return f"τ not defined: {why}"
    return f"τ_iter = 1/r, r = {rate:.4g} per step ({why})"


def _positive(name: str, value: object) -> float:
    """``value`` as a float if it is a finite number > 0, else a one-line ``ValueError``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Setting:
    """One training set-up: weight decay λ, lr η, data size N, batch size B (N and B in the same
    unit: examples, or tokens), and the epochs E when known."""

    weight_decay: float
    lr: float
    n: float
    batch_size: float
    epochs: float | None = None
    mode: str = "decoupled"

    @property
    def iters_per_epoch(self) -> float:
        """M = N/B."""
        return self.n / self.batch_size

    @property
    def tau_iter(self) -> float:
        """1/r iterations: 1/(η·λ) (``independent``: 1/λ), r from :func:`decay_rate`."""
        return 1.0 / decay_rate(self.mode, self.lr, self.weight_decay)[0]

    @property
    def tau_epoch(self) -> float:
        """τ_iter / M epochs."""
        return self.tau_iter / self.iters_per_epoch

    def to_dict(self) -> dict[str, float | str | None]:
        """JSON-ready form, with the timescales."""
        return asdict(self) | {
            "iters_per_epoch": self.iters_per_epoch,
            "tau_iter": self.tau_iter,
            "tau_epoch": self.tau_epoch,
            "tau_run": self.tau_epoch / self.epochs if self.epochs else None,
        }


@dataclass(frozen=True)
class Transfer:
    """A weight decay carried from one setting to another (:func:`transfer`)."""

    source: Setting
    target: Setting
    formula: str
    substituted: str

    @property
    def weight_decay(self) -> float:
        """λ', the weight decay for the new setting."""
        return self.target.weight_decay

    @property
    def tau_iter(self) -> float:
        """The new setting's τ_iter (iterations)."""
        return self.target.tau_iter

    @property
    def tau_epoch(self) -> float:
        """The new setting's τ_epoch (epochs): the old one, or scaled by E'/E with epochs."""
        return self.target.tau_epoch

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: ``weight_decay``, ``tau_iter``, ``tau_epoch``, ``formula``…"""
        return {
            "weight_decay": self.weight_decay,
            "tau_iter": self.tau_iter,
            "tau_epoch": self.tau_epoch,
            "formula": self.formula,
            "substituted": self.substituted,
            "mode": self.source.mode,
            "from": self.source.to_dict(),
            "to": self.target.to_dict(),
        }


def transfer(
    weight_decay: float,
    lr: float,
    n: float,
    batch_size: float,
    *,
    to_lr: float | None = None,
    to_n: float | None = None,
    to_batch_size: float | None = None,
    epochs: float | None = None,
    to_epochs: float | None = None,
    mode: str = "decoupled",
) -> Transfer:
    """Carry weight decay λ tuned at (η, N, B) to (η', N', B') keeping τ_epoch = B/(η·λ·N).

    λ' = λ·(η·N·B')/(η'·N'·B); ``mode="independent"`` (τ_iter = 1/λ) drops the η factors.
    A ``to_*`` left out keeps its value. ``to_epochs`` (needs ``epochs``) keeps τ as the same
    *fraction of the run*: τ_epoch' = τ_epoch·E'/E, i.e. N·E, the examples seen, takes the
    place of N (as the tokens trained do in single-epoch LLM training), so λ' gains E/E'.
    Every input must be a positive finite number, and a batch no larger than its data.
    """
    if mode not in TRANSFER_MODES:
        raise ValueError(f"transfer mode must be one of {', '.join(TRANSFER_MODES)}, got {mode!r}")
    if to_epochs is not None and epochs is None:
        raise ValueError("to_epochs (--to-epochs) needs epochs (--epochs), the epochs tuned for")
    src = Setting(
        _positive("weight decay", weight_decay),
        _positive("lr", lr),
        _positive("n", n),
        _positive("batch size", batch_size),
        None if epochs is None else _positive("epochs", epochs),
        mode,
    )
    lr2 = src.lr if to_lr is None else _positive("to-lr", to_lr)
    n2 = src.n if to_n is None else _positive("to-n", to_n)
    b2 = src.batch_size if to_batch_size is None else _positive("to-batch-size", to_batch_size)
    e2 = src.epochs if to_epochs is None else _positive("to-epochs", to_epochs)
    for what, b, size in (("", src.batch_size, src.n), ("to-", b2, n2)):
        if b > size:
            raise ValueError(f"{what}batch size {b:g} is larger than {what}n {size:g}")
    lr_ratio = src.lr / lr2 if get_mode(mode).timescale.lr_in_rate else 1.0
    epoch_ratio = src.epochs / e2 if src.epochs and e2 else 1.0
    wd2 = src.weight_decay * lr_ratio * (src.n / n2) * (b2 / src.batch_size) * epoch_ratio
    target = Setting(wd2, lr2, n2, b2, e2, mode)
    return Transfer(src, target, *_formula(src, target))


def _formula(a: Setting, b: Setting) -> tuple[str, str]:
    """The rule used, and the same with the numbers put in."""
    eta = get_mode(a.mode).timescale.lr_in_rate
    ep = a.epochs is not None and b.epochs is not None and a.epochs != b.epochs
    top = ["η" if eta else "", "N", "B'", "E" if ep else ""]
    bottom = ["η'" if eta else "", "N'", "B", "E'" if ep else ""]
    vals_top = [a.lr if eta else None, a.n, b.batch_size, a.epochs if ep else None]
    vals_bot = [b.lr if eta else None, b.n, a.batch_size, b.epochs if ep else None]
    rule = f"λ' = λ·({'·'.join(t for t in top if t)})/({'·'.join(t for t in bottom if t)})"
    num = "·".join(f"{v:g}" for v in vals_top if v is not None)
    den = "·".join(f"{v:g}" for v in vals_bot if v is not None)
    keep = "τ_epoch·E'/E (the same fraction of the run)" if ep else "τ_epoch"
    tau = "B/(η·λ·N)" if eta else "B/(λ·N)"
    rule += f"   keeps {keep}, τ_epoch = {tau}"
    return rule, f"λ' = {a.weight_decay:g}·({num})/({den}) = {b.weight_decay:.6g}"
