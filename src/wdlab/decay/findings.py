"""The weight-decay mistakes of one param group, each one rule in one wording.

:func:`wdlab.audit` reports these as findings (with the codes of :data:`wdlab.auditing.CHECKS`);
:meth:`wdlab.Decay.attach` and the trainer warn them, with the same words:

* ``lr-wd``: a step multiplies the weights by 1 − r ≤ 0 (r the decay's per-step rate,
  :func:`wdlab.decay.modes.decay_rate`: lr·wd, or wd for ``independent``);
* ``adam-l2``: an Adam-family optimizer's own (coupled) ``weight_decay``, which it rescales by
  √v̂, where AdamW was likely meant;
* ``double-decay``: the optimizer's own ``weight_decay`` under an attached wdlab ``Decay``;
* ``bad-wd``: a group's own ``weight_decay`` that is negative, NaN or infinite (torch checks
  only the constructor's default): it grows the weights, or turns them into NaN.

:func:`sources` says what decays a group (the optimizer's own ``weight_decay``, by what it
means for that class, and an attached ``Decay``); :func:`group_findings` applies the rules.
:func:`surprise_warnings` runs them on one configuration (a mode, wd, lr and optimizer, no live
optimizer), plus the one note about mode ``builtin`` itself; :func:`attach_warnings` on a live
optimizer a ``Decay`` is attached to.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch

from wdlab.decay.group import Keys, decays, step_of
from wdlab.decay.modes import FORMULAS, acting_mode, decay_rate, get_mode
from wdlab.decay.schedules import WDSchedule, scale
from wdlab.optimizers import OPTIMIZERS, class_name, known_spec, optimizer_spec

UNKNOWN = "unknown"  # what the weight_decay of an optimizer class wdlab does not know means


class DecayLike(Protocol):
    """What the rules read of a :class:`wdlab.decay.Decay`."""

    mode: str
    weight_decay: float
    schedule: Callable[[int], float] | None

    @property
    def formula(self) -> str: ...

    def wd_at(self, step: int, group: dict | None = None) -> float: ...


def own_wd_mode(name: str, group: Mapping[str, Any]) -> str | None:
    """What an optimizer class's own ``weight_decay`` means for this group: ``coupled``,
    ``decoupled``, ``None`` (it has none) or ``unknown`` (a class wdlab does not know)."""
    spec = known_spec(name)
    if spec is None:
        return UNKNOWN if "weight_decay" in group else None
    return spec.own_wd_mode_with(dict(group))


def _own_wd(group: Mapping[str, Any]) -> float:
    return float(group.get("weight_decay", 0.0) or 0.0)


def sources(name: str, group: dict, decay: DecayLike | None) -> list[dict]:
    """What decays this param group: the optimizer's own ``weight_decay`` (by what it means for
    class ``name``) and an attached wdlab ``Decay``; one dict each (by, mode, wd, formula)."""
    out = []
    own, meaning = _own_wd(group), own_wd_mode(name, group)
    if own != 0 and meaning is not None:  # negative and NaN too: they act (bad-wd says so)
        text = FORMULAS.get(
            meaning, "wdlab does not know whether it is coupled or decoupled; see its docs"
        )
        out.append({"by": f"{name}(weight_decay)", "mode": meaning, "wd": own, "formula": text})
    if decay is not None and decays(group) and get_mode(decay.mode).by_wdlab:
        wd = decay.wd_at(step_of(group), group)
        if wd > 0 or decay.schedule is not None:
            source = {"by": "wdlab Decay", "mode": decay.mode, "wd": wd, "formula": decay.formula}
            if isinstance(decay.schedule, WDSchedule):  # its peak is known: lr-wd looks there
                source["peak_wd"] = decay.wd_at(decay.schedule.peak_step(), group)
            out.append(source)
    return out


def unpacked_setup(optimizer: Any, scheduler: object) -> tuple[Any, list[object]]:
    """The optimizers and the schedulers of what Lightning's ``configure_optimizers`` returns
    (an optimizer, a list of them, ``([optimizers], [schedulers])``, a dict ``{"optimizer": …,
    "lr_scheduler": …}`` or a list of such dicts; a scheduler may be a dict with it under
    ``scheduler``), plus ``scheduler`` (one, a list, or such dicts); a one-line
    ``ValueError`` for a scheduler that is not one."""
    found: list[object] = []
    if isinstance(optimizer, Mapping) and "optimizer" in optimizer:
        optimizer, found = optimizer["optimizer"], [optimizer.get("lr_scheduler")]
    elif _two_lists(optimizer):
        optimizer, found = list(optimizer[0]), _listed(optimizer[1])
    elif _dicts(optimizer):
        found = [d.get("lr_scheduler") for d in optimizer]
        optimizer = [d["optimizer"] for d in optimizer]
    schedulers = [_scheduler(s) for s in [*found, *_listed(scheduler)] if s is not None]
    return optimizer, [s for s in schedulers if s is not None]


def _dicts(conf: Any) -> bool:
    """Lightning's list of ``{"optimizer": …}`` dicts."""
    return (
        isinstance(conf, (list, tuple))
        and bool(conf)
        and all(isinstance(d, Mapping) and "optimizer" in d for d in conf)
    )


def _two_lists(conf: Any) -> bool:
    """Lightning's ``([optimizers], [schedulers])``."""
    return (
        isinstance(conf, (list, tuple))
        and len(conf) == 2
        and isinstance(conf[0], (list, tuple))
        and all(isinstance(o, torch.optim.Optimizer) for o in conf[0])
    )


def _listed(given: object) -> list[object]:
    return list(given) if isinstance(given, (list, tuple)) else [given]


def _scheduler(given: object) -> object:
    """A scheduler, or Lightning's dict with one under ``scheduler``; None for None."""
    inner = given.get("scheduler") if isinstance(given, Mapping) else given
    if inner is None or (hasattr(inner, "optimizer") and hasattr(inner, "step")):
        return inner
    raise ValueError(
        f"scheduler: expected a torch lr scheduler (or Lightning's {{'scheduler': …}} dict), "
        f"got {type(inner).__name__} {inner!r:.40}"
    )


def with_peak(group: dict, schedulers: list[object], opt: torch.optim.Optimizer, i: int) -> dict:
    """``group``, with the peak lr its scheduler keeps to itself (CyclicLR's ``max_lrs``) as
    ``max_lr``, where one of ``schedulers`` drives ``opt`` (the group itself is not changed)."""
    for scheduler in schedulers:
        peaks = getattr(scheduler, "max_lrs", None)
        if getattr(scheduler, "optimizer", None) is opt and isinstance(peaks, (list, tuple)):
            return group | {"max_lr": peaks[i]} if i < len(peaks) else group
    return group


def still(group: dict) -> bool:
    """Whether no decay acts on the group: its lr is 0 and no scheduler raises it (the step of
    every decay scales with the lr: ``independent``'s by lr_t/lr₀)."""
    return _peak_lr(group)[0] == 0


def _where(index: int | None) -> str:
    return "" if index is None else f"param group {index}: "


def lr_wd(name: str, index: int | None, group: dict, source: dict) -> str | None:
    """``lr-wd``: one step of this decay multiplies the weights by 1 − r ≤ 0, at the group's
    peak lr (a scheduler's ``max_lr`` or ``initial_lr`` where it set one: OneCycleLR starts
    at max_lr/25)."""
    lr, lr_peak = _peak_lr(group)
    wd, mode = source["wd"], source["mode"]
    scheduled = source.get("peak_wd", 0.0) > wd  # a weight-decay schedule rises to it later
    wd = source["peak_wd"] if scheduled else wd
    if mode == UNKNOWN:  # assume the plain factor 1 − lr·wd
        rate, what = decay_rate("decoupled", lr, wd)[0], "lr·wd"
    else:
        if known_spec(name) is None:
            name = "sgd"  # a class wdlab does not know: take the plain (SGD) factor
        rate, _ = decay_rate(mode, lr, wd, name, group, through_momentum=False)
        what = "lr·wd" if acting_mode(mode, name, group).timescale.lr_in_rate else "wd"
    if not rate >= 1:
        return None
    peaks = [lr_peak] if lr_peak and what == "lr·wd" else []  # (independent's: no lr in it)
    if scheduled:
        peaks.append(f"the weight-decay schedule's peak{f' wd {wd:g}' if what == 'lr·wd' else ''}")
    at = f" at {' and '.join(peaks)}" if peaks else ""
    at += " (a bound: the two peaks may not meet)" if len(peaks) > 1 else ""
    return (
        f"{_where(index)}{what} = {rate:g} ≥ 1{at} ({source['by']}, {mode}): a step of this "
        f"decay multiplies the weights by {1 - rate:g} ≤ 0, which flips or zeroes them; use a "
        "smaller lr or weight decay"
    )


def _peak_lr(group: dict) -> tuple[float, str]:
    """The group's highest lr, now or as its scheduler set it (``max_lr``, ``initial_lr``),
    and where it comes from ("" for the group's own lr)."""
    now = float(group.get("lr", 0.0))
    set_by = {k: float(group[k]) for k in ("max_lr", "initial_lr") if k in group}
    key = max(set_by, key=lambda k: set_by[k], default=None)
    if key is None or not set_by[key] > now:
        return now, ""
    return set_by[key], f"the scheduler's {key} {set_by[key]:g}"


def bad_wd(index: int | None, source: dict) -> str | None:
    """``bad-wd``: a weight decay that is negative, NaN or infinite."""
    wd = source["wd"]
    if wd >= 0 and math.isfinite(wd):
        return None
    what = "NaN" if math.isnan(wd) else "infinite" if math.isinf(wd) else "negative"
    effect = (
        "each step pushes the weights away from 0, growing them"
        if what == "negative"
        else "one step turns every weight it decays into NaN or inf"
    )
    return (
        f"{_where(index)}weight_decay={wd:g} ({source['by']}) is {what}: {effect}; a weight "
        "decay must be a finite number ≥ 0"
    )


def adam_l2(name: str, label: str, index: int | None, group: dict) -> str | None:
    """``adam-l2``: an Adam-family optimizer's own coupled ``weight_decay``."""
    own, spec = _own_wd(group), known_spec(name)
    if spec is None:
        return None
    if not (spec.adam_family and own > 0 and own_wd_mode(name, group) == "coupled"):
        return None
    alt = f"torch.optim.AdamW(..., weight_decay={own:g})"
    if "decoupled_weight_decay" in inspect.signature(spec.cls).parameters:
        alt += f" or {name}(..., decoupled_weight_decay=True)"
    return (
        f"{_where(index)}{label}(weight_decay={own:g}) adds wd·w to the gradient, which {name} "
        f"then divides by {spec.divides_by}, so weights with large gradients barely decay; "
        "AdamW was likely "
        f"meant: {alt} (in wdlab: mode 'decoupled')"
    )


def double_decay(name: str, index: int | None, group: dict, decay: DecayLike) -> str | None:
    """``double-decay``: the optimizer's own ``weight_decay`` under an attached ``Decay``."""
    own, mode = _own_wd(group), get_mode(decay.mode)
    if own <= 0 or mode.optimizer_wd or not decays(group) or own_wd_mode(name, group) is None:
        return None
    fix = "; set weight_decay=0 in that group (wdlab.param_groups(model, decay) does)"
    has = f"param group {index} has weight_decay={own:g} of its own"
    if not mode.decays:
        return f"{has}: {name} applies it although Decay('{mode.name}') asks for none{fix}"
    return (
        f"param group {index} decays twice: {name}(weight_decay) and wdlab Decay('{mode.name}') "
        f"({has}: {name} applies it on top of Decay('{mode.name}')){fix}"
    )


def group_findings(
    name: str, label: str, index: int | None, group: dict, decay: DecayLike | None
) -> list[tuple[str, str]]:
    """(code, message) for each rule this param group breaks, in the order of the module
    docstring's list (``adam-l2`` first)."""
    out: list[tuple[str, str]] = []
    if not group["params"]:
        return out
    if msg := adam_l2(name, label, index, group):
        out.append(("adam-l2", msg))
    for source in sources(name, group, decay):
        if msg := bad_wd(index, source):
            out.append(("bad-wd", msg))
        elif msg := lr_wd(name, index, group, source):
            out.append(("lr-wd", msg))
    if decay is not None and (msg := double_decay(name, index, group, decay)):
        out.append(("double-decay", msg))
    return out


def builtin_note(mode: str, wd: float, name: str, options: Mapping[str, Any] | None) -> str | None:
    """Mode ``builtin`` with an optimizer whose ``weight_decay`` is decoupled (AdamW): not the
    L2/coupled decay ``builtin`` means for SGD and Adam."""
    if not (get_mode(mode).optimizer_wd and wd > 0):
        return None
    if own_wd_mode(name, dict(options or {})) != "decoupled":
        return None
    return (
        f"{name}'s weight_decay is decoupled here (w ← w·(1 − lr·wd)), not the L2/coupled "
        "decay of SGD's and of Adam's by default; mode 'decoupled' says this explicitly"
    )


class _Config:
    """A configuration as a :class:`DecayLike`: its Decay, and its weight-decay schedule scaled
    to it (each row's weight decay is where the schedule starts: :func:`scaled`)."""

    def __init__(self, mode: str, wd: float, schedule: WDSchedule | None) -> None:
        self.mode, self.weight_decay, self.schedule = mode, wd, schedule

    @property
    def formula(self) -> str:
        return FORMULAS[self.mode]

    def wd_at(self, step: int, group: dict | None = None) -> float:
        if self.schedule is None or not self.schedule.start > 0:
            return self.weight_decay
        return float(scale(self.schedule(step), self.weight_decay, self.schedule.start))


def surprise_warnings(
    mode: str,
    wd: float,
    lr: float,
    optimizer: str,
    options: Mapping[str, Any] | None = None,
    schedule: WDSchedule | None = None,
) -> list[str]:
    """Warnings for one configuration's settings that do other than the user probably expects:
    audit's findings for the group it trains in (``options``: the optimizer's keywords;
    ``schedule``: a sweep's weight-decay schedule, ``lr-wd`` read at its peak), in the same
    words, and the note about mode ``builtin`` itself."""
    name = optimizer_spec(optimizer).cls_name
    m = get_mode(mode)
    group = {"params": [None], "lr": lr, "weight_decay": wd if m.optimizer_wd else 0.0}
    group |= dict(options or {})
    decay = _Config(mode, wd, schedule) if m.by_wdlab else None
    out = [msg for _, msg in group_findings(name, name, None, group, decay)]
    note = builtin_note(mode, wd, name, options)
    return [*out, note] if note else out


def known_class(optimizer: Any) -> bool:
    """Whether ``optimizer`` (one, its class or its class name) is a torch optimizer wdlab knows."""
    return class_name(optimizer) in {s.cls_name for s in OPTIMIZERS.values()}


def formula(mode: str, optimizer: str | torch.optim.Optimizer | None = None) -> str:
    """The update of ``mode``; for ``builtin`` with a known optimizer, what it does with wd.

    An instance's options are read: ``Adam(decoupled_weight_decay=True)`` is decoupled."""
    m = get_mode(mode)
    if m.optimizer_wd and optimizer is not None and known_class(optimizer):
        options = optimizer.defaults if isinstance(optimizer, torch.optim.Optimizer) else None
        meaning = acting_mode(mode, class_name(optimizer), options)
        if meaning.decays:
            return f"{class_name(optimizer)}(weight_decay=wd) is {meaning.name}: {meaning.formula}"
    return FORMULAS[mode]


# ---------------------------------------------------------------------------------------------
# Guarding the user: the rules of wdlab.decay.findings (audit's findings), as warnings.


def attach_warnings(
    decay: DecayLike, optimizer: torch.optim.Optimizer, only: Sequence[int] | None = None
) -> list[str]:
    """What attaching ``decay`` to ``optimizer`` does that the user probably does not mean:
    audit's findings for each param group (lr·wd ≥ 1, Adam's L2, the optimizer's own weight
    decay on top), the ``builtin`` note, and biases or norm weights decayed unasked; ``only``:
    for those groups (added since attach), without the note."""
    out = []
    name, groups = class_name(optimizer), list(enumerate(optimizer.param_groups))
    groups = groups if only is None else [groups[i] for i in only]
    for i, group in groups:
        out += [msg for _, msg in group_findings(name, name, i, group, decay)]
    first = optimizer.param_groups[0] if optimizer.param_groups else {}
    note = builtin_note(decay.mode, decay.weight_decay, name, first) if only is None else None
    out += [note] if note and known_class(name) else []  # (the note: at attach alone)
    decaying = get_mode(decay.mode).decays and (
        decay.weight_decay > 0 or decay.schedule is not None
    )
    for i, group in groups:
        small = [p for p in group["params"] if p.dim() < 2]
        if decaying and Keys.DECAY not in group and small:
            out.append(
                f"Decay('{decay.mode}') decays {_count(len(small), 'tensor')} with ndim < 2 ("
                f"{_count(sum(p.numel() for p in small), 'parameter')}: biases, norm weights) in "
                f"param group {i}; give such a group 'decay': False (wdlab.param_groups(model, "
                "decay) does), or build it with DecayRule(everything=True) if you mean it"
            )
    return out


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'s' * (n != 1)}"
