"""Learning-rate schedules by short name: ``constant``, ``cosine``, ``step:SIZE:GAMMA``.

Adding a schedule is one entry in :data:`SCHEDULES`: a name, its argument syntax, and a
function ``(optimizer, epochs, *args) -> LRScheduler | None``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

LRScheduler = torch.optim.lr_scheduler.LRScheduler


@dataclass(frozen=True)
class Schedule:
    """One schedule: ``name[:ARG...]``; ``args`` converts the arguments (raising on bad ones)."""

    name: str
    syntax: str
    make: Callable[..., LRScheduler | None]
    args: Callable[[list[str]], tuple] = lambda parts: ()


def _step_args(parts: list[str]) -> tuple[int, float]:
    size, gamma = int(parts[0]), float(parts[1])
    if len(parts) != 2 or size < 1 or not gamma > 0:
        raise ValueError("step needs SIZE >= 1 and GAMMA > 0")
    return size, gamma


SCHEDULES: dict[str, Schedule] = {
    s.name: s
    for s in (
        Schedule("constant", "constant", lambda opt, epochs: None),
        Schedule(
            "cosine",
            "cosine",
            lambda opt, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=max(1, epochs)
            ),
        ),
        Schedule(
            "step",
            "step:SIZE:GAMMA",
            lambda opt, epochs, size, gamma: torch.optim.lr_scheduler.StepLR(opt, size, gamma),
            _step_args,
        ),
    )
}


def parse_schedule(text: str | None) -> tuple[Schedule, tuple]:
    """The schedule a spec names and its converted arguments; ``ValueError`` if invalid."""
    name, *parts = (text or "constant").split(":")
    schedule = SCHEDULES.get(name)
    try:
        if schedule is None:
            raise ValueError
        args = schedule.args(parts)
        if len(args) != len(parts):  # e.g. "cosine:3"
            raise ValueError
        return schedule, args
    except (ValueError, IndexError):
        valid = ", ".join(s.syntax for s in SCHEDULES.values())
        raise ValueError(f"unknown lr schedule {text!r}; valid: {valid}") from None


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str | None, epochs: int
) -> LRScheduler | None:
    """An lr scheduler from a short spec: ``constant``, ``cosine``, ``step:SIZE:GAMMA``."""
    sched, args = parse_schedule(schedule)
    return sched.make(optimizer, epochs, *args)
