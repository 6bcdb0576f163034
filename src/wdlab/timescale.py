"""Weight-decay timescales (Wang & Aitchison, ICML 2025) and carrying a setting over.

With decoupled decay each step shrinks the weights by the factor 1 − η·λ, so the weights are an
exponential moving average of the recent updates with timescale

    τ_iter = 1/(η·λ) iterations,   τ_epoch = τ_iter / M epochs,   M = ⌈N/B⌉ iterations per epoch.

M is the one definition wdlab uses everywhere (a run's recorded τ_epoch, ``wdlab transfer``,
``wdlab timescale``; :func:`steps_per_epoch`): the optimizer steps an epoch of N examples in
batches of B actually takes, the last batch possibly short, as PyTorch's ``DataLoader`` and
wdlab's own runs do. Wang & Aitchison write M = N/B: the same number when B divides N, and at
most one step more otherwise. wdlab counts the steps taken because τ_iter counts steps, so
τ_iter/⌈N/B⌉ is exactly how many epochs the average spans; at the paper's scale (N/B in the
thousands) the two agree to a fraction of a percent.

Wang & Aitchison find the best τ_epoch roughly constant as model and data size change, so λ
must be rescaled whenever η, N or B changes: keeping τ_epoch fixed gives

    λ' = λ·(η·M)/(η'·M'),   i.e. λ·(η·N·B')/(η'·N'·B) where B | N, B' | N' (:func:`transfer`).

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

import decimal
import math
import numbers
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from html import escape
from typing import Protocol


class ConfigLike(Protocol):
    """What τ reads of a configuration: a :class:`wdlab.records.RunConfig` (not imported, as
    it imports torch, and ``wdlab transfer`` is arithmetic that runs without it)."""

    @property
    def mode(self) -> str: ...
    @property
    def lr(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def optimizer(self) -> str: ...
    @property
    def options(self) -> tuple[tuple[str, object], ...]: ...


def transfer_modes() -> dict[str, bool]:
    """The modes :func:`transfer` knows (:attr:`wdlab.decay.Mode.transfer`), each with whether
    its per-step rate carries the lr: η·λ (decoupled and its kin: AdamW, cautious, corrected,
    coupled plain SGD) or λ (independent), whatever the optimizer. Read from the mode registry
    (which loads torch: the command line passes what it needs from its facts instead)."""
    from wdlab.decay.modes import MODES

    return {name: m.timescale.lr_in_rate for name, m in MODES.items() if m.transfer}


def steps_per_epoch(n: float, batch_size: float) -> float:
    """M = ⌈N/B⌉: optimizer steps per epoch of ``n`` examples in batches of ``batch_size`` (the
    last batch may be short); 1 for a full batch (B ≥ N). Where N/B is beyond 2⁵³ every float
    is a whole number, and N/B is M itself (``inf`` where it overflows). Each must be a
    positive finite number (else a one-line ``ValueError``)."""
    _positive("n", n), _positive("batch size", batch_size)
    if all(_whole(v) for v in (n, batch_size)):  # whole counts: exactly, however large
        m = -(-int(n) // int(batch_size))
        return max(1.0, float(m)) if m < 10**308 else math.inf
    log_m = math.log10(n) - math.log10(batch_size)
    if log_m > 15:
        return _pow10(log_m)
    q = n / batch_size
    whole = round(q)  # 3/0.1 is 30.000000000000004 in floats: 30 batches, not 31
    return max(1.0, float(whole if abs(q - whole) <= 1e-9 * q else math.ceil(q)))


def _whole(v: float) -> bool:
    """A finite whole number (an int, or a float holding one)."""
    return isinstance(v, int) or (math.isfinite(v) and float(v).is_integer())


def log10_steps(n: float, batch_size: float) -> float:
    """log10 of M = ⌈N/B⌉ (:func:`steps_per_epoch`), finite for any positive finite N and B."""
    log_m = math.log10(n) - math.log10(batch_size)
    return math.log10(steps_per_epoch(n, batch_size)) if log_m <= 15 else log_m


def keep_tau_slope(slope: Mapping[str, float]) -> str:
    """What keeping τ_epoch predicts for the slope, in words: ``−1``, ``0``, ``−0.93``."""
    v = slope.get("keep_tau", -1.0)  # (a result written before it was stored: B divided N)
    return f"{round(v, 2) + 0.0:g}".replace("-", "−")


def _pow10(x: float) -> float:
    """10**x, ``inf`` where that overflows a float (and 0.0 where it underflows)."""
    try:
        return 10.0**x
    except OverflowError:
        return math.inf


def _in_range(plain: float, log10: float) -> float:
    """``plain`` where it is a positive finite float, else 10**log10 (the same number computed
    in logs; ``inf`` or 0.0 only where the true value is beyond float range)."""
    return plain if 0 < plain < math.inf else _pow10(log10)


def _tau(rate: float) -> float:
    if math.isnan(rate):
        return math.nan
    return math.inf if rate == 0 else 1.0 / rate


def timescales(config: ConfigLike, iters_per_epoch: float) -> dict[str, float]:
    """τ_iter and τ_epoch of one configuration (NaN where not defined, see the module)."""
    from wdlab.decay.modes import decay_rate

    m = _positive("iters_per_epoch", iters_per_epoch)
    rate, _ = decay_rate(
        config.mode, config.lr, config.weight_decay, config.optimizer, dict(config.options)
    )
    tau = _tau(rate)
    return {"tau_iter": tau, "tau_epoch": tau / m}


def explain(config: ConfigLike) -> str:
    """Why τ is what it is for this configuration (or why it is not defined), in one line."""
    from wdlab.decay.modes import decay_rate

    rate, why = decay_rate(
        config.mode, config.lr, config.weight_decay, config.optimizer, dict(config.options)
    )
    if math.isnan(rate):
        return f"τ not defined: {why}"
    return f"τ_iter = 1/r, r = {rate:.4g} per step ({why})"


def _positive(name: str, value: object) -> float:
    """``value`` as a float if it is a finite number > 0 (a Python or NumPy number, or a
    one-element tensor or array), else a one-line ``ValueError``."""
    item = getattr(value, "item", None)  # a tensor's or array's one number
    number = value.item() if callable(item) and _size(value) == 1 else value  # type: ignore[attr-defined]
    ok = isinstance(number, (numbers.Real, decimal.Decimal)) and not isinstance(number, bool)
    try:
        x = float(number) if ok else math.nan  # type: ignore[arg-type]
    except OverflowError:  # an int beyond a double: 10**400
        raise ValueError(f"{name} {_shown(value)} is beyond a double's range") from None
    if x == 0 and ok and number > 0:  # type: ignore[operator]
        raise ValueError(f"{name} {_shown(value)} underflows to 0 as a double") from None
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {_shown(value)}")
    return x


def _size(value: object) -> int:
    """How many numbers a tensor (``numel()``) or array (``size``) holds."""
    numel = getattr(value, "numel", None)
    return int(numel() if callable(numel) else getattr(value, "size", 0))


def _shown(value: object) -> str:
    """``repr(value)``, cut to 40 characters (10**400 has 401 digits)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
    lr_in_rate: bool = True  # the mode's per-step rate is η·λ (else λ): :func:`transfer_modes`

    @property
    def iters_per_epoch(self) -> float:
        """M = ⌈N/B⌉ (:func:`steps_per_epoch`)."""
        return steps_per_epoch(self.n, self.batch_size)

    @property
    def log10_tau_iter(self) -> float:
        """log10 τ_iter, computed in logs (η·λ may underflow where τ_iter does not)."""
        lr = math.log10(self.lr) if self.lr_in_rate else 0.0
        return -(math.log10(self.weight_decay) + lr) if self.weight_decay > 0 else math.inf

    @property
    def tau_iter(self) -> float:
        """1/(η·λ) iterations (a mode whose rate has no η, ``independent``: 1/λ)."""
        rate = self.weight_decay * (self.lr if self.lr_in_rate else 1.0)
        return _in_range(1.0 / rate if rate > 0 else math.inf, self.log10_tau_iter)

    @property
    def tau_epoch(self) -> float:
        """τ_iter / M epochs."""
        log = self.log10_tau_iter - log10_steps(self.n, self.batch_size)
        return _in_range(self.tau_iter / self.iters_per_epoch, log)

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

    @property
    def caveats(self) -> list[str]:
        """Where a setting lies outside the rule's regime: η·λ ≥ 1 (τ_iter ≤ 1 step), where a
        step no longer shrinks the weights a little but flips or zeroes them; or, with epochs
        given, τ_epoch longer than the run, whose weights never forget their start."""
        out = []
        for whose, s in (("the tuned setting's", self.source), ("the new setting's", self.target)):
            if s.epochs and s.tau_epoch > s.epochs:
                out.append(
                    f"{whose} τ_epoch = {s.tau_epoch:.6g} epochs is longer than its "
                    f"{s.epochs:g}-epoch run ({s.tau_epoch / s.epochs:.3g}×): the weights stay far "
                    "from the moving average of updates the rule is about, one a run spans many "
                    "times, so λ barely acts and keeping τ_epoch carries little"
                )
            if s.log10_tau_iter <= 0:
                rate = "η·λ" if s.lr_in_rate else "λ"
                out.append(
                    f"{whose} {rate} = {_pow10(-s.log10_tau_iter):.3g} ≥ 1 (τ_iter = "
                    f"{s.tau_iter:.3g} step{'s' * (s.tau_iter != 1)}): each step multiplies the "
                    f"weights by 1 − {rate} ≤ 0, "
                    f"outside the moving-average regime the τ_epoch rule is about ({rate} ≪ 1)"
                )
        return out

    def to_text(self) -> str:
        """What ``wdlab transfer`` prints: λ → λ', the formula with its numbers, and both
        settings with their τ_iter and τ_epoch (its caveats are warned)."""
        a, b = self.source, self.target
        lines = [
            f"weight decay: {a.weight_decay:g} → {b.weight_decay:.6g}",
            f"formula:      {self.formula}",
            f"              {self.substituted}",
            f"{'':14}{'lr':>10} {'N':>12} {'batch':>8} {'M':>8} {'epochs':>7} {'τ_iter':>12} "
            f"{'τ_epoch':>10}",
        ]
        for label, x in (("from", a), ("to", b)):
            epochs = f"{x.epochs:g}" if x.epochs else "-"
            lines.append(
                f"{label:<14}{x.lr:>10g} {x.n:>12g} {x.batch_size:>8g} {x.iters_per_epoch:>8g} "
                f"{epochs:>7} {x.tau_iter:>12.6g} {x.tau_epoch:>10.6g}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"Transfer({self.substituted})"

    def _repr_html_(self) -> str:
        """The transfer as ``wdlab transfer`` prints it, for notebooks."""
        return f"<pre>{escape(self.to_text())}</pre>"

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
            "caveats": self.caveats,
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
    """Carry weight decay λ tuned at (η, N, B) to (η', N', B') keeping τ_epoch = 1/(η·λ·M).

    λ' = λ·(η·M)/(η'·M') with M = ⌈N/B⌉ (:func:`steps_per_epoch`; λ·(η·N·B')/(η'·N'·B) where
    the batches divide the data); ``mode="independent"`` (τ_iter = 1/λ) drops the η factors.
    A ``to_*`` left out keeps its value. ``to_epochs`` (needs ``epochs``) keeps τ as the same
    *fraction of the run*: τ_epoch' = τ_epoch·E'/E, i.e. M·E, the steps of the run, takes the
    place of M (as the tokens trained do in single-epoch LLM training), so λ' gains E/E'.
    Every input must be a positive finite number (a batch larger than its data is one full
    batch, M = 1, as a DataLoader gives it); the answer is computed in logs where plain floats
    would overflow, and refused (one line) where it lies beyond float range. A setting with
    η·λ ≥ 1 (τ_iter ≤ 1 step) is outside the rule's regime: warned, and listed in ``caveats``.
    """
    modes = transfer_modes()
    if mode not in modes:
        raise ValueError(f"transfer mode must be one of {', '.join(modes)}, got {mode!r}")
    to = {"lr": to_lr, "n": to_n, "batch_size": to_batch_size, "epochs": to_epochs}
    return carry(weight_decay, lr, n, batch_size, to, epochs, mode, modes[mode], stacklevel=3)


def carry(
    weight_decay: float,
    lr: float,
    n: float,
    batch_size: float,
    to: dict[str, float | None],
    epochs: float | None,
    mode: str,
    lr_in_rate: bool,
    stacklevel: int = 2,
) -> Transfer:
    """Carry a tuned weight decay to another setting, as :func:`transfer` does.

    The mode's fact ``lr_in_rate`` (its rate scales with η) is given, as the command line reads
    it from its facts without importing torch; ``to``: the ``to_*``. Use :func:`transfer`."""
    to_lr, to_n, to_batch_size, to_epochs = to["lr"], to["n"], to["batch_size"], to["epochs"]
    if to_epochs is not None and epochs is None:
        raise ValueError("to_epochs (--to-epochs) needs epochs (--epochs), the epochs tuned for")
    src = Setting(
        _positive("weight decay", weight_decay),
        _positive("lr", lr),
        _positive("n", n),
        _positive("batch size", batch_size),
        None if epochs is None else _positive("epochs", epochs),
        mode,
        lr_in_rate,
    )
    lr2 = src.lr if to_lr is None else _positive("to-lr", to_lr)
    n2 = src.n if to_n is None else _positive("to-n", to_n)
    b2 = src.batch_size if to_batch_size is None else _positive("to-batch-size", to_batch_size)
    e2 = src.epochs if to_epochs is None else _positive("to-epochs", to_epochs)
    factors = [(src.weight_decay, 1.0), (steps_per_epoch(src.n, src.batch_size), 1.0)]
    factors.append((1.0, steps_per_epoch(n2, b2)))  # keeps η·λ·M (and λ·M·E, with epochs)
    if lr_in_rate:
        factors.append((src.lr, lr2))
    if src.epochs and e2:
        factors.append((src.epochs, e2))
    log_m = log10_steps(src.n, src.batch_size) - log10_steps(n2, b2)  # M may overflow a float
    log_wd2 = log_m + math.fsum(math.log10(a) - math.log10(b) for a, b in factors[3:])
    log_wd2 += math.log10(src.weight_decay)
    plain = 1.0
    for a, b in factors:
        plain = plain * a / b
    target = Setting(_in_range(plain, log_wd2), lr2, n2, b2, e2, mode, lr_in_rate)
    _check_range(src, "the tuned setting's", math.log10(src.weight_decay))
    _check_range(target, "the new setting's", log_wd2)
    result = Transfer(src, target, *_formula(src, target))
    for caveat in result.caveats:
        warnings.warn(caveat, stacklevel=stacklevel)
    return result


def _check_range(s: Setting, whose: str, log_wd: float) -> None:
    """A one-line ``ValueError`` where λ, M, τ_iter or τ_epoch of ``s`` lies beyond float
    range (it would print as 0 or inf), said as a power of ten computed in logs."""
    log_m = log10_steps(s.n, s.batch_size)
    values = {
        "weight decay": (s.weight_decay, log_wd),
        "steps per epoch M": (s.iters_per_epoch, log_m),
        "τ_iter": (s.tau_iter, s.log10_tau_iter),
        "τ_epoch": (s.tau_epoch, s.log10_tau_iter - log_m),
    }
    for what, (value, log) in values.items():
        if not sys.float_info.min <= value < math.inf:  # 0, subnormal or inf: digits lost
            raise ValueError(
                f"{whose} {what} would be about 1e{log:+.0f}, beyond the range of a float "
                "(about 1e-308 to 1e+308); check the inputs"
            )


def _formula(a: Setting, b: Setting) -> tuple[str, str]:
    """The rule used, and the same with the numbers put in."""
    eta = a.lr_in_rate
    ep = a.epochs is not None and b.epochs is not None and a.epochs != b.epochs
    top = ["η" if eta else "", "M", "E" if ep else ""]
    bottom = ["η'" if eta else "", "M'", "E'" if ep else ""]
    vals_top = [a.lr if eta else None, a.iters_per_epoch, a.epochs if ep else None]
    vals_bot = [b.lr if eta else None, b.iters_per_epoch, b.epochs if ep else None]
    rule = f"λ' = λ·{_product(t for t in top if t)}/{_product(t for t in bottom if t)}"
    num = _product(f"{v:g}" for v in vals_top if v is not None)
    den = _product(f"{v:g}" for v in vals_bot if v is not None)
    keep = "τ_epoch/E (the same fraction of the run)" if ep else "τ_epoch"
    tau = "1/(η·λ·M)" if eta else "1/(λ·M)"
    rule += f", M = ⌈N/B⌉   keeps {keep}, τ_epoch = {tau}"
    return rule, f"λ' = {a.weight_decay:g}·{num}/{den} = {b.weight_decay:.6g}"


def _product(factors: Iterable[str]) -> str:
    """``(η·M)`` for several factors, ``M`` for one (no parentheses around a lone factor)."""
    terms = list(factors)
    return "·".join(terms) if len(terms) == 1 else f"({'·'.join(terms)})"
