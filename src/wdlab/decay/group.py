"""A decay group: the tensors one decay acts on in one torch parameter group, and its state.

The decay driver (:mod:`wdlab.decay.driver`) and every mode's point functions
(:mod:`wdlab.decay.modes`) work on :class:`DecayGroup`: typed fields, not dict keys. A user's
optimizer keeps the decay's lasting state in its own param groups (so it round-trips through
``optimizer.state_dict()``), under the keys of :class:`Keys`, the one place they are spelled;
:func:`state_of` and :func:`step_of` read them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

WD = float | Tensor  # one value for the whole group, or one per configuration row


class Keys:
    """The torch param-group keys wdlab reads and writes (one spelling each)."""

    STATE = "wdlab"  # the decay's state: {"mode", "step", "lr0_fixed"}
    LR0 = "lr0"  # the peak lr that independent and corrected measure the lr against
    ANCHOR = "anchor"  # to_init's w₀, one tensor per parameter
    OWN_WD = "wdlab_wd"  # a group's own weight decay (param_groups(..., weight_decays=...))
    NORMALIZED = "normalized"  # AdamC's normalized-layer flag: one, or one per parameter
    DECAY = "decay"  # False: the group does not decay


ATTACHED = "_wdlab_decay"  # the optimizer attribute holding its attached Decay


def attached(optimizer: object) -> Any:
    """The :class:`~wdlab.decay.Decay` attached to ``optimizer``, or ``None``."""
    return getattr(optimizer, ATTACHED, None)


def state_of(group: dict) -> dict[str, Any]:
    """The decay state a torch param group carries ({} when none)."""
    return group.get(Keys.STATE) or {}


def step_of(group: dict) -> int:
    """The optimizer steps the decay has taken in a torch param group."""
    return state_of(group).get("step", 0)


def decays(group: dict) -> bool:
    """Whether a torch param group decays (groups built with ``"decay": False`` do not)."""
    return group.get(Keys.DECAY, True)


def row_view(values: Tensor, p: Tensor) -> Tensor:
    """One value per row of ``p`` (its first dimension), shaped to broadcast over the row."""
    return values.view(-1, *([1] * (p.dim() - 1))).to(p.dtype)


@dataclass(eq=False)
class DecayGroup:
    """The tensors one decay acts on and what it needs to act on them.

    ``group`` is the torch param group the tensors are stepped in: its ``lr`` and ``maximize``
    are read live (a scheduler changes the lr). ``params``: the tensors that decay (the group's,
    or some of them). ``wd``: a float, one value per configuration row (a (rows,) tensor), or a
    callable ``step -> wd`` (a schedule). ``lr0``: the peak lr (``independent``, ``corrected``).
    ``anchor``: ``to_init``'s w₀ per tensor. ``normalized``: AdamC's flag, one for all or one
    per tensor. ``by_gradient``: for ``l2``, the tensors whose loss term is applied as its
    gradient (a hand-written backward differentiates no loss term); ``loss_params``: where the
    loss term must be taken on other tensors than ``params`` (the trainer's autograd views of
    its stacked rows), a callable giving them. ``step``: optimizer steps taken.
    ``grad_scale``: a fused optimizer's pending GradScaler scale; ``prev``: the weights before
    the update (``cautious``).
    """

    group: dict
    params: Sequence[Tensor]
    wd: WD | Callable[[int], WD] = 0.0
    lr0: float | None = None
    anchor: Sequence[Tensor] | None = None
    normalized: bool | Sequence[bool] = False
    by_gradient: Sequence[Tensor] = ()
    loss_params: Callable[[], Sequence[Tensor]] | None = None
    step: int = 0
    grad_scale: float | None = None
    prev: list[Tensor | None] | None = field(default=None, repr=False)
    _shaped: dict[int, tuple] = field(default_factory=dict, repr=False)

    @property
    def lr(self) -> float:
        """The group's lr now."""
        return self.group["lr"]

    @property
    def maximize(self) -> bool:
        """Whether the group ascends its objective (torch's ``maximize=True``)."""
        return bool(self.group.get("maximize", False))

    def per_row(self, value: WD, params: Sequence[Tensor]) -> list[WD]:
        """``value`` for each of ``params``: a float as it is; one value per row shaped to
        broadcast over the tensor's row, kept while ``value`` is the same, unchanged tensor
        (a fixed per-row weight decay is shaped once, not every step)."""
        if not isinstance(value, Tensor):
            return [value] * len(params)
        hit = self._shaped.get(id(params))
        if hit is None or hit[0] is not value or hit[1] != value._version or hit[2] is not params:
            hit = (value, value._version, params, [row_view(value, p) for p in params])
            self._shaped[id(params)] = hit
        return hit[3]

    def wd_now(self) -> WD:
        """The weight decay at this step."""
        return self.wd(self.step) if callable(self.wd) else self.wd

    def peak_lr(self, mode: str) -> float:
        """lr₀, which ``independent`` and ``corrected`` measure the current lr against."""
        lr0 = self.lr0 or self.group.get("initial_lr")
        if not lr0:
            raise ValueError(f"mode {mode!r} needs the base lr (lr0); none is known")
        return lr0

    def flags(self) -> list[bool]:
        """The normalized flag of each tensor."""
        flags = self.normalized
        if isinstance(flags, bool):
            return [flags] * len(self.params)
        return list(flags)

    @classmethod
    def of(cls, group: dict, **kw: Any) -> DecayGroup:
        """The decay group of a whole torch param group, its state read from its keys."""
        return cls(
            group,
            group["params"],
            lr0=group.get(Keys.LR0),
            anchor=group.get(Keys.ANCHOR),
            normalized=group.get(Keys.NORMALIZED, False),
            step=step_of(group),
            **kw,
        )
