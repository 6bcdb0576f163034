"""Learning-rate schedules by short name, per epoch or per optimizer step.

Per epoch (the scheduler steps after each epoch): ``constant``, ``cosine`` (to 0 over the
epochs), ``step:SIZE:GAMMA``. Per step, with a linear warm-up (the scheduler steps after each
optimizer step, over the whole training's steps T; W warm-up steps, or a fraction of T written
``0.05``): ``warmup-constant:W``, ``warmup-linear:W`` (then linearly to 0 at T) and
``warmup-cosine:W`` (then half a cosine to 0 at T), the factors of the Hugging Face schedules
(``get_constant_schedule_with_warmup``, ``get_linear_schedule_with_warmup``,
``get_cosine_schedule_with_warmup``): step s < W runs at lr·s/W (the first step at 0).

Adding a schedule is one entry in :data:`SCHEDULES`: a name, its argument syntax, a function
``(optimizer, length, *args) -> LRScheduler | None`` (length: epochs, or total steps where
``per_step``), and how its arguments are read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from wdlab.warn import warn_user

LRScheduler = torch.optim.lr_scheduler.LRScheduler


@dataclass(frozen=True)
class Schedule:
    """One schedule: ``name[:ARG...]``; ``args`` converts the arguments (raising on bad ones);
    ``per_step``: it steps after every optimizer step (else after every epoch)."""

    name: str
    syntax: str
    make: Callable[..., LRScheduler | None]
    args: Callable[[list[str]], tuple] = lambda parts: ()
    per_step: bool = False
    # log10 of the largest lr factor over ``epochs`` epochs, given the arguments (0: it never
    # rises above the lr given)
    log_peak: Callable[..., float] = lambda epochs, *args: 0.0


def _step_args(parts: list[str]) -> tuple[int, float]:
    try:
        size, gamma = int(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        size, gamma = 0, math.nan
    if len(parts) != 2 or size < 1 or not gamma > 0:
        raise ValueError("step:SIZE:GAMMA takes an integer SIZE >= 1 and a GAMMA > 0")
    return size, gamma


#: What the W of a warm-up schedule may be (said where one is refused).
WARMUP_W = (
    "W is the warm-up: a number of steps (an integer >= 0, e.g. 500) or a fraction "
    "0 < W < 1 of the training's steps (e.g. 0.1)"
)


def _warmup_args(parts: list[str]) -> tuple[float]:
    """W: an integer number of steps >= 0, or a fraction of the total steps in (0, 1)."""
    if len(parts) != 1:
        raise ValueError(f"a warm-up schedule takes one argument W; {WARMUP_W}")
    text = parts[0].strip()
    if text.isdigit():
        return (float(int(text)),)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value == 0:  # "0.0": no warm-up, as "0" (1.0 stays refused: one step, or all of them?)
        return (0.0,)
    if not 0 < value < 1:
        raise ValueError(f"{WARMUP_W}; got {text!r}")
    return (value,)


def warmup_steps(warmup: float, total: int) -> int:
    """W in steps: ``warmup`` itself, or that fraction of ``total`` rounded up, as the Hugging
    Face Trainer's ``warmup_ratio`` is (``math.ceil(total * ratio)``)."""
    return int(warmup) if warmup >= 1 or warmup == 0 else math.ceil(total * warmup)


def warmup_factor(kind: str, step: int, warmup: int, total: int) -> float:
    """The lr factor of optimizer step ``step`` (0-based) under a warm-up schedule."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))  # a step past the total
    if kind == "linear":  # (an IterableDataset's workers may give a batch or two more)
        return max(0.0, (total - step) / max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _warmup(kind: str) -> Callable[..., LRScheduler]:
    def make(opt: torch.optim.Optimizer, total: int, warmup: float) -> LRScheduler:
        w = warmup_steps(warmup, total)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_factor(kind, s, w, total))

    return make


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
            # StepLR: lr·GAMMA^(epoch // SIZE), the last epoch's largest where GAMMA > 1
            log_peak=lambda epochs, size, gamma: max(0, (epochs - 1) // size * math.log10(gamma)),
        ),
        *(
            Schedule(f"warmup-{k}", f"warmup-{k}:W", _warmup(k), _warmup_args, per_step=True)
            for k in ("constant", "linear", "cosine")
        ),
    )
}


def parse_schedule(text: str | None) -> tuple[Schedule, tuple]:
    """The schedule a spec names and its converted arguments; ``ValueError`` if invalid, in
    one line: ``lr schedule 'TEXT' is not allowed[: what its argument may be]; valid: …``."""
    name, *parts = (text or "constant").split(":")
    schedule = SCHEDULES.get(name)
    reason = ""
    if schedule is not None:
        try:
            args = schedule.args(parts)
        except ValueError as exc:
            reason = str(exc)
        else:
            if len(args) == len(parts):
                return schedule, args
            reason = f"{name} takes no argument"  # e.g. "cosine:3"
    valid = ", ".join(s.syntax for s in SCHEDULES.values())
    because = f": {reason}" if reason else ""
    raise ValueError(f"lr schedule {text!r} is not allowed{because}; valid: {valid}")


def check_schedule(schedule: str | None, total_steps: int | None, warn: bool = True) -> None:
    """A per-step schedule needs the training's steps (``ValueError`` where a stream cannot
    tell them); a warm-up as long as the training is one warning (its lr never peaks; not
    given where ``warn`` is False)."""
    sched, args = parse_schedule(schedule)
    if not sched.per_step:
        return
    if total_steps is None:
        raise ValueError(
            f"lr schedule {schedule!r} runs per step and needs the number of steps, which this "
            "training stream cannot tell (it has no len()): give its Dataset a __len__ (its "
            "DataLoader then has one), or use a per-epoch schedule (cosine, step:SIZE:GAMMA)"
        )
    w = warmup_steps(args[0], total_steps)
    if warn and w >= total_steps:
        warn_user(
            f"lr schedule {schedule!r}: a warm-up of {w} steps in a training of "
            f"{total_steps}: the lr never reaches its peak; give a shorter W (or a fraction "
            "such as 0.1)"
        )


def check_peak(schedule: str | None, epochs: int, lr: float) -> None:
    """Refuse a schedule that takes ``lr`` beyond float32 within ``epochs`` (``step:1:10``
    over 60 epochs failed mid-training with torch's overflow error)."""
    sched, args = parse_schedule(schedule)
    rise = sched.log_peak(epochs, *args)
    top = float(torch.finfo(torch.float32).max)  # what training computes the lr in
    if lr > 0 and math.log10(lr) + rise > math.log10(top):
        raise ValueError(
            f"lr schedule {schedule!r}: lr {lr:g} rises 10^{rise:.0f}-fold within {epochs} "
            f"epochs, beyond float32 (at most {top:.3g}), in which wdlab trains; give a "
            "smaller GAMMA or fewer epochs"
        )


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str | None,
    epochs: int,
    total_steps: int | None = None,
) -> LRScheduler | None:
    """An lr scheduler from a short spec (see the module docstring): over ``epochs`` epochs,
    or, for a per-step schedule, over ``total_steps`` optimizer steps."""
    sched, args = parse_schedule(schedule)
    if not sched.per_step:
        return sched.make(optimizer, epochs, *args)
    if total_steps is None:
        check_schedule(schedule, None)  # the one line saying what to give
    return sched.make(optimizer, total_steps, *args)
