"""``wdlab.sweep``: weight-decay sweeps for any ``nn.Module`` and any dataset.

The same pipeline as ``wdlab sweep`` (a store, batches within a memory budget, resumable,
choice on validation, report on test), fed with Python objects: a model factory, torch
Datasets or tensors, an optional loss and metric.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wdlab.config import validate
from wdlab.data import Dataset, from_splits, is_table_path, load, read_table
from wdlab.data.arrays import check_values
from wdlab.decay import DEFAULT_RULE, DecayRule
from wdlab.halving import Prune, setting
from wdlab.integrations.logs import LogSpec
from wdlab.models import ModelSpec
from wdlab.pipelines import checks
from wdlab.pipelines.results import SweepResult
from wdlab.pipelines.study import DEFAULT_MAX_MEMORY_MB, Study, run_study
from wdlab.tasks import Metric, Task, custom_task, get_task
from wdlab.usercode import DEFAULT_FACTORY_TIMEOUT, code_fingerprint

Model = Callable[..., nn.Module] | ModelSpec | str
Data = Mapping[str, Any] | Dataset | str


def sweep(
    model: Model,
    data: Data,
    *,
    optimizer: str = "adamw",
    lr: float | Sequence[float] | str = 1e-3,
    weight_decay: float | Sequence[float] | str = "1e-5..1e-1:5",
    modes: str | Sequence[str] = ("decoupled",),
    seeds: int | Sequence[int] = 1,
    epochs: int = 10,
    batch_size: int | None = 128,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    metric: str | Metric | Callable[[torch.Tensor, torch.Tensor], object] | None = None,
    select: str | None = None,
    max_batch: int | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    rule: DecayRule | str = DEFAULT_RULE,
    options: Mapping[str, Any] | None = None,
    eval_every: int = 1,
    early_stopping: bool = False,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    progress: bool = False,
    name: str | None = None,
    target: str | None = None,
    features: Sequence[str] | None = None,
    impute: str | None = None,
    categorical: Sequence[str] | None = None,
    factory_timeout: float | None = DEFAULT_FACTORY_TIMEOUT,
    log: LogSpec = None,
    prune: bool | Prune | Mapping[str, Any] = False,
    patience: int = 10,
    checkpoint: int | str = "auto",
) -> SweepResult:
    """Sweep weight decay × lr × mode × seed for ``model`` on ``data``; choose on validation.

    ``model`` is a factory returning an ``nn.Module``, called after ``torch.manual_seed(seed)``
    with ``seed``, ``in_dim`` and ``out_dim`` by keyword where it has parameters of those names
    (``def make(seed=0)`` gets each seed; a single required parameter of another name gets it
    positionally), and stopped after ``factory_timeout`` seconds (``None``: no limit); or
    ``"path/file.py:make"``, a :class:`~wdlab.models.ModelSpec`, or a built-in kind (``"cnn"``,
    ``"mlp"``…). ``data`` maps ``train``/``val``/``test`` to map-style Datasets of ``(x, y)``,
    DataLoaders or ``(X, y)`` pairs (:func:`wdlab.data.from_splits`), or is a Dataset, a source
    name or a .csv/.parquet path read with ``target=`` (required), ``features=``, ``impute=``
    and ``categorical=`` (:func:`wdlab.data.read_table`). ``loss(outputs, targets)`` and
    ``metric`` replace the task's own (``metric``: a recorded key such as ``"acc"``, a
    :class:`~wdlab.tasks.Metric`, or a callable where higher is better); ``select`` chooses on
    ``"loss"`` or a metric key (default: the metric). ``rule`` says which tensors decay: a
    :class:`~wdlab.decay.DecayRule` or a name (``"default"``, ``"everything"``, ``"timm"``,
    ``"nanogpt"``, ``"hf"``). ``max_batch=1`` trains the configurations one after another: the
    reference the batched path matches. ``out`` keeps the study (resumable, reportable);
    without it the store is temporary. ``result.engine`` says which path ran and why. ``log``:
    ``"tensorboard:DIR"``, ``"mlflow[:URI]"`` or a list (each run as it finishes).
    ``early_stopping`` scores each run at its best validation epoch and stops training it once
    that has not improved for ``patience`` evaluations. ``prune=True`` (or ``Prune(eta=3,
    first_rung=None)``, :mod:`wdlab.halving`) runs successive halving: at each rung the best
    1/eta of the mode × lr × wd cells go on, the others stop (wd = 0 and cells within one
    standard error of the best always go on). ``checkpoint``: the state of each batch in
    training is saved into ``out`` every N epochs, ``"auto"`` (every 5 minutes) or ``"off"``.
    """
    t0 = time.perf_counter()
    checks.check_arguments(max_batch, max_memory_mb, out, factory_timeout)
    pruning = setting(prune)
    rule = checks.decay_rule(rule)
    table = (target, features, impute, categorical)
    ds = checks.checked_data(lambda d: resolve_data(d, *table), data)
    spec, init_name = resolve_model(model, ds, factory_timeout)
    task = _task(ds, loss, metric)
    chosen_on = select or (metric if isinstance(metric, str) else None) or "auto"
    train = _train_table(optimizer, lr, seeds, epochs, batch_size, eval_every, options, device)
    train |= {"select": chosen_on, "early_stopping": early_stopping, "patience": patience}
    train |= {"checkpoint": checkpoint, **_prune_keys(pruning)}
    grid = {"modes": _listed(modes), "weight_decay": _listed(weight_decay)}
    config = validate({"train": train, "decay": grid})
    kw = config.train.train_kwargs(shuffle_seed=0) | {"rule": rule, "task": task}
    described = _describe(config.to_dict(), init_name, ds, (loss, metric), rule)
    identity = _describe(config.every_key_identity(), init_name, ds, (loss, metric), rule)
    study = Study(Path(), name or "", described, identity, ds, spec, config.grid(), kw, pruning)
    return _run(study, out, name, max_batch, max_memory_mb, progress, t0, log)


def _train_table(
    optimizer: str,
    lr: object,
    seeds: int | Sequence[int],
    epochs: int,
    batch_size: int | None,
    eval_every: int,
    options: Mapping[str, Any] | None,
    device: str | None,
) -> dict[str, Any]:
    """The ``[train]`` keys of the optimizer, the grid's lr and seeds, and the training."""
    return {
        "optimizer": optimizer,
        "lr": _listed(lr),
        "seeds": checks.seed_list(seeds),
        "epochs": epochs,
        "batch_size": batch_size or 0,
        "eval_every": eval_every,
        "options": dict(options or {}),
        "device": device,
    }


def _prune_keys(pruning: Prune | None) -> dict[str, Any]:
    """The config keys of successive halving's settings (none when it is off)."""
    if pruning is None:
        return {}
    return {"prune": True, "prune_eta": pruning.eta, "prune_rung": pruning.first_rung or 0}


def _task(ds: Dataset, loss: object, metric: object) -> Task | None:
    """The data's task with the user's loss and metric (None: neither given); the metric's key
    and direction join the data facts (the choice is read back with them)."""
    custom_metric = metric if metric is not None and not isinstance(metric, str) else None
    if not (loss or custom_metric):
        return None
    task = custom_task(get_task(ds.task), loss, custom_metric)
    ds.meta["metric"] = {"key": task.metric, "higher": task.higher}
    return task


def _run(
    study: Study,
    out: str | Path | None,
    name: str | None,
    max_batch: int | None,
    max_memory_mb: float,
    progress: bool,
    t0: float,
    log: LogSpec = None,
) -> SweepResult:
    """Train ``study`` into ``out`` (kept), or into a temporary store that is then deleted."""
    kw = {
        "max_batch": max_batch,
        "max_memory_mb": max_memory_mb,
        "progress": progress,
        "t0": t0,
        "log": log,
    }
    if out is not None:
        study.directory, study.name = Path(out), name or Path(out).name
        return run_study(study, **kw)
    with tempfile.TemporaryDirectory(prefix="wdlab-sweep-") as tmp:
        study.directory, study.name = Path(tmp) / "study", name or study.data.name
        result = run_study(study, **kw)
    result.directory = None
    return result


def _listed(value: object) -> object:
    return list(value) if isinstance(value, (tuple, list)) else value


def resolve_data(data: Data, *table_args: object) -> Dataset:
    """The Dataset ``data`` names; ``table_args`` (target, features, impute, categorical, each
    ``None`` when not given): how to read a .csv/.parquet path (refused for any other data).
    Inputs that are NaN, infinite or beyond float32 are refused, whatever the data came as."""
    keys = ("target", "features", "impute", "categorical")
    table = dict(zip(keys, (*table_args, None, None, None, None)[:4], strict=True))
    given = [k for k, v in table.items() if v is not None]
    if given and not (isinstance(data, str) and is_table_path(data)):
        what = repr(data) if isinstance(data, str) else f"a {type(data).__name__}"
        keys = ", ".join(f"{k}=" for k in given)
        raise ValueError(f"{keys} apply to a .csv/.parquet file, and data is {what}")
    if isinstance(data, Dataset):
        for split, (X, y) in data.splits().items():
            check_values(f"data {split} inputs", X)
            check_values(f"data {split} targets", y)
        return data
    if isinstance(data, str):
        if is_table_path(data):
            return read_table(data, **{k: _listed(v) for k, v in table.items()})
        return load(data)
    if isinstance(data, Mapping):
        return from_splits(data)
    raise ValueError(
        f"data must map 'train', 'val', 'test' to Datasets or (X, y), or be a wdlab Dataset, "
        f"a source name or a .csv/.parquet path; got {type(data).__name__}"
    )


def resolve_model(
    model: Model, ds: Dataset, timeout: float | None = DEFAULT_FACTORY_TIMEOUT
) -> tuple[ModelSpec, str]:
    """The ModelSpec for ``model``, sized to the data, and how to name the model. A factory
    becomes a ``custom`` spec: it is built the one way ``wdlab sweep --model`` builds it."""
    sizes = {"in_dim": ds.in_dim, "out_dim": ds.out_dim, "in_shape": ds.in_shape}
    if isinstance(model, ModelSpec):
        return model, model.describe()
    if isinstance(model, str) and ":" in model:  # "module:function" or "path/file.py:function"
        spec = ModelSpec("custom", factory=model, factory_timeout=timeout, label=model, **sizes)
        return spec, model
    if isinstance(model, str):
        return ModelSpec(model, **sizes), model
    if not callable(model):
        raise ValueError(f"model must be a factory, a ModelSpec or a model kind, got {model!r}")
    label = getattr(model, "__qualname__", type(model).__name__)
    spec = ModelSpec("custom", factory=model, factory_timeout=timeout, label=label, **sizes)
    return spec, label


def _describe(
    config: dict, model: str, ds: Dataset, code: tuple[object, object], rule: DecayRule
) -> dict[str, Any]:
    """The study's config as stored: the grid and training keys, the decay rule, and names and
    fingerprints of the Python objects: a changed model (its fingerprint is added when it is
    built: :func:`wdlab.pipelines.study.run_study`), data, loss or metric is another study."""
    digest = hashlib.sha256()
    for split, (X, y) in ds.splits().items():
        digest.update(split.encode())
        digest.update(X.detach().cpu().float().numpy().tobytes())
        digest.update(y.detach().cpu().numpy().tobytes())
    name = lambda f: getattr(f, "__qualname__", getattr(f, "name", repr(f)))  # noqa: E731
    loss, metric = code
    given = lambda f: {"name": name(f), "code": code_fingerprint(f)} if f else None  # noqa: E731
    return {
        "model": {"factory": model},
        "data": {"name": ds.name, "fingerprint": digest.hexdigest()[:16], "shape": ds.in_shape},
        "train": config["train"] | {"loss": given(loss)},
        "decay": config["decay"] | {"metric": given(metric), "rule": checks.rule_identity(rule)},
    }
