"""The one trainer: K configurations trained at once (see :mod:`.loop`).

:func:`train` is the entry point; :class:`~wdlab.trainer.plan.Plan` holds what it is asked,
:class:`~wdlab.trainer.loop.Trainer` runs it: the loop, over an engine (:mod:`wdlab.engines`),
an optimizer over the stacked rows with the decay driver attached (:mod:`.rows`) and a recorder
(:mod:`.recorder`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wdlab.data import Dataset, StreamedData
from wdlab.decay import DEFAULT_RULE, DecayRule, WDSchedule
from wdlab.devices import exact_float32
from wdlab.models import ModelSpec
from wdlab.records import RunConfig, RunResult
from wdlab.tasks import Task
from wdlab.trainer.heap import release_memory
from wdlab.trainer.loop import Trainer, default_device
from wdlab.trainer.plan import EarlyStop, Plan
from wdlab.trainer.schedules import SCHEDULES, make_scheduler, parse_schedule
from wdlab.trainer.setup import default_init
from wdlab.trainer.state import Trained


def train(
    spec: ModelSpec,
    data: Dataset | StreamedData,
    configs: Sequence[RunConfig],
    *,
    epochs: int,
    eval_every: int = 10,
    rule: DecayRule = DEFAULT_RULE,
    init: Callable[[int], nn.Module] | None = None,
    schedule: str | None = None,
    device: torch.device | str | None = None,
    keep_params: bool = False,
    progress: bool = False,
    progress_desc: str = "training",
    fast_path: bool | None = None,
    batch_size: int | None = None,
    shuffle_seed: int = 0,
    precision: str = "fp32",
    on_epoch: Callable[[int], None] | None = None,
    diagnostics: Sequence[str] = (),
    task: Task | None = None,
    steps: int | None = None,
    clip_grad_norm: float | None = None,
    wd_schedule: WDSchedule | str | None = None,
    group_wd: Mapping[str, float] | None = None,
    **options: Any,
) -> list[RunResult]:
    """Train every configuration in ``configs`` together; one RunResult each, in order.

    The keywords are those of :class:`~wdlab.trainer.plan.Plan`, which documents each (the
    others, ``options``, too: early stopping, rungs, a saved state to continue, checkpoints).
    Float32 stays float32 while it trains (TF32 off, :func:`wdlab.devices.exact_float32`). The
    batch's tensors are released, and freed heap handed back to the OS, before returning. The
    list returned is a :class:`~wdlab.trainer.state.Trained`: with the batch's state where it
    paused at ``stop``, and the optimizer steps its rows took (``row_steps``).
    """
    plan = Plan(
        spec,
        data,
        tuple(configs),
        epochs,
        eval_every=eval_every,
        rule=rule,
        init=init,
        schedule=schedule,
        device=device,
        keep_params=keep_params,
        fast_path=fast_path,
        batch_size=batch_size,
        shuffle_seed=shuffle_seed,
        precision=precision,
        progress=progress,
        progress_desc=progress_desc,
        on_epoch=on_epoch,
        diagnostics=tuple(diagnostics),
        task=task,
        steps=steps,
        clip_grad_norm=clip_grad_norm,
        wd_schedule=wd_schedule,  # type: ignore[arg-type]  (its text is parsed by the plan)
        group_wd=tuple((group_wd or {}).items()),
        **options,
    )
    try:
        with exact_float32():
            return Trainer(plan).run()
    finally:
        release_memory()


def import_optimizer_runtime() -> None:
    """Import what torch.optim imports on its first optimizer (torch._dynamo, ~1 s, once)."""
    import torch._dynamo  # noqa: F401


__all__ = [
    "SCHEDULES",
    "EarlyStop",
    "Plan",
    "Trained",
    "Trainer",
    "default_device",
    "default_init",
    "import_optimizer_runtime",
    "make_scheduler",
    "parse_schedule",
    "train",
]
