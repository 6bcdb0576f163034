"""Weight-decay modes as small functions applied at three named points of a training step.

A decay is a small piece of data, :class:`Decay` (mode, weight decay, options). Each mode is
one tiny function, hooked into a step at one of three points:

* **loss**: ``l2`` adds ``(wd/2)·Σ‖w‖²`` to the loss before ``backward()``;
* **grad** (after ``backward()``, before ``optimizer.step()``): ``coupled`` adds ``wd·w`` to the
  gradient, ``to_init`` adds ``wd·(w − w₀)``;
* **param** (just before the optimizer's own update): ``decoupled`` multiplies ``w`` by
  ``1 − lr_t·wd``; ``independent`` by ``1 − wd·lr_t/lr₀``.

``builtin`` hands ``weight_decay=wd`` to the optimizer itself; ``none`` does nothing.

The functions work on torch parameter groups, so the same code serves a user's own
``torch.optim`` optimizer (see :meth:`Decay.attach`) and wdlab's batched engine, where one
group holds the rows of many configurations and ``wd`` may be one value per row.

Parameters whose ``.grad`` is ``None`` are skipped by every mode, exactly as torch's optimizers
skip them: a parameter that took no part in the loss is neither updated nor decayed.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

MODES: tuple[str, ...] = (
    "none",
    "l2",
    "coupled",
    "builtin",
    "decoupled",
    "independent",
    "to_init",
)

#: The update each mode makes, as shown in reports and ``wdlab verify``.
FORMULAS: dict[str, str] = {
    "none": "w ← opt(w, g)",
    "l2": "loss ← loss + (wd/2)·Σ‖w‖²   (so g ← g + wd·w through autograd)",
    "coupled": "g ← g + wd·w   (after backward, before the optimizer)",
    "builtin": "optimizer(weight_decay=wd): whatever that optimizer does with it",
    "decoupled": "w ← w·(1 − lr_t·wd)   (before the optimizer's update, as AdamW)",
    "independent": "w ← w·(1 − wd·lr_t/lr₀)   (not scaled by the base lr)",
    "to_init": "g ← g + wd·(w − w₀)   (L2-SP: decay toward the initial weights)",
}


def formula(mode: str, optimizer: str | None = None) -> str:
    """The update of ``mode``; for ``builtin`` with a known optimizer, what it does with wd."""
    check_mode(mode)
    if mode == "builtin" and optimizer is not None:
        meaning = BUILTIN_MEANING.get(optimizer)
        if meaning is not None:
            return f"{optimizer}(weight_decay=wd) is {meaning}: {FORMULAS[meaning]}"
    return FORMULAS[mode]


#: Where each mode acts: "loss", "grad", "param", "optimizer" or None.
HOOK_POINT: dict[str, str | None] = {
    "none": None,
    "l2": "loss",
    "coupled": "grad",
    "to_init": "grad",
    "decoupled": "param",
    "independent": "param",
    "builtin": "optimizer",
}

#: What ``weight_decay=`` means in each torch optimizer, in wdlab's mode names.
BUILTIN_MEANING: dict[str, str] = {
    "SGD": "coupled",
    "Adam": "coupled",
    "RMSprop": "coupled",
    "Adagrad": "coupled",
    "Adamax": "coupled",
    "NAdam": "coupled",
    "RAdam": "coupled",
    "ASGD": "coupled",
    "Adadelta": "coupled",
    "AdamW": "decoupled",
}

WD = float | Tensor  # one value for the whole group, or one per configuration row


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


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a known decay mode, else raise a ``ValueError`` listing them."""
    if mode not in MODES:
        raise ValueError(f"unknown decay mode {mode!r}; valid modes: {', '.join(MODES)}")
    return mode


def check_weight_decay(wd: float) -> float:
    """Return ``wd`` if it is a finite number ≥ 0, else raise ``ValueError``."""
    if not isinstance(wd, (int, float)) or not math.isfinite(wd) or wd < 0:
        raise ValueError(f"weight decay must be a finite number >= 0, got {wd!r}")
    return float(wd)


# ---------------------------------------------------------------------------------------------
# The modes. ``wd`` is a float, or a 1-D tensor with one value per leading row of each parameter
# (the engine's stacked configurations). A float takes exactly torch's own arithmetic
# (``add_(p, alpha=wd)``), so ``coupled`` is bitwise equal to ``SGD(weight_decay=wd)``.


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


def apply_after_backward(mode: str, group: dict, wd: WD) -> None:
    """The grad-point modes (``coupled``, ``to_init``) on one parameter group."""
    if mode == "coupled":
        coupled(group["params"], wd)
    elif mode == "to_init":
        to_init(group["params"], group["anchor"], wd)


def apply_param_point(mode: str, group: dict, wd: WD) -> None:
    """The param-point modes (``decoupled``, ``independent``) on one parameter group."""
    if mode == "decoupled":
        shrink(group["params"], decoupled_factor(group["lr"], wd))
    elif mode == "independent":
        lr0 = group.get("lr0") or group.get("initial_lr")
        if not lr0:
            raise ValueError("mode 'independent' needs the base lr (lr0); none is known")
        shrink(group["params"], independent_factor(group["lr"], lr0, wd))


def apply_before_step(mode: str, group: dict, wd: WD) -> None:
    """Everything a mode does between ``backward()`` and the optimizer's update."""
    apply_after_backward(mode, group, wd)
    apply_param_point(mode, group, wd)


# ---------------------------------------------------------------------------------------------
# Guarding the user.


def optimizer_name(optimizer: torch.optim.Optimizer | type | str) -> str:
    """The class name of a torch optimizer (instance, class or name)."""
    if isinstance(optimizer, str):
        return optimizer
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    return cls.__name__


def surprise_warnings(
    mode: str, wd: float, lr: float, optimizer: str, momentum: float = 0.0
) -> list[str]:
    """Warnings for settings that do something other than the user probably expects."""
    out = []
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
    name = optimizer_name(optimizer)
    for group in optimizer.param_groups:
        for msg in surprise_warnings(
            decay.mode, decay.weight_decay, group["lr"], name, group.get("momentum", 0.0)
        ):
            warnings.warn(msg, UserWarning, stacklevel=3)
        break


# ---------------------------------------------------------------------------------------------
# Which parameters decay.

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


@dataclass(frozen=True)
class DecayRule:
    """Which parameters decay. The default: tensors with ndim ≥ 2 decay; 1-D ones do not.

    ``everything`` decays all tensors (the article decays biases too). ``exclude`` and
    ``include`` are fnmatch patterns on parameter names, ``exclude_types`` module types whose
    own parameters never decay; ``embeddings`` False keeps ``nn.Embedding`` weights from
    decaying; ``use_model_hook`` honours the model's ``no_weight_decay()`` (timm's convention).
    """

    everything: bool = False
    embeddings: bool = True
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude_types: tuple[type[nn.Module], ...] = ()
    use_model_hook: bool = True

    def describe(self) -> str:
        """One line saying what this rule decays."""
        if self.everything:
            base = "every tensor decays (biases and norms too)"
        else:
            base = "tensors with ndim >= 2 decay; biases and other 1-D tensors do not"
        extra = []
        if not self.embeddings:
            extra.append("embeddings excluded")
        if self.exclude:
            extra.append("excluded: " + ", ".join(self.exclude))
        if self.include:
            extra.append("forced: " + ", ".join(self.include))
        if self.exclude_types:
            extra.append("types excluded: " + ", ".join(t.__name__ for t in self.exclude_types))
        return base + ("; " + "; ".join(extra) if extra else "")

    def reasons(self, model: nn.Module) -> dict[str, tuple[bool, str]]:
        """For each parameter name: (decays?, why)."""
        owner: dict[str, nn.Module] = {}
        for mod_name, mod in model.named_modules():
            for p_name, _ in mod.named_parameters(recurse=False):
                owner[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
        hook_names: set[str] = set()
        if self.use_model_hook and hasattr(model, "no_weight_decay"):
            hook_names = set(model.no_weight_decay())
        out: dict[str, tuple[bool, str]] = {}
        for name, p in model.named_parameters():
            mod = owner.get(name)
            if any(fnmatch.fnmatchcase(name, pat) for pat in self.include):
                out[name] = (True, "include pattern")
            elif any(fnmatch.fnmatchcase(name, pat) for pat in self.exclude):
                out[name] = (False, "exclude pattern")
            elif name in hook_names or any(fnmatch.fnmatchcase(name, h) for h in hook_names):
                out[name] = (False, "model.no_weight_decay()")
            elif mod is not None and self.exclude_types and isinstance(mod, self.exclude_types):
                out[name] = (False, f"type {type(mod).__name__}")
            elif not self.embeddings and isinstance(mod, nn.Embedding):
                out[name] = (False, "embedding")
            elif self.everything:
                out[name] = (True, "everything")
            elif p.dim() >= 2:
                out[name] = (True, "ndim >= 2")
            else:
                norm = mod is not None and isinstance(mod, NORM_TYPES)
                out[name] = (False, "norm" if norm else "ndim < 2 (bias)")
        return out


DEFAULT_RULE = DecayRule()
EVERYTHING = DecayRule(everything=True)


@dataclass
class DecayTable:
    """Which parameters decay: one row per parameter, printable and JSON-able."""

    rows: list[dict]
    rule: str

    @property
    def decayed(self) -> tuple[int, int]:
        """(tensors, elements) that decay."""
        rows = [r for r in self.rows if r["decays"]]
        return len(rows), sum(r["numel"] for r in rows)

    @property
    def kept(self) -> tuple[int, int]:
        """(tensors, elements) that do not decay."""
        rows = [r for r in self.rows if not r["decays"]]
        return len(rows), sum(r["numel"] for r in rows)

    def summary(self) -> str:
        """The nanoGPT-style line: how many tensors and parameters decay."""
        (dt, dn), (kt, kn) = self.decayed, self.kept
        return (
            f"decayed: {dt} tensors, {dn:,} parameters; not decayed: {kt} tensors, "
            f"{kn:,} parameters ({self.rule})"
        )

    def to_text(self) -> str:
        """A fixed-width table of the rows and the summary line."""
        w = max([len("parameter")] + [len(r["name"]) for r in self.rows])
        lines = [f"{'parameter':<{w}}  {'shape':<14} {'count':>10}  decays  why"]
        for r in self.rows:
            shape = "×".join(map(str, r["shape"])) or "scalar"
            lines.append(
                f"{r['name']:<{w}}  {shape:<14} {r['numel']:>10,}  "
                f"{'yes' if r['decays'] else 'no':<6}  {r['why']}"
            )
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        (dt, dn), (kt, kn) = self.decayed, self.kept
        return {
            "rule": self.rule,
            "parameters": self.rows,
            "decayed_tensors": dt,
            "decayed_parameters": dn,
            "kept_tensors": kt,
            "kept_parameters": kn,
        }


def decay_table(model: nn.Module, rule: DecayRule = DEFAULT_RULE) -> DecayTable:
    """The table of which parameters of ``model`` decay under ``rule``."""
    reasons = rule.reasons(model)
    rows = [
        {
            "name": name,
            "shape": list(p.shape),
            "numel": p.numel(),
            "decays": reasons[name][0],
            "why": reasons[name][1],
        }
        for name, p in model.named_parameters()
    ]
    return DecayTable(rows, rule.describe())


def param_groups(
    model: nn.Module,
    decay: Decay | None = None,
    rule: DecayRule = DEFAULT_RULE,
    **group_options: object,
) -> tuple[list[dict], DecayTable]:
    """Torch parameter groups (decaying, not decaying) for ``model`` and the readable table.

    Each group carries ``"decay": True/False`` for :meth:`Decay.attach`, and
    ``weight_decay`` set for ``builtin`` (0 elsewhere, so AdamW's default 0.01 never sneaks in).
    """
    table = decay_table(model, rule)
    by_name = dict(model.named_parameters())
    wd = decay.optimizer_weight_decay() if decay is not None else 0.0
    groups = []
    for flag in (True, False):
        names = [r["name"] for r in table.rows if r["decays"] is flag]
        if names:
            groups.append(
                {
                    "params": [by_name[n] for n in names],
                    "names": names,
                    "decay": flag,
                    "weight_decay": wd if flag else 0.0,
                    **group_options,
                }
            )
    return groups, table


def decayed_names(model: nn.Module, rule: DecayRule = DEFAULT_RULE) -> list[str]:
    """Names of the parameters of ``model`` that decay under ``rule``."""
    return [n for n, (flag, _) in rule.reasons(model).items() if flag]


ModelFactory = Callable[[], nn.Module]
