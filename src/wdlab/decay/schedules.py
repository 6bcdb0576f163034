"""Weight-decay schedules: the weight decay as a function of the optimizer step.

``cosine(start, end, steps)`` and ``linear(start, end, steps)`` ramp from ``start`` to ``end``
over ``steps`` steps and stay at ``end`` after (DINO ramps AdamW's weight decay from 0.04 to
0.4 with a cosine). A schedule is written ``"cosine:START:END:STEPS"`` on the command line.
Any callable ``step -> wd`` works too; its values are checked as they are used.

A group with a weight decay of its own follows the schedule's shape: at step ``t`` its weight
decay is ``schedule(t)·own/base`` (:func:`scale`), ``base`` being the weight decay the schedule
is measured against: :class:`~wdlab.decay.Decay`'s ``weight_decay`` for a user's optimizer, the
schedule's start in a sweep, where every row is such a group (:func:`scaled`: each row's weight
decay, and each tensor group's own, is where the schedule starts and follows its shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from wdlab.decay.group import WD
from wdlab.decay.modes import is_nonneg_finite


def _cosine(t: float) -> float:
    return 0.5 * (1 - math.cos(math.pi * t))


SHAPES: dict[str, Callable[[float], float]] = {"cosine": _cosine, "linear": lambda t: t}


@dataclass(frozen=True)
class WDSchedule:
    """A ramp of the weight decay from ``start`` to ``end`` over ``steps`` optimizer steps."""

    shape: str
    start: float
    end: float
    steps: int

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown schedule {self.shape!r}; valid: {', '.join(SHAPES)}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if not is_nonneg_finite(v):
                raise ValueError(f"schedule {name} must be a finite number >= 0, got {v!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"schedule steps must be a positive integer, got {self.steps!r}")

    def __call__(self, step: int) -> float:
        """The weight decay at optimizer step ``step`` (0-based)."""
        t = min(max(step, 0) / self.steps, 1.0)
        return self.start + (self.end - self.start) * SHAPES[self.shape](t)

    def peak_step(self) -> int:
        """The step where the weight decay is highest: the start, or the end of the ramp."""
        return 0 if self.start >= self.end else self.steps

    def describe(self) -> str:
        """E.g. ``cosine 0.04 → 0.4 over 1000 steps``."""
        return f"{self.shape} {self.start:g} → {self.end:g} over {self.steps} steps"


def cosine(start: float, end: float, steps: int) -> WDSchedule:
    """A cosine ramp from ``start`` to ``end`` over ``steps`` steps (DINO's weight decay)."""
    return WDSchedule("cosine", start, end, steps)


def linear(start: float, end: float, steps: int) -> WDSchedule:
    """A linear ramp from ``start`` to ``end`` over ``steps`` steps."""
    return WDSchedule("linear", start, end, steps)


def parse(text: str) -> WDSchedule:
    """``"cosine:START:END:STEPS"`` or ``"linear:START:END:STEPS"`` as a schedule."""
    parts = text.split(":") if isinstance(text, str) else []
    try:
        shape, start, end, steps = parts
        return WDSchedule(shape, float(start), float(end), int(steps))
    except ValueError as exc:
        if len(parts) == 4 and parts[0] in SHAPES and "must be" in str(exc):
            raise
        raise ValueError(
            f"weight-decay schedule {text!r}: expected cosine|linear:START:END:STEPS, "
            "e.g. cosine:0.04:0.4:1000"
        ) from None


def checked(schedule: Callable[[int], float], step: int) -> float:
    """``schedule(step)``, refused in one line unless a finite number ≥ 0."""
    value = schedule(step)
    if not is_nonneg_finite(value):
        raise ValueError(
            f"weight-decay schedule returned {value!r} at step {step}; it must be a finite "
            "number >= 0"
        )
    return float(value)


def scale(value: float, own: WD, base: float) -> WD:
    """A schedule's ``value`` for a group whose own weight decay is ``own`` (a float, or one
    per row), the schedule measured against ``base``: ``value·own/base``, in that order (the
    same rounding for a row alone and in a batch)."""
    return value * own / base


def scaled(schedule: WDSchedule, own: WD) -> Callable[[int], WD]:
    """The weight decay by step of a group (or row) whose own weight decay is ``own``, under
    ``schedule`` measured against its start: ``own`` at step 0, then the schedule's shape.
    Refused in one line where the schedule starts at 0 (no shape to scale)."""
    if not schedule.start > 0:
        raise ValueError(
            f"weight-decay schedule {schedule.describe()}: each weight decay follows the "
            "schedule's shape from its start, so START must be > 0"
        )
    return lambda step: scale(schedule(step), own, schedule.start)
