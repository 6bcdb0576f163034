"""A decay strategy as a small piece of data, and attaching it to any torch optimizer.

:class:`Decay` (mode, weight decay, options) applies its mode on every ``optimizer.step()`` of a
user's own ``torch.optim`` optimizer (:meth:`Decay.attach`), through the very functions the
batched engine uses (:mod:`wdlab.decay.modes`). It stays exact in real training loops:

* ``opt.step(closure)`` (LBFGS, Lightning's automatic optimization): the closure is wrapped, so
  gradient-point decay is added after each evaluation (once the gradients exist), together
  with its loss term in the loss the closure returns (LBFGS's line search reads it), and
  parameter-point decay once per step, after the first evaluation, as AdamW does;
* ``GradScaler``: decay sees unscaled gradients, skipped steps are not decayed (also for fused
  optimizers, which unscale inside their kernel);
* gradient accumulation: decay acts once per optimizer step, never per ``backward()``;
* ``maximize=True``: decay stays decay (see :mod:`wdlab.decay.modes`);
* lr schedulers created before or after :meth:`Decay.attach`: lr₀ (the peak lr ``independent``
  and ``corrected`` measure against) is fixed at the first step, from the group's ``max_lr``
  (OneCycleLR), else its ``initial_lr``, else its lr at attach (a warm-up written by hand in
  the loop lowers the lr after the optimizer was built at its peak);
* its state (lr₀, the ``to_init`` anchor, the step count) lives in the optimizer's param groups,
  so it round-trips through ``optimizer.state_dict()`` whichever of ``load_state_dict`` and
  ``attach`` comes first (a group added later, or one whose state a plain state_dict replaced,
  starts afresh at its next step; the latter with a warning).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from wdlab.decay.driver import after_update, at_gradient, at_update, loss_term, to_optimizer
from wdlab.decay.findings import attach_warnings, known_class
from wdlab.decay.group import ATTACHED, DecayGroup, Keys, attached, decays, step_of
from wdlab.decay.modes import (
    FORMULAS,
    Mode,
    check_pairing,
    check_weight_decay,
    get_mode,
    is_nonneg_finite,
    l2_penalty,
)
from wdlab.decay.schedules import WDSchedule, checked, parse, scale
from wdlab.optimizers import class_name
from wdlab.warn import warn_user

PENALIZED = "_wdlab_penalty_given"  # set on an optimizer whose decay.penalty() was taken


@dataclass(frozen=True)
class Decay:
    """A weight-decay strategy: the mode, its strength and its options.

    ``base_lr`` fixes lr₀ for ``independent`` and ``corrected`` (default: the schedule's peak,
    see the module docstring). ``anchor`` gives the weights that ``to_init`` decays toward
    (default: the weights at :meth:`attach` time). ``schedule`` makes the weight decay a
    function of the optimizer step: a callable ``step -> wd``, a :class:`WDSchedule`
    (:func:`wdlab.decay.schedules.cosine`, ``linear``) or ``"cosine:START:END:STEPS"``; a group
    with its own weight decay (``param_groups(..., weight_decays=...)``) is scaled by
    ``schedule(step) / weight_decay``; a ramp said by its START (a string, ``cosine``,
    ``linear``) takes ``weight_decay`` = START or none (another > 0 is refused).
    """

    mode: str = "none"
    weight_decay: float = 0.0
    base_lr: float | None = None
    anchor: Sequence[Tensor] | None = field(default=None, compare=False, repr=False)
    schedule: Callable[[int], float] | str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        get_mode(self.mode)
        object.__setattr__(self, "weight_decay", check_weight_decay(self.weight_decay))
        if self.base_lr is not None:
            if not (is_nonneg_finite(self.base_lr) and self.base_lr > 0):
                raise ValueError(f"base_lr must be a positive number, got {self.base_lr!r}")
            object.__setattr__(self, "base_lr", float(self.base_lr))
        if isinstance(self.schedule, str):
            object.__setattr__(self, "schedule", parse(self.schedule))
        elif self.schedule is not None and not callable(self.schedule):
            raise ValueError(f"schedule must be a callable step -> wd, got {self.schedule!r}")
        if isinstance(self.schedule, WDSchedule):  # START:END:STEPS said: a mismatch is one
            self._check_start(self.schedule.start)  # (a callable's base may be any: a ramp)

    def _check_start(self, start: float) -> None:
        """A weight_decay > 0 beside a ramp said to start at another one > 0 is refused: the
        ramp gives the weight decay, so the weight_decay said would be ignored (and a group's
        own wd, scaled by ``schedule(step) / weight_decay``, would not start at its own)."""
        wd = self.weight_decay
        # (relative 1e-6: a start read back from float32 is 0.04 within 6e-8 relative)
        if wd > 0 and start > 0 and not math.isclose(start, wd, rel_tol=1e-6):
            raise ValueError(
                f"Decay weight_decay {wd!r} with a schedule that starts at {start!r}: the "
                "schedule gives the weight decay at each step (a group's own wd follows "
                f"schedule(step) / weight_decay), so give weight_decay={start!r}, its start"
            )

    @property
    def formula(self) -> str:
        """The update this mode makes, in one line."""
        return FORMULAS[self.mode]

    @property
    def _mode(self) -> Mode:
        return get_mode(self.mode)

    def describe(self) -> str:
        """The mode, the weight decay and its schedule, in one line."""
        text = f"{self.mode}, wd {self.weight_decay:g}"
        if isinstance(self.schedule, WDSchedule):
            text += f", schedule {self.schedule.describe()}"
        elif self.schedule is not None:
            text += f", schedule {getattr(self.schedule, '__name__', 'callable')}"
        return text

    def wd_at(self, step: int, group: dict | None = None) -> float:
        """The weight decay of a group at optimizer step ``step``."""
        base = (group or {}).get(Keys.OWN_WD, self.weight_decay)
        if self.schedule is None:
            return base
        value = checked(self.schedule, step)
        if group is not None and Keys.OWN_WD in group:
            return scale(value, base, self.weight_decay) if self.weight_decay > 0 else base
        return value

    def penalty(self, optimizer: torch.optim.Optimizer) -> Tensor:
        """The ``l2`` loss term for the decaying groups of ``optimizer`` (0 for other modes).

        Negated for ``maximize=True`` groups: their objective rises, so its penalty falls.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):  # (a model: torch's AttributeError)
            what = type(optimizer).__name__
            raise ValueError(f"penalty takes the torch.optim.Optimizer it decays, got {what}")
        setattr(optimizer, PENALIZED, True)  # seen by an attachment's step (see _pre_hook)
        entries = [
            (self._mode, DecayGroup.of(g, wd=self.wd_at(step_of(g), g)))
            for g in _decaying(optimizer)
        ]
        return loss_term(entries)

    def attach(self, optimizer: torch.optim.Optimizer) -> Attachment:
        """Apply this decay on every ``optimizer.step()`` of any torch optimizer.

        Groups with ``"decay": False`` (see :func:`param_groups`) are left alone. For ``l2``,
        add :meth:`penalty` to the loss yourself: a loss term cannot be hooked. A second
        ``Decay`` on one optimizer is refused (it would decay twice); surprising set-ups warn.
        Returns a handle whose ``remove()`` detaches it.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                f"attach takes a torch.optim.Optimizer, got {type(optimizer).__name__}: build the "
                "optimizer first (torch.optim.SGD(model.parameters(), lr=...)) and attach to it"
            )
        if attached(optimizer) is not None:
            raise ValueError(
                f"this optimizer already has a Decay attached ({attached(optimizer).describe()})"
                "; a second would decay twice — remove the first (handle.remove()) or use one"
            )
        own = None if known_class(optimizer) else "weight_decay" in optimizer.defaults
        check_pairing(self.mode, class_name(optimizer), own)  # (LBFGS: none, ignored silently)
        self._check_schedule(optimizer)
        before = [g.get("weight_decay") for g in optimizer.param_groups]  # remove() restores
        self._init_state(optimizer)
        warn_on_attach(self, optimizer)
        return Attachment(self, optimizer, before)

    def _check_schedule(self, optimizer: torch.optim.Optimizer) -> None:
        """A schedule's first value, and a base for groups with their own weight decay."""
        if self.schedule is None:
            return
        checked(self.schedule, 0)
        own = [i for i, g in enumerate(optimizer.param_groups) if Keys.OWN_WD in g]
        if own and self.weight_decay == 0:
            raise ValueError(
                f"param group {own[0]} has its own weight decay, which a schedule scales by "
                "schedule(step) / weight_decay: give the Decay its base weight_decay > 0"
            )

    def _init_state(self, optimizer: torch.optim.Optimizer, added: bool = False) -> None:
        """The state each decaying group carries, unless a loaded state_dict brought it;
        ``added``: groups added since attach only (their anchor: the weights now)."""
        groups = [g for g in _decaying(optimizer) if not added or Keys.STATE not in g]
        anchors = list(self.anchor) if self.anchor is not None and not added else None
        if anchors is not None:
            _check_anchors(anchors, [p for g in groups for p in g["params"]])
        it = iter(anchors or [])
        key = f"{self.describe()}, base_lr {self.base_lr}"  # which Decay a state is of
        for group in groups:
            fresh = {"mode": self.mode, "step": 0, "lr0_fixed": False, "of": key}
            old = group.get(Keys.STATE, fresh)  # (a state saved before "of": this Decay's)
            if old["mode"] != self.mode or old.get("of", key) != key:  # another Decay's: gone
                _forget(group)
            state = group.setdefault(Keys.STATE, fresh)
            if self.base_lr is not None:  # given: it is lr₀ (a loaded or earlier state's too)
                group[Keys.STATE] = state = {**state, "lr0_fixed": True}
                group[Keys.LR0] = self.base_lr
            if not state["lr0_fixed"]:
                group[Keys.LR0] = _peak_lr(group)
            src = [next(it) for _ in group["params"]] if anchors else group["params"]
            if self._mode.needs_anchor and (anchors or Keys.ANCHOR not in group):
                group[Keys.ANCHOR] = [a.detach().clone() for a in src]
            if self._mode.optimizer_wd:
                group["weight_decay"] = self.wd_at(state["step"], group)


def _forget(group: dict) -> None:  # drop the decay state a group carries (mode, step, lr₀…)
    for key in (Keys.STATE, Keys.LR0, Keys.ANCHOR):
        group.pop(key, None)


def _check_anchors(anchors: list[Any], params: list[Tensor]) -> None:
    """One anchor per decaying parameter, a tensor of its shape (refused at attach, in one
    line, not at the first step)."""
    if len(anchors) != len(params):
        raise ValueError(f"anchor has {len(anchors)} tensors but the optimizer has {len(params)}")
    for i, (a, p) in enumerate(zip(anchors, params, strict=True)):
        if not isinstance(a, Tensor) or a.shape != p.shape:
            got = str(tuple(a.shape)) if isinstance(a, Tensor) else type(a).__name__
            got += " (a state_dict's key: give its tensors, in order)" * isinstance(a, str)
            raise ValueError(f"anchor[{i}] is {got}, but its parameter's shape is {tuple(p.shape)}")


class Attachment:
    """A :class:`Decay` attached to one optimizer through its step hooks.

    They run the decay driver's points (:mod:`wdlab.decay.driver`), closures, GradScaler and
    state_dict handled. ``remove()`` detaches it: the optimizer is plain again (no decay
    state in its groups; ``builtin``'s weight decay 0 in a param_groups group, else as before)."""

    def __init__(
        self, decay: Decay, optimizer: torch.optim.Optimizer, before: list[Any] | None = None
    ) -> None:
        self.decay, self.optimizer, self._before = decay, optimizer, before or []
        self.mode = decay._mode
        self._warned_lr: set[int] = set()
        self._no_penalty_said = False
        self._skipped = False
        self._entries: list[tuple[Mode, DecayGroup]] = []
        self._indices: list[int] = []
        self._held: list[dict] = []  # groups held at lr 0 this step: their step still counts
        self._seen, self._live = _param_ids(optimizer), True
        self._pre = optimizer.register_step_pre_hook(self._pre_hook)
        self._post = optimizer.register_step_post_hook(self._post_hook)
        setattr(optimizer, ATTACHED, decay)

    def __repr__(self) -> str:
        """``<Attachment Decay(...) on AdamW (2 of 3 groups decay)>``, or ``removed``."""
        n = len(_decaying(self.optimizer))
        where = (
            f"{n} of {len(self.optimizer.param_groups)} groups decay" if self._live else "removed"
        )
        return f"<Attachment {self.decay!r} on {type(self.optimizer).__name__} ({where})>"

    def remove(self, keep_state: bool = False) -> None:
        """Detach the decay from the optimizer (its groups' weight decays as before attach);
        ``keep_state``: its state stays in the groups, so that a checkpoint saved after (a
        Lightning fit's end) resumes it exactly when the same decay is attached again. Once
        removed, a handle does nothing (a later attach of the same Decay keeps its guard)."""
        if not self._live:
            return
        self._live = False
        self._pre.remove()
        self._post.remove()
        for group, wd in zip(self.optimizer.param_groups, self._before, strict=False):
            if not keep_state:
                _forget(group)  # plain again: a Decay attached later starts afresh; builtin's:
            if self.mode.optimizer_wd and decays(group) and wd is not None:  # param_groups' 0
                group["weight_decay"] = 0.0 if Keys.DECAY in group else wd
        if attached(self.optimizer) is self.decay:
            delattr(self.optimizer, ATTACHED)

    # -- the step ------------------------------------------------------------------------------

    def _pre_hook(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> Any:
        self._restore_state(opt)
        self._skipped = _found_inf(opt)
        if self._skipped:  # a fused optimizer under GradScaler skips this step: so do we
            return None
        self._start_step(opt)
        # torch passes step's own arguments: (optimizer, closure?) and keywords
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            self._say_no_penalty(opt)
            at_gradient(self._entries)
            self._update_point()
            return None
        wrapped = self._wrap(closure, opt)
        if "closure" in kwargs:
            return args, {**kwargs, "closure": wrapped}
        return (args[0], wrapped, *args[2:]), kwargs

    def _say_no_penalty(self, opt: torch.optim.Optimizer) -> None:
        """``l2`` decays through the loss: a step before any ``decay.penalty(opt)`` decayed
        nothing (attach alone applies no term); said once."""
        if self._no_penalty_said or not self.mode.penalty or getattr(opt, PENALIZED, False):
            return
        if self.decay.weight_decay > 0 or self.decay.schedule is not None:
            self._no_penalty_said = True
            warn_user(
                f"Decay({self.decay.mode!r}) decays through the loss, and no decay.penalty(opt) "
                "was added to it: this step decays nothing (loss = loss + decay.penalty(opt) "
                "before backward())"
            )

    def _start_step(self, opt: torch.optim.Optimizer) -> None:
        """This step's decay groups: lr₀ fixed at the first step (schedulers exist by now), the
        weight decay of the step (handed to the optimizer for ``builtin``)."""
        scale = getattr(opt, "grad_scale", None)  # fused + GradScaler: still-scaled gradients
        scale = None if scale is None else float(scale)
        self._entries, self._indices, self._held = [], [], []
        for i, group in enumerate(opt.param_groups):
            if not decays(group):
                continue
            state = group[Keys.STATE]
            if not state["lr0_fixed"]:  # a scheduler's peak, else the lr at attach
                group[Keys.LR0] = _peak_lr(group, group.get(Keys.LR0))
                fixed = group[Keys.LR0] > 0 or not self.mode.needs_base_lr  # (0: read again)
                group[Keys.STATE] = state = {**state, "lr0_fixed": fixed}
            if self.mode.needs_base_lr and not group[Keys.LR0] > 0 and group["lr"] == 0:
                self._held.append(group)  # frozen by lr 0: decays nothing, its step counts
                continue
            if self.mode.needs_base_lr and not group[Keys.LR0] > 0:  # it divides by lr₀
                raise ValueError(
                    f"param group {i}: mode '{self.mode.name}' measures the lr against lr₀, "
                    f"which is {group[Keys.LR0]:g} here (no scheduler's peak, and the lr was 0 "
                    "at attach?): pass Decay(..., base_lr=PEAK_LR), or set this group's "
                    "'initial_lr' to its peak lr"
                )
            wd = self.decay.wd_at(state["step"], group)
            self._entries.append((self.mode, DecayGroup.of(group, wd=wd, grad_scale=scale)))
            self._indices.append(i)
        to_optimizer(self._entries)  # builtin: the optimizer's own weight_decay, this step's

    def _update_point(self) -> None:
        for i, (_, g) in zip(self._indices, self._entries, strict=True):
            self._warn_lr_multiplier(i, g)
        at_update(self._entries)

    def _wrap(self, closure: Callable[[], Any], opt: torch.optim.Optimizer) -> Callable[[], Any]:
        """The closure, then gradient-point decay each time, update-point decay once (and,
        for ``l2``, the check that the closure added ``decay.penalty(opt)`` to its loss).

        A gradient-point mode also adds its loss term ((wd/2)·‖w‖², or ‖w − w₀‖² for
        ``to_init``) to the loss the closure returns, so that an optimizer that reads the loss
        (LBFGS's line search) sees the objective whose gradient it is given.
        """
        first = [True]

        def wrapped() -> Any:
            loss = closure()
            at_gradient(self._entries)
            if self.mode.hook == "grad" and isinstance(loss, (Tensor, float, int)):
                loss = loss + self._objective_term()
            if first[0]:
                first[0] = False
                self._say_no_penalty(opt)  # after the closure: it may add the penalty
                self._update_point()
            return loss

        return wrapped

    def _objective_term(self) -> Tensor:
        """The loss term whose gradient the gradient-point mode adds (negated under maximize)."""
        total = torch.zeros(())
        with torch.no_grad():
            for _, g in self._entries:
                pairs = zip(g.params, g.anchor or g.params, strict=True)
                diffs = [
                    p - a if self.mode.needs_anchor else p for p, a in pairs if p.grad is not None
                ]
                term = l2_penalty(diffs, g.wd_now())
                total = total + (-term if g.maximize else term)
        return total

    def _post_hook(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if self._skipped:
            self._skipped = False
            return
        after_update(self._entries)
        for _, g in self._entries:
            # a new dict, not a change in place: a state_dict() taken earlier keeps its step
            g.group[Keys.STATE] = {**g.group[Keys.STATE], "step": g.step}
        for group in self._held:  # a wd schedule runs on the optimizer's steps, as lr's do
            group[Keys.STATE] = {**group[Keys.STATE], "step": group[Keys.STATE]["step"] + 1}
        self._entries, self._held = [], []

    def _restore_state(self, opt: torch.optim.Optimizer) -> None:
        """Groups added since attach, or whose state a loaded state_dict without it removed,
        start afresh (with a warning for the latter: a to_init anchor is the weights now)."""
        lost = [i for i, g in enumerate(opt.param_groups) if decays(g) and Keys.STATE not in g]
        if not lost:
            return
        gone = [i for i in lost if any(id(p) in self._seen for p in opt.param_groups[i]["params"])]
        if gone:
            warn_user(
                f"param group(s) {', '.join(map(str, gone))} lost the state of Decay("
                f"'{self.mode.name}') (a state_dict saved without it was loaded): it starts "
                "afresh from the current weights and step 0; load a state_dict saved with the "
                "decay attached to resume it"
            )
        self._before += [g.get("weight_decay") for g in opt.param_groups[len(self._before) :]]
        self.decay._init_state(opt, added=True)
        self._seen = _param_ids(opt)
        for msg in attach_warnings(self.decay, opt, [i for i in lost if i not in gone]):
            warn_user(msg)  # a group added since: what attach says (its own weight_decay…)

    def _warn_lr_multiplier(self, index: int, g: DecayGroup) -> None:
        if not self.mode.needs_base_lr or index in self._warned_lr:
            return
        ratio = g.lr / g.lr0
        if ratio > 1 + 1e-9:
            self._warned_lr.add(index)
            warn_user(
                f"param group {index}: mode '{self.mode.name}' measures lr against lr₀ = "
                f"{g.lr0:g}, but the lr is now {g.lr:g} (multiplier "
                f"{ratio:.3g} > 1): pass Decay(..., base_lr=PEAK_LR) with the schedule's peak"
            )


def _decaying(optimizer: torch.optim.Optimizer) -> list[dict]:
    return [g for g in optimizer.param_groups if decays(g)]


def _param_ids(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for g in _decaying(optimizer) for p in g["params"]}


def _peak_lr(group: dict, at_attach: float | None = None) -> float:
    """lr₀: the schedule's peak (OneCycleLR's ``max_lr``), else its base lr, else the lr at
    attach (``at_attach``), else the lr now."""
    peak = group.get("max_lr") or group.get("initial_lr")
    return peak or (at_attach if at_attach is not None else group["lr"])  # 0: refused after


def _found_inf(opt: torch.optim.Optimizer) -> bool:
    """Whether GradScaler told this (fused) optimizer to skip its step."""
    found = getattr(opt, "found_inf", None)
    return found is not None and bool(found.item() > 0)


def warn_on_attach(decay: Decay, optimizer: torch.optim.Optimizer) -> None:
    """Emit :func:`attach_warnings` for a live optimizer."""
    for msg in attach_warnings(decay, optimizer):
        warn_user(msg)
