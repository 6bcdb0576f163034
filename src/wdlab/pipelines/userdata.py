"""A user's data in a sweep: splits streamed or held, the facts a model spec and a study's
identity take from them (sizes, fingerprint), and the classes of streamed data found without
a full read where the model can tell."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from wdlab.data import Dataset, Stream, StreamedData, TensorStream, stream_splits
from wdlab.data.arrays import check_labels
from wdlab.data.batches import Layout, call
from wdlab.data.stream import raised
from wdlab.data.streamed import count_classes
from wdlab.errors import gist
from wdlab.func import one_tensor
from wdlab.inputs import rows, shapes, take
from wdlab.models import ModelSpec, resolve_factory
from wdlab.tasks import TASKS
from wdlab.usercode import check_trainable
from wdlab.warn import warn_user

# how a streamed split's labels are read as one binary target (its logit), in Python and on the
# command line (wdlab.sweep has no task=: the data say their task)
BINARY_TASK = "the task binary: wdlab.data.stream_splits(splits, task='binary'), --task binary"


def streamed_splits(
    splits: Mapping[str, Any], batch_size: int | None, n_classes: int | None, progress: bool
) -> StreamedData:
    """:func:`wdlab.data.stream_splits` for a sweep (the data seed 0); the classes are left
    unknown when they would need a full read (:func:`with_classes` finds them)."""
    if batch_size is None:
        raise ValueError(
            "batch_size=None (full batch) needs the splits as (X, y) tensors; give a batch "
            "size for Datasets and DataLoaders"
        )
    return stream_splits(
        splits, batch_size=batch_size, n_classes=n_classes, progress=progress, count_classes=False
    )


def declared(ds: Dataset | StreamedData, n_classes: int | None) -> Dataset | StreamedData:
    """Classes held in memory with ``n_classes`` declared: every split's labels checked
    against it (one ``ValueError`` line naming the split and the label), and the count
    taken (classes absent from the data keep their outputs)."""
    if n_classes is None or not isinstance(ds, Dataset) or ds.task != "multiclass":
        return ds
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    for split, (_, y) in ds.splits().items():
        check_labels(f"data[{split!r}]", y, n_classes, f"n_classes={n_classes}")
    return replace(ds, n_classes=n_classes, meta=dict(ds.meta))


def with_classes(
    ds: Dataset | StreamedData, model: Any, timeout: float | None, resolve: Callable[..., Any]
) -> Any:
    """Streamed classification data whose classes are unknown: the model's output width (one
    build, one forward on the sample rows), unless the model needs the count to be built (a
    built-in kind, a factory with an ``out_dim`` parameter): then one counting pass.
    ``resolve(model, ds, timeout)`` gives the model's spec."""
    if not isinstance(ds, StreamedData) or ds.task != "multiclass" or ds.n_classes:
        return ds
    factory = _factory(model)
    if factory is None or "out_dim" in _parameters(factory):
        counted = max(
            count_classes(k, s.source, s.seed, s.progress)
            if isinstance(s, Stream)
            else int(s.y.max()) + 1
            for k, s in ds.streams.items()
        )
        return ds.with_classes(max(counted, 1))
    spec, _ = resolve(model, ds, timeout)
    model, x = spec.build(0).eval(), ds.probe[0] if ds.probe else ds.example
    try:
        with torch.no_grad():
            out = one_tensor(call(model, x))  # (a tuple or a dict: what to return instead)
    except Exception as exc:  # the user's module on the user's data: one line
        raise ValueError(f"the model fails on inputs of shape {shapes(x)}: {gist(exc)}") from None
    width = out.shape[-1] if out.dim() else 0
    if width < 1:
        raise ValueError(f"the model's outputs have shape {tuple(out.shape)}: no classes")
    labels = ds.probe[1] if ds.probe is not None else torch.zeros(0)
    if width == 1 and labels.numel() and not labels.is_floating_point() and int(labels.max()) == 1:
        raise ValueError(  # "label 1 is outside 0..0 (1 classes)" said it as the data's fault
            "the model outputs 1 value, and streamed labels are counted from the outputs (one "
            f"per class): 0/1 labels need 2 outputs (2-class cross-entropy), or {BINARY_TASK} "
            "to train the one output as their logit"
        )
    top = int(labels.max()) if labels.numel() and not labels.is_floating_point() else -1
    if top >= width:  # ("label 3 is outside 0..2" said it as the data's fault)
        raise ValueError(
            f"the model outputs {width} values, and streamed labels are counted from the outputs "
            f"(one per class): data['train'] has label {top}, so the model's last layer needs "
            f"{top + 1} outputs or more (or give the classes: n_classes=, a dataset's classes)"
        )
    why = f"the classes counted from the model's {width} outputs: it needs more, or n_classes="
    return ds.with_classes(int(width), why)


def _factory(model: Any) -> Callable[..., Any] | None:
    """The user's factory ``model`` is or names (``file.py:make``, as ``wdlab sweep --model``
    gives it); None for a built-in kind or a ModelSpec."""
    if isinstance(model, str) and ":" in model:
        return resolve_factory(model)
    return model if callable(model) and not isinstance(model, ModelSpec) else None


def fit_outputs(
    model: nn.Module, ds: Dataset | StreamedData, train_kwargs: dict[str, Any]
) -> tuple[Dataset | StreamedData, dict[str, Any]]:
    """The data and the trainer's keywords as ``model``'s outputs fit them, checked before
    anything is stored: one logit per class (fewer is one ``ValueError`` line naming the
    label, more a warning), one output per regression target, and for two classes (a binary
    target, or 0/1 class labels) 1 output, its logit (BCE), or 2 (2-class cross-entropy).
    With the user's loss only the accuracy is fitted (:func:`_fit_accuracy`); the model must
    run on every streamed split's first example (:func:`_check_other_splits`). Unchecked where
    the model is a built-in kind (sized to the data) and where one forward fails (the memory
    estimate says why)."""
    check_trainable(model)
    task = train_kwargs.get("task")
    own_loss = task is not None and task.loss_grad is None  # the user's loss reads the outputs
    width = _output_width(model, ds, own_loss)
    if width is None:
        return ds, train_kwargs
    _check_other_splits(model, ds)
    said = f"the model outputs {width} value{'s' if width > 1 else ''}"
    if own_loss:
        _say_zero_one_targets(ds, task)
        return ds, _fit_accuracy(said, width, ds, train_kwargs)
    held = isinstance(ds, Dataset)
    if ds.task == "multiclass" and width == 1 and ds.n_classes == 2 and held:
        return _retarget(ds, train_kwargs, "binary")
    if ds.task == "multiclass":
        _fit_classes(said, width, ds)
    elif ds.task == "binary" and width == 2 and held:
        return _retarget(ds, train_kwargs, "multiclass")
    elif ds.task == "binary" and width != 1:
        how = "" if held else "; or give task multiclass (--task multiclass)"
        raise ValueError(
            f"{said}; the data have a binary target: 1 output (its logit), or 2 (2-class "
            f"cross-entropy){how}"
        )
    elif ds.task == "regression":
        targets = ds.out_dim  # per example, from the training targets (or their sample)
        if width == targets:
            _say_zero_one_regression(ds)
        else:
            plural = "s" if targets > 1 else ""
            raise ValueError(
                f"{said}; the data have {targets} target{plural} per example: the model's "
                f"last layer must have {targets} output{plural}{_labels_hint(ds, width)}"
            )
    return ds, train_kwargs


def _labels_hint(ds: Dataset | StreamedData, width: int) -> str:
    """Where float targets hold the class numbers 0..width-1 (a regression by their type): how
    to give them as classes."""
    y = ds.y_train if isinstance(ds, Dataset) else None
    if y is None or width < 2 or y.dim() != 1 or not y.numel():
        return ""
    if not (bool((y == y.round()).all()) and float(y.min()) >= 0 and float(y.max()) < width):
        return ""
    return (
        "; or, if these float targets are class labels (whole numbers 0 to "
        f"{int(y.max())}), give them as integers (y.long()): floats are regression targets"
    )


def _fit_accuracy(
    said: str, width: int, ds: Dataset | StreamedData, train_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """With the user's loss, accuracy (where it is the metric) reads the outputs as it would
    with the data's own loss: one output for two classes as its logit (> 0: class 1), else
    one logit per class; fewer outputs than classes would never predict the classes beyond
    them, and are one ``ValueError`` line."""
    task, n = train_kwargs["task"], ds.n_classes
    if ds.task != "multiclass" or task.eval_metrics is not TASKS["multiclass"].eval_metrics:
        return train_kwargs
    if width == 1 and n == 2:
        return {**train_kwargs, "task": replace(task, eval_metrics=TASKS["binary"].eval_metrics)}
    if width < n:
        raise ValueError(
            f"{said}; accuracy over the data's {n} classes reads one output per class (the "
            f"largest is the prediction): give the model {n} outputs, or a metric= "
            "(wdlab.Metric) that reads yours"
        )
    return train_kwargs


def _say_zero_one_targets(ds: Dataset | StreamedData, task: Any) -> None:
    """One warning where the user's loss meets float targets that are all 0 or 1 (multi-label,
    read as regression): weight decay would be chosen on the RMSE of the raw outputs."""
    held = isinstance(ds, Dataset)
    y = ds.y_train if held else ds.probe[1] if ds.probe else None
    if ds.task != "regression" or task.loss_metrics is None or y is None or not y.numel():
        return
    if bool(((y == 0) | (y == 1)).all()):
        warn_user(
            "the targets are floats of 0 and 1 only (multi-label?) and loss= is your own: they "
            "are read as regression, so weight decay is chosen on the validation RMSE of the "
            "raw outputs; give metric= (wdlab.Metric) that reads your outputs, or select='loss'"
        )


def check_last_batch(model: nn.Module, ds: Dataset | StreamedData, batch_size: int) -> None:
    """A one-line ``ValueError`` where the held training split's last mini-batch holds one
    example and the model has BatchNorm, which needs two in training (torch would stop the
    sweep at the end of the first epoch with its own message, naming no batch)."""
    n = len(ds.y_train) if isinstance(ds, Dataset) else 0
    norms = nn.modules.batchnorm._BatchNorm
    if not batch_size or n <= batch_size or n % batch_size != 1:
        return
    if any(isinstance(m, norms) and m.training for m in model.modules()):
        raise ValueError(
            f"data['train']: its last mini-batch holds 1 example ({n} = {n // batch_size} × "
            f"{batch_size} + 1), and the model's BatchNorm needs 2 or more in training: choose "
            "another batch_size, or give a DataLoader with drop_last=True"
        )


def _output_width(model: nn.Module, ds: Dataset | StreamedData, own_loss: bool) -> int | None:
    """The width of ``model``'s outputs on three training examples (fewer where fewer are at
    hand; a batch-mixing head of two outputs gives (2,) for two). None: not known, or outputs
    that are not one row per example, which only the user's ``loss`` may read; for wdlab's
    loss, n examples' outputs not in n rows are a ``ValueError`` naming their shape (one
    example's may be squeezed: ``squeeze()`` is common and harmless but on a last batch of
    one)."""
    if any(p.is_meta for p in model.parameters()):  # a built-in kind: sized to the data
        return None
    x = _first_examples(ds)
    out, n = eval_outputs(model, x), rows(x)
    if not isinstance(out, torch.Tensor) or out.dim() > 2:
        return None
    if out.dim() == 0 or out.shape[0] != n:
        if own_loss or n == 1:
            return None
        raise ValueError(  # (the loss said "size of tensor a (24) must match … b (8)")
            f"the model's outputs have shape {tuple(out.shape)} for {n} examples: the loss "
            "needs one row per example, (n, outputs) or (n,); a Flatten(0) or a view(-1) "
            "across the batch mixes the examples"
        )
    return 1 if out.dim() == 1 else int(out.shape[1])


def _first_examples(ds: Dataset | StreamedData) -> Any:
    """The first three training examples (the streamed sample's; its one example without)."""
    if isinstance(ds, Dataset):
        return take(ds.X_train, slice(0, 3))
    return take(ds.probe[0], slice(0, 3)) if ds.probe is not None else ds.example


def eval_outputs(model: nn.Module, x: Any) -> Any:
    """``model``'s outputs on inputs ``x`` in eval mode, without gradients, under torch's RNG
    seeded in a fork (its modes and the caller's RNG left as they were); None where the
    forward fails (the memory estimate runs it again and says why, in one line)."""
    try:
        return _eval_forward(model, x)
    except Exception:
        return None


def _eval_forward(model: nn.Module, x: Any) -> Any:
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)  # a forward that draws (noise in eval mode) draws the same
            return call(model.eval(), x)
    finally:
        for m, training in modes.items():
            m.training = training


def _check_other_splits(model: nn.Module, ds: Dataset | StreamedData) -> None:
    """A one-line ``ValueError`` where the model, which runs on a training example, fails on
    validation's or test's first example: streamed splits' shapes are not compared up front
    (sequences vary in length), so inputs of another width would fail at the first evaluation,
    deep in the model."""
    for split, x in ds.others.items() if isinstance(ds, StreamedData) else ():
        try:
            _eval_forward(model, x)
        except Exception as exc:  # the user's module on the user's data: one line
            raise ValueError(
                f"the model runs on data['train']'s inputs ({ds.layout}) but fails on "
                f"data[{split!r}]'s ({Layout.of(x)}): {raised(exc)}"
            ) from None


def _fit_classes(said: str, width: int, ds: Dataset | StreamedData) -> None:
    """Refuse a model with fewer outputs than the data's classes (naming a label beyond them);
    warn when it has more."""
    n = ds.n_classes
    if width > n:
        warn_user(
            f"{said}; the data have {n} classes (labels 0..{n - 1}): outputs {n}..{width - 1} "
            "are never a target (expected only where those classes exist but are absent here)"
        )
    if width >= n:
        return
    held = _held_labels(ds)
    top = int(held["train"].max()) if "train" in held else width
    beyond = next(((k, int(y.max())) for k, y in held.items() if y.max() >= width), None)
    if top < width and beyond is not None:  # the training labels fit, another split's do not
        split, bad = beyond
        raise ValueError(
            f"{said}, one per class; data[{split!r}] holds label {bad}, outside 0..{width - 1} "
            f"(the training labels are 0..{top})"
        )
    binary = width == 1 and n == 2  # streamed: 1 output trains as a logit as task binary
    logit = f" (or, for 1 output, {BINARY_TASK})" if binary else ""
    raise ValueError(
        f"{said}; the data have {n} classes (labels 0..{n - 1}): the model's last layer must "
        f"have {n} outputs{logit}"
    )


def _say_zero_one_regression(ds: Dataset | StreamedData) -> None:
    """One warning where float targets of 0 and 1 only train as regression with wdlab's loss
    (MSE, chosen on RMSE), although they read as a binary label."""
    y = ds.y_train if isinstance(ds, Dataset) else ds.probe[1] if ds.probe else None
    if y is None or not y.numel() or not bool(((y == 0) | (y == 1)).all()):
        return
    warn_user(
        "the targets are floats of 0 and 1 only: they train as regression (MSE; weight decay "
        "chosen on RMSE); for class labels give them as integers (y.long(); one-hot rows: "
        f"y.argmax(1)), or {BINARY_TASK}"
    )


def _held_labels(ds: Dataset | StreamedData) -> dict[str, torch.Tensor]:
    """The labels of each split held in memory, by split."""
    if isinstance(ds, Dataset):
        return {k: y for k, (_, y) in ds.splits().items()}
    return {k: s.y for k, s in ds.streams.items() if isinstance(s, TensorStream)}


def _retarget(
    ds: Dataset, train_kwargs: dict[str, Any], task_name: str
) -> tuple[Dataset, dict[str, Any]]:
    """Two classes as the model's outputs read them: 1 output, a binary target (its logit,
    BCE, float 0/1 labels); 2, 2-class cross-entropy (long labels). The user's metric, if
    any, stays."""
    cast = torch.Tensor.long if task_name == "multiclass" else torch.Tensor.float
    ys = {
        k: cast(getattr(ds, k))
        for k in ("y_train", "y_val", "y_test")
        if getattr(ds, k) is not None
    }
    two = replace(ds, task=task_name, n_classes=2, meta=dict(ds.meta), **ys)
    task = train_kwargs.get("task")
    if task is None:
        return two, train_kwargs
    to = TASKS[task_name]
    task = replace(task, name=to.name, loss_name=to.loss_name, loss=to.loss, loss_grad=to.loss_grad)
    return two, {**train_kwargs, "task": task}


def _parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def data_sizes(ds: Dataset | StreamedData, builtin: bool = False) -> dict[str, Any]:
    """``in_dim``, ``out_dim`` and ``in_shape`` of a model spec for ``ds`` (inputs that are
    several tensors: ``in_dim`` 0, ``in_shape`` empty; a built-in kind refuses them in one
    line)."""
    if isinstance(ds, StreamedData) and ds.layout.kind != "tensor":
        if builtin:
            ds.layout.in_shape  # noqa: B018 - the one-line refusal
        return {"in_dim": 0, "out_dim": ds.out_dim, "in_shape": ()}
    return {"in_dim": ds.in_dim, "out_dim": ds.out_dim, "in_shape": ds.in_shape}


def data_identity(ds: Dataset | StreamedData) -> dict[str, Any]:
    """The data's part of a study's identity: its name, fingerprint and shape (streams: the
    seeded-sample fingerprint of :func:`wdlab.data.stream_splits`; tensors: hashed whole)."""
    if isinstance(ds, StreamedData):
        return {"name": ds.name, "fingerprint": ds.fingerprint, "shape": str(ds.layout)}
    digest = hashlib.sha256()
    for split, (X, y) in ds.splits().items():
        digest.update(split.encode())
        digest.update(X.detach().cpu().float().numpy().tobytes())
        digest.update(y.detach().cpu().numpy().tobytes())
    return {"name": ds.name, "fingerprint": digest.hexdigest()[:16], "shape": ds.in_shape}


def stream_settings(data: object) -> dict[str, int]:
    """The batch size and seed of a StreamedData given as made (``{}`` for anything else).

    A sweep's and a search's own ``batch_size`` is not used there, so the study's identity and
    stored config take these; a DataLoader's batch sampler keeps no batch size (its settings
    are in the fingerprint). Splits a sweep streams itself are batched and seeded as it says."""
    if not isinstance(data, StreamedData):
        return {}
    train = data.streams["train"]
    said = {"seed": train.seed}
    if isinstance(train, TensorStream) or train.batch_size is not None:
        said["batch_size"] = train.batch_size or 0  # 0: the full batch
    return said


def data_seed(ds: Dataset | StreamedData) -> int:
    """The seed a Dataset was made with (``meta["seed"]``: wdlab's sources and tables; their
    split's), which a sweep's shuffle takes as ``--data-seed`` gives it to both; 0 for any
    other data (a user's tensors, streams: they are seeded by the stream's own seed)."""
    seed = ds.meta.get("seed", 0) if isinstance(ds, Dataset) else 0
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def data_fingerprint(ds: Dataset | StreamedData) -> str:
    """The data's fingerprint (see :func:`data_identity`)."""
    return data_identity(ds)["fingerprint"]
