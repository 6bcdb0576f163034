"""A user's own data: torch Datasets, DataLoaders or tensors, split by split, read into memory.

``from_splits({"train": ..., "val": ..., "test": ...})`` reads each split once into memory (a
sweep trains every configuration on the same mini-batches, drawn from these tensors by a seeded
permutation: each mini-batch is loaded once and used by every configuration of a batch). A split
may be a map-style ``torch.utils.data.Dataset`` whose items are ``(x, y)``, an
``IterableDataset``, a ``DataLoader`` or an ``(X, y)`` pair of tensors or arrays. Datasets and
DataLoaders are read through :mod:`wdlab.data.stream`: every example once, in a fixed order,
under a random state seeded from ``seed`` (a Dataset that draws a random transform gives the
same tensors, and the study the same fingerprint, whatever the caller's RNG did before), with a
progress bar when ``progress`` is set. The 8 GiB limit is checked from a sample of each split
before the full read. :func:`wdlab.data.stream_splits` streams the splits instead (fresh
augmentation each epoch, memory independent of the data's size).

Without a validation split, one is drawn from the training rows (seeded, 20%) and the data
facts say so: weight decay is never chosen on test. Floating inputs become float32; integer
inputs stay integer (token ids). Targets of an integer dtype are classes (multiclass:
cross-entropy over the model's outputs; labels 0..n−1, a negative one is refused); floating
targets are regression (MSE), unless ``task`` says otherwise. Targets of shape ``(n, 1)`` are
one target per example, as ``(n,)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from wdlab.data.arrays import as_targets, check_labels, check_pair, nonempty, one_target_column
from wdlab.data.batches import Layout, as_inputs, parts
from wdlab.data.dataset import Dataset
from wdlab.data.loaders import LoaderFactory, every_split, unused_batch_size
from wdlab.data.stream import Stream
from wdlab.data.streamed import (
    StreamedData,
    TensorSource,
    check_keys,
    held,
    items,
    sample,
    source,
    stream_splits,
)
from wdlab.data.tables import is_table_path
from wdlab.devices import gib
from wdlab.errors import gist
from wdlab.loading import load_callable
from wdlab.tasks import TASKS
from wdlab.usercode import a_type

MAX_BYTES = 8 << 30  # refuse to read more than 8 GiB of inputs into memory
READ_BATCH = 256  # examples per batch while a Dataset is read
Pair = tuple[Tensor, Tensor]


def _sources(splits: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Each split as a source of batches, its inputs checked to be one tensor and the whole
    data's size checked against ``MAX_BYTES`` from a sample, before anything is read in full."""
    kw = {"batch_size": READ_BATCH, "seed": seed, "num_workers": 0, "pin": False}
    sources = {k: source(k, v, **kw) for k, v in splits.items()}
    total = 0.0
    for k, src in sources.items():
        x, _ = sample(k, src, seed, count=1)
        if not isinstance(x, Tensor):
            raise ValueError(
                f"data[{k!r}]: inputs are {Layout.of(x)}; a model with several inputs trains "
                "from streams (wdlab.sweep streams them; wdlab.data.stream_splits)"
            )
        n = items(src)
        if n is not None and len(x):
            total += n * as_inputs(x)[:1].nbytes
    if total > MAX_BYTES:
        raise ValueError(f"the inputs take {gib(total)} in memory; wdlab reads at most 8 GiB")
    return sources


def _read(split: str, src: Any, seed: int, progress: bool, room: float) -> Pair:
    """(X, y) of one split, every example once in a fixed order; ``room``: bytes left. With a
    known length the tensors are allocated once and filled (peak: the split plus one batch)."""
    if isinstance(src, TensorSource):  # checked (before float64 is rounded to float32)
        return as_inputs(src.X), src.y  # type: ignore[return-value]
    n = items(src)
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    used = at = 0
    for x, y in Stream(split, src, seed=seed, progress=progress).evaluation():
        used += sum(p.nbytes for p in parts(x))
        if used > room:
            raise ValueError(f"data[{split!r}] takes more than {gib(room)} more in memory")
        if n is None:
            xs.append(x)
            ys.append(y)
            continue
        if not xs:
            xs, ys = [x.new_empty((n, *x.shape[1:]))], [y.new_empty((n, *y.shape[1:]))]
        if at + len(y) > n or x.shape[1:] != xs[0].shape[1:]:
            raise ValueError(f"data[{split!r}]: its batches disagree with its len() of {n}")
        xs[0][at : at + len(y)], ys[0][at : at + len(y)] = x, y
        at += len(y)
    return (xs[0][:at], ys[0][:at]) if n is not None else (torch.cat(xs), torch.cat(ys))


def _pairs(splits: Mapping[str, Any], seed: int, progress: bool) -> dict[str, Pair]:
    """Every split read into memory, within ``MAX_BYTES`` in all."""
    sources = _sources(splits, seed)
    pairs, used = {}, 0
    for k, src in sources.items():
        pairs[k] = _read(k, src, seed, progress, MAX_BYTES - used)
        used += pairs[k][0].nbytes
    return pairs


def from_splits(
    splits: Mapping[str, Any] | LoaderFactory,
    *,
    task: str | None = None,
    name: str = "data",
    seed: int = 0,
    progress: bool = False,
) -> Dataset:
    """A Dataset from the user's train / val / test splits (see the module docstring).

    One ``make_loader(split, seed, epoch)`` is the factory of every split."""
    splits = every_split(splits)
    check_keys(splits)
    pairs = _pairs(splits, seed, progress)
    for k, (X, y) in pairs.items():  # NaN, inf or beyond float32: refused, never trained on
        check_pair(f"data[{k!r}]", (X, nonempty(k, y)))
    facts: dict[str, Any] = {}
    if "val" not in pairs:
        X, y = pairs["train"]
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        cut = max(1, len(y) // 5)
        pairs["val"], pairs["train"] = (
            (X[perm[:cut]], y[perm[:cut]]),
            (X[perm[cut:]], y[perm[cut:]]),
        )
        facts["val"] = f"20% of the training rows (seed {seed}): no validation split was given"
    shapes = {k: tuple(X.shape[1:]) for k, (X, _) in pairs.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"the splits' inputs differ in shape: {shapes}")
    y_train = pairs["train"][1]
    task = task or ("regression" if y_train.is_floating_point() else "multiclass")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    dtype = torch.long if task == "multiclass" else torch.float32
    ys = {k: as_targets(f"data[{k!r}]", one_target_column(y), dtype) for k, (_, y) in pairs.items()}
    n_classes = int(max(int(y.max()) for y in ys.values()) + 1) if task == "multiclass" else 1
    for k, y in ys.items() if task == "multiclass" else ():  # classes are numbered from 0
        check_labels(f"data[{k!r}]", y, n_classes, f"{n_classes} classes, numbered from 0")
    for k, y in ys.items() if task == "binary" else ():  # a 0/1 label or a probability
        check_labels(f"data[{k!r}]", y, 2)
    return Dataset(
        name=name,
        task=task,
        X_train=pairs["train"][0],
        y_train=ys["train"],
        X_val=pairs["val"][0],
        y_val=ys["val"],
        X_test=pairs["test"][0],
        y_test=ys["test"],
        n_classes=n_classes,
        meta=facts | {f"n_{k}": len(y) for k, y in ys.items()},
    )


def is_data_function(name: object) -> bool:
    """Whether a data source names a function (``file.py:make_data``, ``module:make_data``)."""
    return isinstance(name, str) and ":" in name and not is_table_path(name)


def from_function(
    target: str,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
    task: str | None = None,
    count_classes: bool = True,
) -> Dataset | StreamedData:
    """The splits ``make_data()`` returns, held in memory or streamed.

    ``target`` is ``file.py:make_data``, loaded with its folder first on ``sys.path``. ``(X, y)``
    tensors are held in memory; Datasets, DataLoaders, factories are streamed
    (:func:`stream_splits`, ``batch_size`` for bare Datasets, ``count_classes`` as there). What
    the function raises, or returns that is not a mapping of splits, is one ``ValueError`` line."""
    splits = function_splits(target)
    name = target.rpartition(":")[2]
    unused_batch_size(splits, batch_size)  # given (train.batch_size, --batch-size): said
    if held(splits):
        return from_splits(splits, task=task, name=name, seed=seed, progress=progress)
    return stream_splits(
        splits, batch_size=batch_size, seed=seed, task=task, name=name, progress=progress,
        count_classes=count_classes,
    )  # fmt: skip


def _takes_nothing(make: Any, target: str) -> None:
    """A data function that needs arguments (``make_loader(split, seed, epoch)`` given as the
    data function itself) is one ``ValueError`` line saying what ``--data`` calls."""
    try:
        needed = [
            n
            for n, p in inspect.signature(make).parameters.items()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    except (TypeError, ValueError):  # no signature (a builtin): calling it says
        return
    if needed:
        raise ValueError(
            f"data function {target!r} takes arguments ({', '.join(needed)}), and it is called "
            "with none: give a make_data() that returns the splits, or returns your "
            "make_loader(split, seed, epoch) (the factory of every split)"
        )


def function_splits(target: str) -> Mapping[str, Any]:
    """What ``make_data()`` returns (``target``: ``file.py:make_data``, loaded with its folder
    first on ``sys.path``), as splits; what it raises, or returns that is not a mapping of
    splits, is one ``ValueError`` line."""
    make = load_callable(target, "data function ")
    _takes_nothing(make, target)
    try:
        splits = make()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # user code: one line, whatever it raised
        raise ValueError(f"data function {target!r} raised {gist(exc)}") from None
    splits = every_split(splits, f"what data function {target!r} returned")
    if not isinstance(splits, Mapping):
        raise ValueError(
            f"data function {target!r} returned {a_type(splits)}; it must return "
            "{'train': ..., 'val': ..., 'test': ...} (Datasets, DataLoaders, factories or "
            "(X, y) tensors) or one make_loader(split, seed, epoch), the factory of every split"
        )
    return splits
