"""The frozen plan of one batched training: what to train, on what, for how long, and how.

A :class:`Plan` holds everything :func:`wdlab.trainer.train` is asked; the trainer reads it and
never changes it. Configurations that share optimizer settings form one :class:`ConfigGroup`:
one torch parameter group over their rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from wdlab.data import Dataset, StreamedData
from wdlab.decay import DEFAULT_RULE, WD, DecayRule, Mode, WDSchedule, check_weight_decay, get_mode
from wdlab.decay.schedules import parse as parse_wd_schedule
from wdlab.decay.schedules import scaled
from wdlab.models import ModelSpec
from wdlab.optimizers import OptimizerSpec, optimizer_spec
from wdlab.records import RunConfig
from wdlab.sidebyside import check_parallel
from wdlab.tasks import Task
from wdlab.trainer.schedules import check_peak, check_schedule

PRECISIONS = ("fp32", "bf16")


def running(parallel: object, channels_last: object) -> dict[str, Any]:
    """How a batch runs, checked (one ``ValueError`` each): configurations side by side
    (``parallel``, :mod:`wdlab.sidebyside`) and ``channels_last`` inputs, as :class:`Plan`'s
    keywords. Not a study's identity: they change how, not what, it trains."""
    if not isinstance(channels_last, bool):
        raise ValueError(f"channels_last must be True or False, got {channels_last!r}")
    return {"parallel": check_parallel(parallel), "channels_last": channels_last}


@dataclass(frozen=True)
class Plan:
    """Train every configuration in ``configs`` together for ``epochs`` epochs.

    Evaluation runs every ``eval_every`` epochs and at the last one, under ``no_grad``, after
    that epoch's update; it never changes the trajectory. ``rule`` says which tensors decay;
    ``init(seed)`` builds a configuration's initial module (default: ``torch.manual_seed(seed)``
    then ``spec.build()``). ``fast_path``: ``None`` uses the exact Gram-matrix path
    (:mod:`wdlab.engines.gram`) wherever it applies, ``False`` never, ``True`` insists
    (``ValueError`` saying why not). ``batch_size`` below the training rows trains on shuffled
    mini-batches (one permutation per epoch shared by every configuration, drawn from
    ``shuffle_seed``).
    ``data`` is a :class:`~wdlab.data.Dataset` held in memory, or a
    :class:`~wdlab.data.StreamedData` whose training stream gives the mini-batches (its own
    batch size; ``batch_size`` applies to tensors). ``steps``, when given, is the number of
    optimizer steps to train: the epochs are then ⌈steps / steps per epoch⌉, the last one cut
    short (``epochs`` is ignored). ``clip_grad_norm`` clips each configuration's gradient to
    that total norm, its own norm, as ``torch.nn.utils.clip_grad_norm_`` does alone.
    ``precision="bf16"`` runs the forward passes under bfloat16 autocast; weights, optimizer
    state and losses stay float32. ``keep_params`` returns the final weights. ``on_epoch`` is
    called after every epoch (progress), ``progress`` shows a bar of its own. ``diagnostics``
    names opt-in per-layer recordings (:mod:`wdlab.diagnostics`, e.g. ``rotation``). ``task``
    replaces the data's task (a custom loss or metric, :func:`wdlab.tasks.custom_task`).

    Rows that stop leave the batch (:meth:`~wdlab.trainer.loop.Trainer.stop`: their compute is
    saved): ``early_stop`` stops a configuration whose validation metric stopped improving
    (:class:`EarlyStop`). Successive halving trains to a rung and pauses: ``rungs`` are epoch
    counts after which every configuration is evaluated too, ``stop`` pauses the batch after
    that many epochs (its rows ``paused``, the batch's state returned:
    :mod:`wdlab.trainer.state`), ``start`` continues such a state (of a batch of these same
    configurations) and ``skip`` names configurations (indices) of it not to train further
    (pruned). ``on_checkpoint(state)`` receives the batch's state every ``checkpoint`` epochs
    (an int), every :data:`~wdlab.trainer.state.CHECKPOINT_SECONDS` of training (``"auto"``),
    or never (``"off"``).

    ``wd_schedule`` (a :class:`~wdlab.decay.WDSchedule` or ``"cosine|linear:START:END:STEPS"``)
    and ``group_wd`` (fnmatch pattern → weight decay, in order) make each row's weight decay a
    function of the optimizer step and give the tensors a pattern matches their own
    (:mod:`wdlab.trainer.decays` says how they combine with a row's weight decay).
    ``said``: the plan's warnings (a warm-up as long as the training) were given already, by
    the sweep that plans its batches: not repeated for each batch. ``parallel``: configurations
    trained one after another (a convolutional model on the CPU) run that many side by side,
    in threads (:mod:`wdlab.sidebyside`); elsewhere it is unused, and the engine's note says so.
    ``channels_last``: a user's module gets its 4-D float inputs in ``torch.channels_last``
    (oneDNN's NHWC convolutions on the CPU): the numbers of a plain loop that converts them so.
    """

    spec: ModelSpec
    data: Dataset | StreamedData
    configs: tuple[RunConfig, ...]
    epochs: int
    eval_every: int = 10
    rule: DecayRule = DEFAULT_RULE
    init: Callable[[int], nn.Module] | None = None
    schedule: str | None = None
    device: torch.device | str | None = None
    keep_params: bool = False
    fast_path: bool | None = None
    batch_size: int | None = None
    shuffle_seed: int = 0
    precision: str = "fp32"
    progress: bool = False
    progress_desc: str = "training"
    on_epoch: Callable[[int], None] | None = field(default=None, compare=False)
    diagnostics: tuple[str, ...] = ()
    task: Task | None = field(default=None, compare=False)
    early_stop: EarlyStop | None = None
    rungs: tuple[int, ...] = ()
    stop: int | None = None
    start: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    skip: tuple[int, ...] = ()
    checkpoint: int | str = "auto"
    on_checkpoint: Callable[[dict[str, Any]], None] | None = field(default=None, compare=False)
    steps: int | None = None
    clip_grad_norm: float | None = None
    wd_schedule: WDSchedule | None = None
    group_wd: tuple[tuple[str, float], ...] = ()
    said: bool = field(default=False, compare=False)
    parallel: int = 1
    channels_last: bool = False

    def __post_init__(self) -> None:
        if not self.configs:
            raise ValueError("no configurations to train")
        _positive_int("epochs", self.epochs)
        _positive_int("eval_every", self.eval_every)
        running(self.parallel, self.channels_last)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if self.clip_grad_norm is not None:
            check_clip(self.clip_grad_norm)
        if self.steps is not None:
            _positive_int("steps", self.steps)
            per = self.steps_per_epoch
            if per is None:
                raise ValueError(
                    "steps (steps=, --steps) needs the number of batches per epoch, which this "
                    "training stream cannot tell (it has no len()): give its Dataset a __len__ "
                    "(its DataLoader then has one), or train for epochs (epochs=, --epochs) "
                    "instead"
                )
            if isinstance(self.data, StreamedData) and not self.data.streams["train"].exact:
                raise ValueError(
                    "steps= counts an epoch's steps from len(DataLoader), which an "
                    "IterableDataset read by several workers gives only roughly (each ends its "
                    "share with a batch of its own): train for epochs=, or read it with one worker"
                )
            object.__setattr__(self, "epochs", -(-self.steps // per))
        if self.precision not in PRECISIONS:
            valid = ", ".join(PRECISIONS)
            raise ValueError(f"unknown precision {self.precision!r}; valid: {valid}")
        check_schedule(self.schedule, self.total_steps, warn=not self.said)
        check_peak(self.schedule, self.epochs, max(c.lr for c in self.configs))
        self._check_decays()
        if len({optimizer_spec(c.optimizer).cls_name for c in self.configs}) > 1:
            raise ValueError("one batch trains one optimizer class; split the sweep by optimizer")
        self._check_segment()

    def _check_segment(self) -> None:
        """The rungs, the pause, the skipped rows and the checkpoint cadence make sense."""
        for r in self.rungs:
            if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r < self.epochs:
                raise ValueError(f"rungs must be epochs in 1..{self.epochs - 1}, got {r!r}")
        if self.stop is not None and not 1 <= self.stop <= self.epochs:
            raise ValueError(f"stop must be an epoch in 1..{self.epochs}, got {self.stop!r}")
        if any(not 0 <= i < len(self.configs) for i in self.skip) or (
            self.skip and self.start is None
        ):
            raise ValueError("skip names configurations of a batch continued from start")
        check_checkpoint(self.checkpoint, "checkpoint")
        if self.early_stop is not None:
            _positive_int("early_stop.patience", self.early_stop.patience)

    def _check_decays(self) -> None:
        """``wd_schedule`` parsed (its start > 0: every weight decay is scaled from it) and
        ``group_wd`` as ordered (pattern, weight decay) pairs, each checked."""
        schedule = self.wd_schedule
        if isinstance(schedule, str):
            schedule = parse_wd_schedule(schedule)
        if schedule is not None and not isinstance(schedule, WDSchedule):
            raise ValueError(f"wd_schedule must be a WDSchedule or its text, got {schedule!r}")
        if schedule is not None:
            scaled(schedule, 0.0)  # START > 0, else one line
        pairs = self.group_wd.items() if isinstance(self.group_wd, Mapping) else self.group_wd
        group_wd = tuple((str(p), check_weight_decay(w)) for p, w in pairs)
        object.__setattr__(self, "wd_schedule", schedule)
        object.__setattr__(self, "group_wd", group_wd)

    @property
    def optimizer(self) -> OptimizerSpec:
        """The optimizer every configuration of this batch uses."""
        return optimizer_spec(self.configs[0].optimizer)

    @property
    def minibatch(self) -> bool:
        """Whether epochs are made of mini-batches (always, for streamed data)."""
        if isinstance(self.data, StreamedData):
            return True
        return self.batch_size is not None and self.batch_size < len(self.data.y_train)

    @property
    def steps_per_epoch(self) -> int | None:
        """Optimizer steps per epoch: 1 full batch, or the number of mini-batches (for a
        stream: its batches per epoch, ``None`` where it has no ``len()``)."""
        if isinstance(self.data, StreamedData):
            return self.data.streams["train"].batches
        n = len(self.data.y_train)
        return -(-n // self.batch_size) if self.minibatch else 1

    @property
    def total_steps(self) -> int | None:
        """Optimizer steps of the whole training (``None`` where a stream's length is unknown)."""
        if self.steps is not None:
            return self.steps
        per = self.steps_per_epoch
        return None if per is None else per * self.epochs

    @property
    def eval_epochs(self) -> list[int]:
        """The epochs after which the model is evaluated: every ``eval_every``-th, the last,
        and the last of each rung (rung r: after r epochs, epoch r − 1)."""
        rungs = {r - 1 for r in self.rungs}
        return [e for e in range(self.epochs) if self._scheduled(e) or e in rungs]

    @property
    def rung_only_evals(self) -> frozenset[int]:
        """The evaluations made only for a rung, off the ``eval_every`` schedule: never a run's
        best epoch, so a survivor's is the unpruned sweep's (its curves keep them)."""
        return frozenset(r - 1 for r in self.rungs if not self._scheduled(r - 1))

    def _scheduled(self, epoch: int) -> bool:
        """Whether ``epoch`` is on the evaluation schedule, rungs aside: every
        ``eval_every``-th epoch and the last."""
        return epoch % self.eval_every == 0 or epoch == self.epochs - 1


@dataclass(frozen=True)
class EarlyStop:
    """Early stopping: a configuration stops once ``metric`` (a validation series, such as
    ``val_acc`` or ``val_loss``) has not improved on its best for ``patience`` evaluations
    (``higher``: its direction)."""

    metric: str
    higher: bool
    patience: int


def check_checkpoint(value: object, key: str) -> int | str:
    """A checkpoint cadence: ``"auto"``, ``"off"`` or a number of epochs >= 1 (one line
    naming ``key`` otherwise)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if value in ("auto", "off") or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ):
        return value  # type: ignore[return-value]
    raise ValueError(f"{key}: expected auto, off or a number of epochs >= 1, got {value!r}")


def check_clip(value: object) -> float:
    """``clip_grad_norm`` as a float > 0, else a one-line ``ValueError``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value > 0):  # type: ignore[arg-type]
        raise ValueError(f"clip_grad_norm must be a finite number > 0, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def opt_key(config: RunConfig) -> tuple:
    """Configurations with the same key share one optimizer parameter group."""
    mode = get_mode(config.mode)
    wd = config.weight_decay if mode.optimizer_wd else 0.0
    cls_name = optimizer_spec(config.optimizer).cls_name
    return (cls_name, config.options, config.lr, config.mode, wd)


@dataclass
class ConfigGroup:
    """A contiguous block of rows sharing optimizer settings (one torch parameter group).

    ``wd`` is one float when every row has the same weight decay, else a (rows,) tensor.
    """

    key: tuple
    rows: slice
    mode: Mode
    wd: WD

    @property
    def options(self) -> dict:
        """The optimizer keywords of this group."""
        return dict(self.key[1])

    @property
    def lr(self) -> float:
        """The group's learning rate."""
        return self.key[2]

    @property
    def builtin_wd(self) -> float:
        """The weight decay handed to the optimizer itself (``builtin``), else 0."""
        return self.key[4]


def order_configs(configs: Sequence[RunConfig]) -> list[int]:
    """An order in which each optimizer group is one contiguous block of rows."""
    return sorted(range(len(configs)), key=lambda i: (repr(opt_key(configs[i])), i))


def group_configs(configs: Sequence[RunConfig], device: torch.device) -> list[ConfigGroup]:
    """Contiguous runs of configurations with the same :func:`opt_key`."""
    groups: list[ConfigGroup] = []
    start = 0
    for k in range(1, len(configs) + 1):
        if k == len(configs) or opt_key(configs[k]) != opt_key(configs[start]):
            wds = [c.weight_decay for c in configs[start:k]]
            # float64: each row's factor (e.g. 1 − lr·wd) is then rounded to float32 once, as a
            # float wd is when a configuration trains alone
            uniform = all(w == wds[0] for w in wds)
            wd: WD = wds[0] if uniform else torch.tensor(wds, dtype=torch.float64, device=device)
            mode = get_mode(configs[start].mode)
            groups.append(ConfigGroup(opt_key(configs[start]), slice(start, k), mode, wd))
            start = k
    return groups
