"""The optimizer registry: what each ``torch.optim`` optimizer is to wdlab.

One :class:`OptimizerSpec` per optimizer says what its own ``weight_decay=`` means in wdlab's
mode names, how the batched engine runs it (``fused`` / ``foreach`` kernels), and whether its
update is linear in the gradient (the exact Gram fast path needs that). Adding an optimizer is
one entry here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

_RENAMED = "OptimizerSpec.{} is now OptimizerSpec.{}; the old name goes in the next release"


@dataclass(frozen=True)
class OptimizerSpec:
    """One torch optimizer as wdlab knows it.

    ``own_wd_mode`` is what its own ``weight_decay=`` does, as a mode (``coupled`` or
    ``decoupled``; ``None`` when it has none): what mode ``builtin`` means with it. ``fused``:
    the engine runs torch's one-kernel-per-group implementation (the same update, ~2× less
    per-step overhead on CPU). ``foreach``: one C++ call per update op
    for a group's tensors. ``linear``: the update is linear in the gradient and the weights
    (plain, momentum and nesterov SGD), so the exact Gram fast path applies. ``adam_family``:
    the update divides by √v̂ (Adam, AdamW, NAdam, RAdam, Adamax), so a coupled (L2) decay term
    is rescaled per coordinate and barely decays weights with large gradients.
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
    adam_family: bool = False
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
    OptimizerSpec("sgd", "SGD", foreach=False, linear=True, equilibrium="momentum", state_size=1),
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
    OptimizerSpec("adamax", "Adamax", adam_family=True),
    OptimizerSpec("nadam", "NAdam", adam_family=True),
    OptimizerSpec("radam", "RAdam", adam_family=True),
    OptimizerSpec("asgd", "ASGD"),
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
