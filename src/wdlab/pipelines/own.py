"""``wdlab.sweep``: weight-decay sweeps for any ``nn.Module`` and any dataset.

The same pipeline as ``wdlab sweep`` (a store, batches within a memory budget, resumable,
choice on validation, report on test), fed with Python objects: a model factory, torch
Datasets or tensors, an optional loss and metric.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wdlab.config import Experiment, ModelConfig, validate
from wdlab.data import (
    Dataset,
    StreamedData,
    from_splits,
    is_data_function,
    is_table_path,
    load,
    read_table,
)
from wdlab.data.arrays import check_pair
from wdlab.data.loaders import DEFAULT_BATCH_SIZE, BatchSize, every_split, unused_batch_size
from wdlab.data.streamed import held
from wdlab.data.user import function_splits
from wdlab.decay import DEFAULT_RULE, DecayRule, WDSchedule
from wdlab.halving import Prune, setting
from wdlab.integrations.logs import LogSpec
from wdlab.interrupts import interruptible
from wdlab.jsonsafe import json_safe
from wdlab.models import MODEL_KINDS, ModelSpec, kind_options
from wdlab.pipelines import checks, experiment
from wdlab.pipelines.results import SweepResult
from wdlab.pipelines.study import DEFAULT_MAX_MEMORY_MB, Study, run_study
from wdlab.pipelines.userdata import (
    data_identity,
    data_seed,
    data_sizes,
    declared,
    stream_settings,
    streamed_splits,
    with_classes,
)
from wdlab.pipelines.weights import held_weights
from wdlab.tasks import Metric, Task, custom_task, get_task
from wdlab.trainer.plan import running
from wdlab.usercode import DEFAULT_FACTORY_TIMEOUT, code_identity
from wdlab.warn import warn_user

Model = Callable[..., nn.Module] | ModelSpec | str
Data = Mapping[str, Any] | Dataset | str | Callable[[str, int, int], Any]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@interruptible
@checks.plain_numbers
def sweep(
    model: Model,
    data: Data,
    *,
    optimizer: str = "adamw",
    lr: float | Sequence[float] | str = 1e-3,
    weight_decay: float | Sequence[float] | str = "1e-5..1e-1:5",
    modes: str | Sequence[str] = ("decoupled",),
    seeds: int | Sequence[int] = 1,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    schedule: str = "constant",
    clip_grad_norm: float | None = None,
    precision: str = "fp32",
    loss: Loss | None = None,
    metric: str | Metric | Callable[[torch.Tensor, torch.Tensor], object] | None = None,
    select: str | None = None,
    max_batch: int | None = None,
    parallel: int = 1,
    channels_last: bool = False,
    out: str | Path | None = None,
    keep: str = "best",
    device: str | None = None,
    rule: DecayRule | str = DEFAULT_RULE,
    wd_schedule: str | WDSchedule | None = None,
    group_wd: Mapping[str, float] | None = None,
    options: Mapping[str, Any] | None = None,
    eval_every: int = 1,
    early_stopping: bool = False,
    patience: int = 10,
    prune: bool | Prune | Mapping[str, Any] = False,
    checkpoint: int | str = "auto",
    diagnostics: Sequence[str] = (),
    n_classes: int | None = None,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    progress: bool = False,
    name: str | None = None,
    target: str | None = None,
    features: Sequence[str] | None = None,
    impute: str | None = None,
    categorical: Sequence[str] | None = None,
    factory_timeout: float | None = DEFAULT_FACTORY_TIMEOUT,
    log: LogSpec = None,
) -> SweepResult:
    """Sweep weight decay × lr × mode × seed for ``model`` on ``data``; choose on validation.

    ``model``: a factory of an ``nn.Module`` (seeded by ``torch.manual_seed(seed)``; given the
    ``seed``, ``in_dim``, ``out_dim`` it takes; ``factory_timeout`` s at most), ``"file.py:make"``,
    a :class:`~wdlab.models.ModelSpec` or a built-in kind (as ``--model KIND`` builds it).
    ``data``: ``{"train", "val", "test"}`` → ``(X, y)`` tensors (held) or Datasets, DataLoaders,
    ``IterableDataset``s, ``make_loader(split, seed, epoch)`` factories (streamed afresh each
    epoch: :func:`wdlab.data.stream_splits`; classes: ``n_classes`` or the model's outputs); or
    a wdlab Dataset or StreamedData (as made), a source, a .csv/.parquet path (``target``,
    ``features``, ``impute``, ``categorical``), ``"file.py:make_data"`` (as ``--data``).
    The recipe: ``epochs`` (10) or ``steps``, ``schedule`` (per epoch, or per step with
    warm-up), ``clip_grad_norm`` (each configuration's own), ``precision``, ``loss``, ``metric``,
    ``select``; ``early_stopping``: each run at its best validation epoch, stopped after
    ``patience`` evaluations without a better one; ``prune``: successive halving;
    ``checkpoint``: N epochs, ``"auto"``, ``"off"``; ``diagnostics``: opt-in recordings.
    ``rule``, ``group_wd``, ``wd_schedule``: what decays, by how much. ``max_batch=1``: one at
    a time, the reference; ``parallel``, ``channels_last``: faster CPU runs. ``out`` keeps the
    study (else temporary), weights by ``keep`` (:meth:`SweepResult.model`); ``log``: dashboards.
    """
    t0, epochs = time.perf_counter(), checks.epochs_or_steps(epochs, steps)
    checks.check_arguments(max_batch, max_memory_mb, out, factory_timeout)
    rule, how = checks.decay_rule(rule), running(parallel, channels_last)
    streamed = {"batch_size": batch_size, "n_classes": n_classes, "progress": progress}
    ds = user_data(data, (target, features, impute, categorical), streamed, model, factory_timeout)
    spec, init_name = resolve_model(model, ds, factory_timeout)
    task, chosen_on = _selection(ds, loss, metric, select)
    recipe = _recipe(steps, schedule, clip_grad_norm, precision, keep, early_stopping, diagnostics)
    recipe |= {"patience": patience, "checkpoint": checkpoint, **_prune_keys(setting(prune))}
    grid = {"optimizer": optimizer, "lr": _listed(lr), "seeds": checks.seed_list(seeds)}
    train = grid | recipe | {"epochs": epochs, "batch_size": batch_size or 0, "select": chosen_on}
    train |= {"eval_every": eval_every, "options": dict(options or {}), "device": device}
    decay = decay_section(modes, weight_decay, wd_schedule, group_wd)
    config = validate({"train": train, "decay": decay})
    study = _study(config, ds, spec, init_name, (loss, metric), rule, task, stream_settings(data))
    return _run(study, out, name, how | {"max_batch": max_batch}, max_memory_mb, progress, t0, log)


def _study(
    config: Experiment,
    ds: Dataset | StreamedData,
    spec: ModelSpec,
    init_name: str,
    code: tuple[object, object],
    rule: DecayRule,
    task: Task | None,
    made: Mapping[str, int],
) -> Study:
    """The study of a :func:`sweep` (its folder and name set by :func:`_run`): the trainer's
    keywords, the config as stored (with the Python objects' names and fingerprints,
    ``code``: the loss and the metric) and its identity; ``made``: the batch size and seed
    of a StreamedData given as made."""
    shuffle = data_seed(ds)  # wdlab.data.load(name, seed=s): as `--data-seed s` shuffles
    kw = config.train.train_kwargs(shuffle_seed=shuffle) | config.decay.train_kwargs()
    kw |= {"rule": rule, "task": task}
    described = _describe(config.to_dict(), init_name, ds, code, rule)
    seed = made.get("seed", shuffle)  # ``made``: a StreamedData's own (stream_settings)
    if seed:  # another order, another study (0 left out: the identity of earlier studies)
        described["data"]["seed"] = seed
    if "batch_size" in made:
        described["train"]["batch_size"] = made["batch_size"]
    if init_name in MODEL_KINDS and spec.kind == init_name:  # "mlp": the network it names
        described["model"] |= json_safe(kind_options(spec.kind, spec))
    identity = checks.sweep_identity(described)
    return Study(Path(), "", described, identity, ds, spec, experiment.grid(config), kw)


def _prune_keys(pruning: Prune | None) -> dict[str, Any]:
    """The config keys of successive halving's settings (none when it is off)."""
    if pruning is None:
        return {}
    return {"prune": True, "prune_eta": pruning.eta, "prune_rung": pruning.first_rung or 0}


def _recipe(
    steps: int | None,
    schedule: str,
    clip_grad_norm: float | None,
    precision: str,
    keep: str,
    early_stopping: bool,
    diagnostics: Sequence[str],
) -> dict[str, Any]:
    """The ``[train]`` keys of :func:`sweep`'s recipe, for the config's checks."""
    recipe = {"steps": steps or 0, "schedule": schedule, "clip_grad_norm": clip_grad_norm}
    recipe |= {"precision": precision, "keep": keep, "early_stopping": early_stopping}
    return recipe | {"diagnostics": _listed(diagnostics)}


def user_data(
    data: Data, table: tuple, streamed: Mapping[str, Any], model: Model, timeout: float | None
) -> Dataset | StreamedData:
    """The data of :func:`sweep` (and :func:`wdlab.optuna.optimize`), checked: tensors held,
    Datasets and DataLoaders streamed (``streamed``: ``batch_size``, ``n_classes``,
    ``progress``), with their classes (``n_classes`` declared for tensors: their labels checked
    against it); ``table``: how to read a .csv/.parquet path (target, features, impute,
    categorical)."""
    checks.check_model(model)  # before the data are read
    if is_data_function(data):  # "file.py:make_data", as --data takes it
        data = function_splits(data)
    data = every_split(data)  # one make_loader(split, seed, epoch): every split's factory
    size = streamed.get("batch_size")
    unused_batch_size(data, size)
    if isinstance(data, StreamedData) and size and not isinstance(size, BatchSize):
        warn_user(
            f"batch size {size} (batch_size=) is not used: a StreamedData batches as "
            "stream_splits made it (its batch_size=)"
        )
    ds = checks.checked_data(lambda d: resolve_data(d, *table, stream=streamed), data)
    ds = declared(ds, streamed.get("n_classes"))
    return with_classes(ds, model, timeout, resolve_model)


def _selection(ds: Dataset, loss: object, metric: object, select: str | None) -> tuple:
    """The task (with the user's loss and metric, checked) and what the choice is made on."""
    task = _task(ds, checks.check_loss(loss), metric)
    return task, _chosen_on(select, metric, task)


def _task(ds: Dataset, loss: object, metric: object) -> Task | None:
    """The data's task with the user's loss and metric (None: neither given); the metric's key
    and direction join the data facts (the choice is read back with them)."""
    custom_metric = metric if metric is not None and not isinstance(metric, str) else None
    if not (loss or custom_metric):
        return None
    task = custom_task(get_task(ds.task), loss, custom_metric)
    ds.meta["metric"] = {"key": task.metric, "higher": task.higher}
    return task


def _chosen_on(select: str | None, metric: object, task: Task | None) -> str:
    """What the choice is made on (``train.select``): ``select``, else a metric named by
    ``metric``, else ``"auto"``. With a user's metric, ``select`` may name it (the task's own
    metric: ``"auto"``) or ``"loss"``; any other is refused here, before anything trains."""
    if task is None or isinstance(metric, str) or metric is None:
        return select or (metric if isinstance(metric, str) else None) or "auto"
    if select in (None, "auto", task.metric):
        return "auto"
    if select != "loss":
        raise ValueError(
            f"select={select!r}: with metric={task.metric} the choice is made on "
            f"{task.metric!r} (select='auto') or 'loss'"
        )
    return select


def _run(
    study: Study,
    out: str | Path | None,
    name: str | None,
    how: Mapping[str, Any],
    max_memory_mb: float,
    progress: bool,
    t0: float,
    log: LogSpec = None,
) -> SweepResult:
    """Train ``study`` into ``out`` (kept), or into a temporary store that is then deleted;
    ``how``: the batches' size and how they run (max_batch, parallel, channels_last)."""
    kw = {
        **how,
        "max_memory_mb": max_memory_mb,
        "progress": progress,
        "t0": t0,
        "log": log,
    }
    if out is not None:
        study.directory, study.name = Path(out), name or Path(out).name
        study.named = name is not None
        return run_study(study, **kw)
    with tempfile.TemporaryDirectory(prefix="wdlab-sweep-") as tmp:
        study.directory, study.name = Path(tmp) / "study", name or study.data.name
        result = run_study(study, **kw)
        result.held = held_weights(study.directory, result.runs)  # model() builds from them
    result.directory = None
    return result


def decay_section(
    modes: object, weight_decay: object, schedule: object, group_wd: object
) -> dict[str, Any]:
    """The ``[decay]`` keys of :func:`sweep`'s arguments (a WDSchedule as its text,
    ``shape:START:END:STEPS``)."""
    if isinstance(schedule, WDSchedule):
        schedule = f"{schedule.shape}:{schedule.start!r}:{schedule.end!r}:{schedule.steps}"
    return {
        "modes": _listed(modes),
        "weight_decay": _listed(weight_decay),
        "wd_schedule": schedule,
        "group_wd": dict(group_wd) if isinstance(group_wd, Mapping) else group_wd or {},
    }


def _listed(value: object) -> object:
    return list(value) if isinstance(value, (tuple, list)) else value


def resolve_data(
    data: Data, *table_args: object, stream: Mapping[str, Any] | None = None
) -> Dataset | StreamedData:
    """The data ``data`` names; ``table_args`` (target, features, impute, categorical, each
    ``None`` when not given): how to read a .csv/.parquet path (refused for any other data).
    Inputs that are NaN, infinite or beyond float32 are refused, whatever the data came as.
    ``stream`` (``batch_size``, ``n_classes``, ``progress``): splits given as Datasets,
    DataLoaders or factories become streams (:func:`wdlab.data.stream_splits`); without it
    they are read into memory (:func:`wdlab.data.from_splits`)."""
    keys = ("target", "features", "impute", "categorical")
    table = dict(zip(keys, (*table_args, None, None, None, None)[:4], strict=True))
    given = [k for k, v in table.items() if v is not None]
    if given and not (isinstance(data, str) and is_table_path(data)):
        what = repr(data) if isinstance(data, str) else f"a {type(data).__name__}"
        keys = ", ".join(f"{k}=" for k in given)
        verb = "applies" if len(given) == 1 else "apply"
        raise ValueError(f"{keys} {verb} to a .csv/.parquet file, and data is {what}")
    if isinstance(data, Dataset):
        for split, (X, y) in data.splits().items():
            check_pair(f"data {split}", (X, y))
        return data
    if isinstance(data, StreamedData):  # stream_splits(..., task=, seed=): as it was made
        return data
    if isinstance(data, str):
        if is_table_path(data):
            return read_table(data, **{k: _listed(v) for k, v in table.items()})
        return load(data)
    if isinstance(data, Mapping):
        data = {k: v for k, v in data.items() if k != "val" or v is not None}  # None: no val
        if stream is not None and not held(data):
            return streamed_splits(data, **stream)
        return from_splits(data)
    raise ValueError(
        "data must map 'train', 'val', 'test' to Datasets, DataLoaders, factories or (X, y), or "
        "be one make_loader(split, seed, epoch) (the factory of every split), a wdlab Dataset "
        f"or StreamedData, a source name or a .csv/.parquet path; got {type(data).__name__}"
    )


def resolve_model(
    model: Model, ds: Dataset, timeout: float | None = DEFAULT_FACTORY_TIMEOUT
) -> tuple[ModelSpec, str]:
    """The ModelSpec for ``model``, sized to the data, and how to name the model. A factory
    becomes a ``custom`` spec: it is built the one way ``wdlab sweep --model`` builds it."""
    checks.check_model(model)
    sizes = data_sizes(ds, builtin=isinstance(model, str) and ":" not in model)
    if isinstance(model, ModelSpec):
        spec = sized(model, sizes)
        return spec, spec.describe()
    if isinstance(model, str) and ":" in model:  # "module:function" or "path/file.py:function"
        spec = ModelSpec("custom", factory=model, factory_timeout=timeout, label=model, **sizes)
        return spec, model
    if isinstance(model, str):  # a built-in kind: the [model] section's defaults, as the CLI's
        options = kind_options(model, ModelConfig()) if model in MODEL_KINDS else {}
        return ModelSpec(model, **sizes, **options), model
    if not callable(model):
        raise ValueError(f"model must be a factory, a ModelSpec or a model kind, got {model!r}")
    label = getattr(model, "__qualname__", type(model).__name__)
    spec = ModelSpec("custom", factory=model, factory_timeout=timeout, label=label, **sizes)
    return spec, label


def sized(spec: ModelSpec, sizes: Mapping[str, Any]) -> ModelSpec:
    """``spec`` sized to the data: left at ``in_dim=0``, it takes the data's ``in_dim``,
    ``out_dim`` and ``in_shape``; a built-in kind given other sizes than the data's is one
    ``ValueError`` (it would fail in training)."""
    checked = ("in_dim", "out_dim") if spec.in_dim else ("out_dim",) if spec.out_dim != 1 else ()
    wrong = [k for k in checked if getattr(spec, k) != sizes[k]]  # out_dim 1: the default
    if wrong and spec.kind != "custom" and sizes["in_dim"]:
        given = ", ".join(f"{k}={getattr(spec, k)}" for k in wrong)
        data = ", ".join(f"{k}={sizes[k]}" for k in wrong)
        raise ValueError(
            f"the ModelSpec has {given}; the data need {data} (leave in_dim and out_dim at "
            "their defaults to size it to the data)"
        )
    return dataclasses.replace(spec, **sizes) if spec.in_dim == 0 else spec


def _describe(
    config: dict, model: str, ds: Dataset | StreamedData, code: tuple[object, object],
    rule: DecayRule,
) -> dict[str, Any]:  # fmt: skip
    """The study's config as stored: the grid and training keys, the decay rule, and names and
    fingerprints of the Python objects: a changed model (its fingerprint is added when it is
    built: :func:`wdlab.pipelines.study.run_study`), data, loss or metric is another study."""
    loss, metric = code
    return {
        "model": {"factory": model},
        "data": data_identity(ds),
        "train": config["train"] | {"loss": code_identity(loss)},
        "decay": config["decay"]
        | {"metric": code_identity(metric), "rule": checks.rule_identity(rule)},
    }
