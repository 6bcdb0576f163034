"""``wdlab.sweep``: weight-decay sweeps for any ``nn.Module`` and any dataset.

The same pipeline as ``wdlab sweep`` (a store, batches within a memory budget, resumable,
choice on validation, report on test), fed with Python objects: a model factory, torch
Datasets or tensors, an optional loss and metric.
"""

from __future__ import annotations

import hashlib
import inspect
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wdlab.config import validate
from wdlab.data import Dataset, from_splits, load
from wdlab.decay import DEFAULT_RULE, DecayRule
from wdlab.integrations.logs import LogSpec
from wdlab.models import ModelSpec, call_factory
from wdlab.pipelines.results import SweepResult
from wdlab.pipelines.study import DEFAULT_MAX_MEMORY_MB, Study, run_study
from wdlab.tasks import Metric, custom_task, get_task

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
    rule: DecayRule = DEFAULT_RULE,
    options: Mapping[str, Any] | None = None,
    eval_every: int = 1,
    early_stopping: bool = False,
    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB,
    progress: bool = False,
    name: str | None = None,
    log: LogSpec = None,
) -> SweepResult:
    """Sweep weight decay × lr × mode × seed for ``model`` on ``data``; choose on validation.

    ``model`` is a factory ``seed -> nn.Module`` (or one of no argument: it is called after
    ``torch.manual_seed(seed)``), a :class:`~wdlab.models.ModelSpec` or a built-in kind
    (``"cnn"``, ``"mlp"``…). ``data`` maps ``train``/``val``/``test`` to map-style Datasets of
    ``(x, y)``, DataLoaders or ``(X, y)`` pairs (:func:`wdlab.data.from_splits`), or is a
    Dataset or a source name. ``loss(outputs, targets)`` and ``metric`` replace the task's own
    (``metric``: a recorded key such as ``"acc"``, a :class:`~wdlab.tasks.Metric`, or a callable
    where higher is better); ``select`` chooses on ``"loss"`` or a metric key (default: the
    metric). ``max_batch=1`` trains the configurations one after another: the reference the
    batched path matches. ``out`` keeps the study (resumable, reportable); without it the store
    is temporary. The result says which engine path ran and why (``result.engine``). ``log``
    logs each run as it finishes, and then the selection, to TensorBoard or MLflow
    (``"tensorboard:DIR"``, ``"mlflow[:URI]"``, or a list).
    """
    t0 = time.perf_counter()
    ds = _dataset(data)
    spec, init_name = _spec(model, ds)
    base = get_task(ds.task)
    custom_metric = metric if metric is not None and not isinstance(metric, str) else None
    task = custom_task(base, loss, custom_metric) if (loss or custom_metric) else None
    chosen_on = select or (metric if isinstance(metric, str) else None) or "auto"
    config = validate(
        {
            "train": {
                "optimizer": optimizer,
                "lr": _listed(lr),
                "seeds": list(range(seeds)) if isinstance(seeds, int) else list(seeds),
                "epochs": epochs,
                "batch_size": batch_size or 0,
                "eval_every": eval_every,
                "options": dict(options or {}),
                "device": device,
                "select": chosen_on,
                "early_stopping": early_stopping,
            },
            "decay": {"modes": _listed(modes), "weight_decay": _listed(weight_decay)},
        }
    )
    kw = config.train.train_kwargs(shuffle_seed=0) | {"rule": rule, "task": task}
    if task is not None:  # stored with the data facts: the choice needs its direction
        ds.meta["metric"] = {"key": task.metric, "higher": task.higher}
    described = _describe(config.to_dict(), init_name, ds, loss, metric, task)
    study = Study(Path(), name or "", described, described, ds, spec, config.grid(), kw)
    if out is not None:
        study.directory, study.name = Path(out), name or Path(out).name
        return _run(study, max_batch, max_memory_mb, progress, t0, log)
    with tempfile.TemporaryDirectory(prefix="wdlab-sweep-") as tmp:
        study.directory, study.name = Path(tmp) / "study", name or ds.name
        result = _run(study, max_batch, max_memory_mb, progress, t0, log)
    result.directory = None
    return result


def _run(
    study: Study,
    max_batch: int | None,
    max_memory_mb: float,
    progress: bool,
    t0: float,
    log: LogSpec = None,
) -> SweepResult:
    return run_study(
        study,
        max_batch=max_batch,
        max_memory_mb=max_memory_mb,
        progress=progress,
        t0=t0,
        log=log,
    )


def _listed(value: object) -> object:
    return list(value) if isinstance(value, (tuple, list)) else value


def _dataset(data: Data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        return load(data)
    if isinstance(data, Mapping):
        return from_splits(data)
    raise ValueError(
        f"data must map 'train', 'val', 'test' to Datasets or (X, y), or be a wdlab Dataset or "
        f"a source name; got {type(data).__name__}"
    )


def _spec(model: Model, ds: Dataset) -> tuple[ModelSpec, str]:
    """The ModelSpec for ``model``, sized to the data, and how to name the model."""
    sizes = {"in_dim": ds.in_dim, "out_dim": ds.out_dim, "in_shape": ds.in_shape}
    if isinstance(model, ModelSpec):
        return model, model.describe()
    if isinstance(model, str):
        return ModelSpec(model, **sizes), model
    if not callable(model):
        raise ValueError(f"model must be a factory, a ModelSpec or a model kind, got {model!r}")
    label = getattr(model, "__qualname__", type(model).__name__)
    takes_seed = _positional(model) >= 1

    def factory(seed: int | None = None) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed or 0)
            return call_factory(model, label, *([seed or 0] if takes_seed else []))

    return ModelSpec("custom", factory=factory, **sizes), label


def _positional(fn: Callable[..., object]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 0
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds and p.default is p.empty for p in params)


def _describe(
    config: dict, model: str, ds: Dataset, loss: object, metric: object, task: object
) -> dict[str, Any]:
    """The study's config as stored: the grid and training keys, and names and fingerprints of
    the Python objects (a changed model, data, loss or metric is another study)."""
    digest = hashlib.sha256()
    for split, (X, y) in ds.splits().items():
        digest.update(split.encode())
        digest.update(X.detach().cpu().float().numpy().tobytes())
        digest.update(y.detach().cpu().numpy().tobytes())
    name = lambda f: getattr(f, "__qualname__", getattr(f, "name", repr(f)))  # noqa: E731
    return {
        "model": {"factory": model},
        "data": {"name": ds.name, "fingerprint": digest.hexdigest()[:16], "shape": ds.in_shape},
        "train": config["train"] | {"loss": name(loss) if loss else None},
        "decay": config["decay"] | {"metric": name(metric) if metric else None},
    }
