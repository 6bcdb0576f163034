"""A user's splits as streams, with the data facts the trainer needs before its first step.

``stream_splits({"train": ..., "val": ..., "test": ...})``: each split is a map-style Dataset of
``(x, y)``, an ``IterableDataset``, a ``DataLoader``, a factory ``make_loader(split, seed,
epoch)`` or an ``(X, y)`` pair of tensors (the in-memory fast path); see :mod:`wdlab.data.stream`
for how each is iterated. The facts, without a full read:

* **Inputs and task.** The inputs' structure (a tensor, a tuple or a dict; each part's shape and
  dtype) and the targets' dtype come from a few examples of each split, read under a seeded
  random state. Integer targets are classes, floating ones regression, unless ``task`` says.
* **Classes.** ``n_classes`` when given; else what a dataset declares without reading an
  example (``TensorDataset``'s targets, the ``targets`` or ``classes`` attribute of
  torchvision's datasets, through ``Subset`` and ``ConcatDataset``); else one pass over that
  split's batches, shown with a progress bar (the only full read; ``n_classes=`` skips it).
  With a count (not the model's output width), every batch's labels are checked on the host,
  before the copy: a label out of range is a one-line error, not a CUDA device assert.
* **Fingerprint** (the data's part of the study's identity): a hash of each split's kind and
  settings (dataset type, length, batch size, ``drop_last``, sampler, ``collate_fn``, workers:
  all change the batches) and of up to 32 examples (the first, the rest at seeded positions),
  read under a seeded random state: the same data, the same fingerprint, whatever the caller's
  RNG did before, for 32 reads per split; two datasets that agree on all that but differ
  elsewhere share it. Tensors, and a ``TensorDataset``'s (under ``Subset`` too), are hashed
  whole (:mod:`wdlab.data.fingerprints`).

Without a validation split, 20% of the training rows (as ``from_splits`` picks them) become one:
a map-style training set is split by ``Subset`` (its transforms apply to them); an
``IterableDataset``, a factory or a DataLoader with a sampler of its own needs ``data['val']``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, IterableDataset, Subset, TensorDataset

from wdlab.data.arrays import as_targets, check_labels, check_pair, nonempty, one_target_column
from wdlab.data.batches import Batch, Inputs, Layout, apply, as_inputs, batch_of, pair, rows
from wdlab.data.dataset import target_width
from wdlab.data.fingerprints import fingerprint
from wdlab.data.loaders import (
    FactorySource,
    LoaderFactory,
    LoaderSource,
    every_split,
    over,
    warn_about_order,
    wrap,
)
from wdlab.data.seeds import GlobalRandom, derive
from wdlab.data.stream import Stream, TensorStream, raised
from wdlab.tasks import TASKS

SAMPLE = 32  # examples per split read for the facts and the fingerprint
SPLITS = ("train", "val", "test")


@dataclass
class StreamedData:
    """A user's splits as streams (``streams``: one per split) with the facts known up front."""

    name: str
    task: str
    n_classes: int
    layout: Layout
    streams: dict[str, Stream | TensorStream]
    fingerprint: str
    example: Inputs  # one training example, batch dimension 1, on the host (float32 floats)
    meta: dict = field(default_factory=dict)
    probe: Batch | None = None  # the training sample the facts were read from (host, checked)
    others: dict = field(default_factory=dict)  # val's and test's first example, as ``example``

    def to(self, device: torch.device | str) -> StreamedData:
        """A copy whose streams give their batches on ``device``."""
        streams = {k: s.to(device) for k, s in self.streams.items()}
        return replace(self, streams=streams, meta=dict(self.meta))

    def with_classes(self, n_classes: int, why: str = "") -> StreamedData:
        """A copy with ``n_classes`` classes, every batch's labels checked against it (for
        data whose classes were not counted: ``stream_splits(count_classes=False)``)."""
        if self.probe is not None and self.probe[1].numel():
            top = int(self.probe[1].max())
            if top >= n_classes or int(self.probe[1].min()) < 0:
                raise ValueError(
                    f"data['train']: label {top} is outside 0..{n_classes - 1} "
                    f"({n_classes} class{'es' * (n_classes != 1)})"
                )
        streams = {k: s.with_classes(n_classes, why) for k, s in self.streams.items()}
        return replace(self, n_classes=n_classes, streams=streams, meta=dict(self.meta))

    @property
    def in_shape(self) -> tuple[int, ...]:
        """One example's shape (inputs that are one tensor)."""
        return self.layout.in_shape

    @property
    def in_dim(self) -> int:
        """Number of input values per example (inputs that are one tensor)."""
        return int(math.prod(self.in_shape))

    @property
    def out_dim(self) -> int:
        """Model outputs: the class count for multiclass, else the targets per example (1)."""
        y = self.probe[1] if self.probe is not None else None  # the sample read
        return self.n_classes if self.task == "multiclass" else target_width(y)

    def __repr__(self) -> str:
        classes = f", {self.n_classes} classes" if self.task == "multiclass" else ""
        splits = ", ".join(f"{k} {self.meta.get(f'n_{k}', '?')}" for k in self.streams)
        return f"StreamedData({self.name!r}: {self.task}{classes}, {self.layout}, rows {splits})"


class TensorSource:
    """A split given as tensors ``(X, y)``: ``X`` a tensor, a tuple or a dict of tensors."""

    dataset = None

    def __init__(self, split: str, X: Inputs, y: Tensor) -> None:
        self.split, self.X, self.y = split, X, y

    def rows(self, idx: Tensor, split: str) -> TensorSource:
        """Rows ``idx`` of this split, as split ``split``."""
        return TensorSource(split, apply(lambda t: t[idx], self.X), self.y[idx])

    def describe(self) -> dict[str, Any]:
        """Its kind (for the fingerprint; the tensors are hashed whole)."""
        return {"tensors": Layout.of(self.X).describe()}


Source = TensorSource | LoaderSource | FactorySource


def check_keys(splits: Mapping[str, Any]) -> None:
    """A one-line ``ValueError`` unless ``splits`` maps train and test (and maybe val)."""
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or "train" not in splits or "test" not in splits:
        raise ValueError(
            "data must map 'train' and 'test' (and optionally 'val') to Datasets or (X, y); "
            f"got keys {sorted(splits)}"
        )


def is_pair(obj: object) -> bool:
    """Whether a split is given as tensors ``(X, y)`` (else: examples, a Dataset or a loader)."""
    tensorlike = (Tensor, np.ndarray)
    return (
        isinstance(obj, tuple | list)
        and len(obj) == 2
        and isinstance(obj[1], tensorlike)
        and isinstance(obj[0], (*tensorlike, tuple, list, dict))
    )


def held(splits: Mapping[str, Any]) -> bool:
    """Whether every split is an ``(X, y)`` pair with ``X`` one tensor or array: such data is
    held in memory (:func:`wdlab.data.from_splits`, the fast path); anything else streams."""
    return all(is_pair(v) and isinstance(v[0], (Tensor, np.ndarray)) for v in splits.values())


def tensors(split: str, obj: tuple[Any, Any]) -> TensorSource:
    """A checked :class:`TensorSource` from a non-empty ``(X, y)`` pair of tensors or arrays."""
    x, y = check_pair(f"data[{split!r}]", batch_of(obj, f"data[{split!r}]"))
    return TensorSource(split, x, one_target_column(nonempty(split, y)))


def source(
    split: str, obj: object, *, batch_size: int | None, seed: int, num_workers: int, pin: bool
) -> Source:
    """What split ``split`` is, as a source of batches; a ``ValueError`` for anything else."""
    if is_pair(obj):
        return tensors(split, obj)  # type: ignore[arg-type]
    inner = obj.dataset if isinstance(obj, DataLoader) else obj  # a DataLoader's, too
    if not isinstance(inner, IterableDataset) and hasattr(inner, "__len__") and not len(inner):
        raise ValueError(f"data: the {split} split is empty")
    if isinstance(obj, DataLoader):
        return LoaderSource(split, obj, seed, pin)
    dataset = isinstance(obj, IterableDataset) or (
        hasattr(obj, "__getitem__") and hasattr(obj, "__len__")
    )
    if dataset and not batch_size:  # None or 0: the full batch
        raise ValueError(
            f"data[{split!r}] is a Dataset ({type(obj).__name__}) and the batch size is the full "
            "batch (batch_size None or 0, --batch-size 0), which a stream cannot hold: give a "
            "positive batch size (batch_size=, --batch-size) or a DataLoader"
        )
    if isinstance(obj, IterableDataset):
        return LoaderSource(split, wrap(obj, batch_size, num_workers), seed, pin)
    if dataset:
        return LoaderSource(split, wrap(obj, batch_size, num_workers), seed, pin)
    if callable(obj):
        return FactorySource(split, obj, seed)  # type: ignore[arg-type]
    raise ValueError(
        f"data[{split!r}]: expected a map-style Dataset of (x, y), an IterableDataset, a "
        f"DataLoader, a make_loader(split, seed, epoch) or an (X, y) pair, got {type(obj).__name__}"
    )


def _map_style(src: Source) -> bool:
    return isinstance(src, LoaderSource) and not isinstance(src.dataset, IterableDataset)


def split_off_val(train: Source, seed: int, pin: bool) -> tuple[Source, Source]:
    """(train, val): 20% of the training rows at seeded positions become the validation split."""
    if isinstance(train, TensorSource):
        n = len(train.y)
    elif _map_style(train):
        n = len(train.dataset)
    else:
        raise ValueError(
            "data['val'] is needed: an IterableDataset or a make_loader factory cannot lend 20% "
            "of its rows to validation"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, n // 5)
    if isinstance(train, TensorSource):
        return train.rows(perm[cut:], "train"), train.rows(perm[:cut], "val")
    assert isinstance(train, LoaderSource)
    ds, t = train.dataset, train.template
    rest = LoaderSource("train", over(t, Subset(ds, perm[cut:].tolist())), seed, pin)
    val = LoaderSource("val", over(t, Subset(ds, perm[:cut].tolist())), seed, pin)
    return rest, val


# -- facts ----------------------------------------------------------------------------------------


def sample(split: str, src: Source, seed: int, count: int = SAMPLE) -> Batch:
    """Up to ``count`` examples of a split (the first and others at seeded positions) as one
    checked batch on the host, read under a seeded random state; tensors: the whole split."""
    if isinstance(src, TensorSource):
        return src.X, src.y
    rng = GlobalRandom(derive(seed, split, "sample"))
    if _map_style(src) and src.template.batch_size is not None:
        g, ds = torch.Generator().manual_seed(derive(seed, split, "positions")), src.dataset
        rest = (torch.randperm(len(ds) - 1, generator=g)[: count - 1] + 1).tolist()
        picked = [0, *sorted(rest)]
        with rng.active():
            items = [pair(_item(ds, i, split), f"data[{split!r}] item {i}") for i in picked]
            with _user_errors(f"data[{split!r}]: its collate_fn"):
                raw = src.template.collate_fn(items)
        x, y = batch_of(raw, f"data[{split!r}]: the collate_fn's batch")
        row = "row {} of the sample" if rows(x) != len(picked) else lambda r: f"item {picked[r]}"
        return check_pair(f"data[{split!r}] ({len(picked)} items read first)", (x, y), row, False)
    # an IterableDataset, a factory, a sampler of batches: its first batch
    with rng.active(), _user_errors(f"data[{split!r}] batch 0"):
        raw = next(iter(src.build(None)), None)
    if raw is None:
        raise ValueError(f"data[{split!r}] gave no batches")
    where = f"data[{split!r}] batch 0"
    return check_pair(where, batch_of(raw, where), "row {} of that batch", targets=False)


@contextmanager
def _user_errors(what: str) -> Iterator[None]:
    """What the user's code raises inside (a collate_fn stacking items of different shapes, a
    loader's worker) as one ``ValueError`` line naming ``what``; a ``ValueError`` as it is."""
    try:
        yield
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"{what} raised {raised(exc)}") from None


def _item(ds: Any, i: int, split: str) -> Any:
    """``ds[i]``; what the user's ``__getitem__`` raises is one ``ValueError`` line naming it."""
    try:
        return ds[i]
    except Exception as exc:
        raise ValueError(f"data[{split!r}][{i}] raised {raised(exc)}") from None


def declared_classes(dataset: object) -> int | None:
    """The class count a dataset declares without reading an example, if it does."""
    if isinstance(dataset, Subset):
        return declared_classes(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        counts = [declared_classes(d) for d in dataset.datasets]
        return None if None in counts else max(counts)  # type: ignore[type-var]
    if isinstance(dataset, TensorDataset):
        return _label_count(dataset.tensors[-1])
    if isinstance(dataset, TensorSource):
        return _label_count(dataset.y)
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        try:
            return _label_count(torch.as_tensor(np.asarray(targets)))
        except (TypeError, ValueError, RuntimeError):  # not numbers: count them instead
            return None
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, list | tuple) and classes:
        return len(classes)
    return None


def _label_count(y: Tensor) -> int | None:
    counted = not (y.is_floating_point() or y.is_complex()) and y.numel() > 0
    return int(y.max()) + 1 if counted else None


def count_classes(split: str, src: Source, seed: int, progress: bool) -> int:
    """Classes in a split: declared, else one pass over its batches (max label + 1)."""
    declared = declared_classes(src if isinstance(src, TensorSource) else src.dataset)
    if declared is not None:
        return declared
    assert not isinstance(src, TensorSource)
    top = -1
    for _, y in Stream(split, src, seed=seed, progress=progress).evaluation():
        top = max(top, int(y.max()) if y.numel() else -1)
    return top + 1


def items(src: Source) -> int | None:
    """Examples in a split, when known without reading it."""
    if isinstance(src, TensorSource):
        return len(src.y)
    try:
        return len(src.dataset)  # type: ignore[arg-type]
    except TypeError:
        return None


# -- the entry point ------------------------------------------------------------------------------


def stream_splits(
    splits: Mapping[str, Any] | LoaderFactory,
    *,
    batch_size: int | None = 128,
    seed: int = 0,
    task: str | None = None,
    n_classes: int | None = None,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    name: str = "data",
    progress: bool = False,
    count_classes: bool = True,
) -> StreamedData:
    """The splits as streams on ``device``, with their facts (see the module docstring).

    ``batch_size`` and ``num_workers`` apply to splits given as Datasets (a DataLoader keeps
    its own); ``seed`` seeds every stream; ``progress`` shows a bar while a split is read.
    ``count_classes=False``: classes that are neither given nor declared are left at 0
    (unknown) rather than counted by a full pass; :meth:`StreamedData.with_classes` sets them.
    ``splits`` may be one ``make_loader(split, seed, epoch)``: the factory of every split.
    """
    splits = every_split(splits)
    check_keys(splits)
    train = splits["train"]
    if isinstance(train, DataLoader):
        warn_about_order(train, seed)
    dev = torch.device(device)
    pin = dev.type == "cuda"
    kw = {"batch_size": batch_size, "seed": seed, "num_workers": num_workers, "pin": pin}
    sources = {k: source(k, splits[k], **kw) for k in SPLITS if k in splits}
    meta: dict[str, Any] = {}
    if "val" not in sources:
        sources["train"], sources["val"] = split_off_val(sources["train"], seed, pin)
        meta["val"] = f"20% of the training rows (seed {seed}): no validation split was given"
    sources = {k: sources[k] for k in SPLITS}
    samples = {k: sample(k, s, seed) for k, s in sources.items()}
    layout = Layout.of(samples["train"][0])
    for k, (x, _) in samples.items():
        layout.check(x, f"data[{k!r}]", "train")
    task = task or ("regression" if samples["train"][1].is_floating_point() else "multiclass")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    targets = torch.long if task == "multiclass" else torch.float32
    ys = {k: as_targets(f"data[{k!r}]", s[1], targets) for k, s in samples.items()}
    classes = (
        _classes(sources, n_classes, seed, progress, count_classes) if task == "multiclass" else 1
    )
    inputs = {k: as_inputs(s[0]) for k, s in samples.items()}
    layout = Layout.of(inputs["train"])
    checked = 2 if task == "binary" else classes if task == "multiclass" and classes else None
    streams = {
        k: _stream(s, dev, layout, targets, checked, batch_size, seed, progress)
        for k, s in sources.items()
    }
    meta |= {f"n_{k}": items(s) for k, s in sources.items()}
    digest = fingerprint(sources, samples, {k: items(s) for k, s in sources.items()})
    first = {k: apply(lambda t: t[:1], x) for k, x in inputs.items()}
    others = {k: first.pop(k) for k in ("val", "test")}
    probe = (inputs["train"], ys["train"])
    return StreamedData(
        name, task, classes, layout, streams, digest, first["train"], meta, probe, others
    )


def _classes(
    sources: Mapping[str, Source], given: int | None, seed: int, progress: bool, count: bool
) -> int:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise ValueError(f"n_classes must be a positive integer, got {given!r}")
        return given
    if not count:
        declared = [
            declared_classes(s if isinstance(s, TensorSource) else s.dataset)
            for s in sources.values()
        ]
        return 0 if None in declared else max(declared)  # type: ignore[type-var]
    return max(count_classes(k, s, seed, progress) for k, s in sources.items())


def _stream(
    src: Source,
    device: torch.device,
    layout: Layout,
    targets: torch.dtype,
    n_classes: int | None,
    batch_size: int | None,
    seed: int,
    progress: bool,
) -> Stream | TensorStream:
    if isinstance(src, TensorSource):
        y = src.y.to(targets)  # whole numbers: checked as its sample (the whole split) was
        if n_classes:
            check_labels(f"data[{src.split!r}]", y, n_classes, f"{n_classes} classes")
        return TensorStream(src.split, src.X, y, batch_size=batch_size, seed=seed, device=device)
    return Stream(
        src.split,
        src,
        seed=seed,
        device=device,
        layout=layout,
        targets=targets,
        n_classes=n_classes,
        progress=progress,
    )
