"""The optimizer registry: what each ``torch.optim`` optimizer is to wdlab.

One :class:`OptimizerSpec` per optimizer says what its own ``weight_decay=`` means in wdlab's
mode names, how the batched engine runs it (``fused`` / ``foreach`` kernels), and whether its
update is linear in the gradient (the exact Gram fast path needs that). Adding an optimizer is
one entry here.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from wdlab.errors import first_line

_RENAMED = "OptimizerSpec.{} is now OptimizerSpec.{}; the old name goes in the next release"


@dataclass(frozen=True)
class OptimizerSpec:
    """One torch optimizer as wdlab knows it.

    ``own_wd_mode`` is what its own ``weight_decay=`` does, as a mode (``coupled`` or
    ``decoupled``; ``None`` when it has none): what mode ``builtin`` means with it. ``fused``:
    the engine runs torch's one-kernel-per-group implementation (the same update, ~2× less
    per-step overhead on CPU). ``foreach``: one C++ call per update op
    for a group's tensors. ``linear``: the update is linear in the gradient and the weights
    (plain, momentum and nesterov SGD), so the exact Gram fast path applies. ``plain_step``:
    a coupled decay term is stepped as the gradient is, with one step size for every coordinate
    (SGD, ASGD), so it has one timescale; ``own_shrink``: (option, default) by which the
    optimizer shrinks the weights itself each step, w·(1 − η·option) (ASGD's ``lambd``), which
    adds to that timescale's rate; ``adam_family``:
    the update divides by a per-coordinate gradient scale, ``divides_by`` (√v for Adam, AdamW,
    NAdam, RAdam; Adamax's running max of |g|), so a coupled (L2) decay term is rescaled per
    coordinate and barely decays weights with large gradients.
    ``equilibrium``: which rotational-equilibrium formula of Kosson et al. applies
    (:data:`wdlab.diagnostics.EQUILIBRIA`: ``adaptive`` for Adam/AdamW, ``momentum`` for SGD),
    ``None`` for none. ``state_size``: optimizer-state values kept per parameter (memory
    estimates).
    """

    name: str
    cls_name: str
    own_wd_mode: str | None = "coupled"
    fused: bool = False
    foreach: bool = True
    linear: bool = False
    plain_step: bool = False
    own_shrink: tuple[str, float] | None = None
    adam_family: bool = False
    divides_by: str = "√v"
    equilibrium: str | None = None
    state_size: int = 2

    @property
    def has_weight_decay(self) -> bool:
        """Whether the optimizer has a ``weight_decay`` of its own (mode ``builtin`` needs it)."""
        return self.own_wd_mode is not None

    @property
    def cls(self) -> type[torch.optim.Optimizer]:
        """The ``torch.optim`` class."""
        return getattr(torch.optim, self.cls_name)

    def own_wd_mode_with(self, options: dict[str, Any] | None = None) -> str | None:
        """What ``weight_decay=`` means with these options (Adam's ``decoupled_weight_decay``)."""
        if options and options.get("decoupled_weight_decay"):
            return "decoupled"
        return self.own_wd_mode

    @property
    def builtin(self) -> str | None:
        """Deprecated: :attr:`own_wd_mode` (``builtin`` is a mode's name); goes in the next
        release."""
        warnings.warn(_RENAMED.format("builtin", "own_wd_mode"), DeprecationWarning, 2)
        return self.own_wd_mode

    def builtin_meaning(self, options: dict[str, Any] | None = None) -> str | None:
        """Deprecated: :meth:`own_wd_mode_with`; goes in the next release."""
        warnings.warn(_RENAMED.format("builtin_meaning", "own_wd_mode_with"), DeprecationWarning, 2)
        return self.own_wd_mode_with(options)

    def implementation(self, options: dict[str, Any]) -> dict[str, bool]:
        """``fused``/``foreach`` keywords for the engine, unless the user's options set one."""
        if "fused" in options or "foreach" in options:
            return {}
        if self.fused:
            return {"fused": True}
        return {"foreach": True} if self.foreach else {}


# SGD keeps torch's default implementation: its fused kernel rounds the built-in weight decay
# differently from wdlab's coupled mode (the demo checks their bits), and for a handful of
# tensors its plain loop is the fastest.
_SPECS = [
    OptimizerSpec(
        "sgd",
        "SGD",
        foreach=False,
        linear=True,
        plain_step=True,
        equilibrium="momentum",
        state_size=1,
    ),
    OptimizerSpec("adam", "Adam", fused=True, adam_family=True, equilibrium="adaptive"),
    OptimizerSpec(
        "adamw",
        "AdamW",
        own_wd_mode="decoupled",
        fused=True,
        adam_family=True,
        equilibrium="adaptive",
    ),
    OptimizerSpec("rmsprop", "RMSprop", state_size=3),
    OptimizerSpec("adagrad", "Adagrad", state_size=1),
    OptimizerSpec("adamax", "Adamax", adam_family=True, divides_by="the running max of |g|"),
    OptimizerSpec("nadam", "NAdam", adam_family=True),
    OptimizerSpec("radam", "RAdam", adam_family=True),
    # steps by η_t = lr/(1 + lambd·lr·t)^alpha, and shrinks w by 1 − lambd·η_t itself
    OptimizerSpec("asgd", "ASGD", plain_step=True, own_shrink=("lambd", 1e-4)),
    OptimizerSpec("adadelta", "Adadelta"),
    OptimizerSpec("rprop", "Rprop", own_wd_mode=None),
]
OPTIMIZERS: dict[str, OptimizerSpec] = {s.name: s for s in _SPECS}
_BY_CLASS = {s.cls_name: s for s in _SPECS}

#: Optimizers whose update of one coordinate depends on others: stacked, they would mix
#: configurations, so the engine refuses them (``Decay.attach`` still works with them).
NOT_ELEMENTWISE = frozenset({"LBFGS", "SparseAdam", "Adafactor", "Muon"})


def optimizer_spec(name: str) -> OptimizerSpec:
    """The spec for a short name (``sgd``, ``adamw``…) or a class name (``AdamW``)."""
    if not isinstance(name, str):
        raise ValueError(f"optimizer must be a name, got {name!r}")
    spec = OPTIMIZERS.get(name.lower()) or _BY_CLASS.get(name)
    if spec is None:
        if name in NOT_ELEMENTWISE:
            raise ValueError(f"optimizer {name} is not element-wise and cannot be batched")
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return spec


def known_spec(name: str) -> OptimizerSpec | None:
    """:func:`optimizer_spec`, or None for a class wdlab does not know (a user's own)."""
    try:
        return optimizer_spec(name)
    except ValueError:
        return None


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The torch optimizer class for a short name or a class name."""
    return optimizer_spec(name).cls


def class_name(optimizer: torch.optim.Optimizer | type | str) -> str:
    """The class name of a torch optimizer (instance, class or name)."""
    if isinstance(optimizer, str):
        spec = OPTIMIZERS.get(optimizer.lower())
        return spec.cls_name if spec else optimizer
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    return cls.__name__


def _short(v: Any, limit: int = 60) -> str:
    """``repr(v)`` cut to ``limit`` characters, for messages."""
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _option_type(name: str, value: Any, default: Any, key: str) -> Any:
    """One optimizer keyword's value, checked against the type of torch's default; lists
    become tuples (``betas = [0.9, 0.99]``)."""
    number = lambda x: (  # noqa: E731
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    )
    if isinstance(default, bool) or (default is None and name in ("foreach", "fused")):
        if not isinstance(value, bool):
            raise ValueError(f"{key}.{name}: expected true or false, got {_short(value)}")
        return value
    if isinstance(default, tuple):
        if not (
            isinstance(value, (list, tuple))
            and len(value) == len(default)
            and all(number(x) for x in value)
        ):
            raise ValueError(
                f"{key}.{name}: expected {len(default)} numbers like {list(default)}, "
                f"got {_short(value)}"
            )
        return tuple(value)
    if number(default) and not number(value):
        raise ValueError(
            f"{key}.{name}: expected a number (default {default}), got {_short(value)}"
        )
    return value


def check_optimizer_options(optimizer: str, options: Mapping[str, Any], lr: float) -> dict:
    """``options`` checked for ``optimizer``: every key one of its keywords (a misspelt key is
    refused, naming the valid ones), every value of the type its default has, and torch's own
    checks passed on one step of a tiny tensor. Returns them normalised."""
    cls = optimizer_spec(optimizer).cls
    params = inspect.signature(cls.__init__).parameters
    valid = [n for n in params if n not in ("self", "params", "lr", "weight_decay")]
    out = {}
    for name, value in options.items():
        if name in ("lr", "weight_decay", "params"):
            where = {"lr": "train.lr", "weight_decay": "decay.weight_decay"}.get(name, "wdlab")
            raise ValueError(f"train.options: {name} is set by {where}, not in options")
        if name not in valid:
            raise ValueError(
                f"train.options: {cls.__name__} has no option {name!r}; valid: {', '.join(valid)}"
            )
        out[name] = _option_type(name, value, params[name].default, "train.options")
    try:  # torch's own value checks, and those only a step makes
        p = torch.zeros(2, requires_grad=True)
        opt = cls([p], lr=lr, **out)
        p.grad = torch.ones(2)
        opt.step()
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:  # torch asserts some
        why = first_line(exc)
        raise ValueError(f"train.options: {cls.__name__} refuses {out}: {why}") from None
    return out
