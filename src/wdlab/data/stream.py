"""Streams: one split's mini-batches, produced afresh each epoch, seeded by wdlab.

The protocol the trainer consumes
---------------------------------
(Where a split's batches come from, a DataLoader rebuilt each epoch or a factory:
:mod:`wdlab.data.loaders`; the seeds and the random state held apart: :mod:`wdlab.data.seeds`.)

:func:`wdlab.data.stream_splits` gives a :class:`~wdlab.data.streamed.StreamedData`: the facts
known up front (task, classes, the inputs' :class:`~wdlab.data.batches.Layout`, lengths, a
fingerprint) and one stream per split, a :class:`Stream` or a :class:`TensorStream`.

* **A training step** gets one ``(x, y)`` from ``for x, y in stream.epoch(e)``: ``x`` a tensor, a
  tuple or a dict of tensors (``batches.model_args(x)`` gives the model's args and kwargs), float
  inputs float32 and integer inputs as they are; ``y`` long for classes, float32 otherwise; both
  already on the stream's device. The engine feeds that one batch to all K configurations of
  its batch: each mini-batch is read, collated and copied once per step, not K times.
* **Evaluation** iterates ``stream.evaluation()``: every example once (no ``drop_last``), in the
  same order and with the same random state every time, so the same weights give the same
  numbers. The engine keeps each batch's outputs (K, rows, out) and computes the loss and
  metrics once over the split (exact for any metric; outputs are far smaller than inputs), or
  weights each batch's mean by ``batches.rows(x)`` (for means only).
* **Devices.** ``StreamedData.to(device)`` gives the same streams with their batches on
  ``device``; a copy on another device gives the same batches.
* **Seeds.** Epoch ``e`` of a split depends only on ``(seed, split, e)``: the sampler's generator,
  the workers' seeds (a DataLoader seeds worker ``i`` with ``base_seed + i``, ``base_seed`` drawn
  from that generator) and the global random state (torch's CPU generator, Python's ``random``,
  NumPy's) that a Dataset's transforms draw from in the main process. The stream swaps that
  global state in around each read and out again (workers or not: a sampler draws in this
  process), so its batches do not depend on what the model draws between reads: a batch of K
  configurations and K runs of ``max_batch=1`` with the same seed see the same batches, and
  resuming at epoch ``e`` needs only ``e``.
* **A user's DataLoader** is rebuilt each epoch from its dataset and settings (batch size,
  sampler, ``collate_fn``, ``num_workers``, ``pin_memory``, ``drop_last``, ``worker_init_fn``,
  ``prefetch_factor``…) with wdlab's generator; torch's random samplers are rebuilt with it too,
  any other sampler is used as it is (its draws from the global RNG are seeded as above).
  Workers are not persistent (each epoch's are seeded afresh). A factory
  ``make_loader(split, seed, epoch)`` gives the user the whole say (evaluation calls it with
  epoch 0). A bare Dataset is wrapped in ``DataLoader(ds, batch_size, shuffle=True)``.
* **Tensors** keep the in-memory fast path (:class:`TensorStream`): a permutation per epoch from
  one generator seeded once with ``seed``, epochs drawn in turn, the order the trainer has always
  used; ``indices(e)`` gives the index batches for a trainer that holds the tensors itself.
* **CUDA**: DataLoaders pin their batches and the copy is ``non_blocking``; nothing here reads
  a device value, so a step adds no host sync. Loading overlaps training through the
  DataLoader's workers and their prefetch.
* **Bad input** is one ``ValueError`` line: a batch that is not ``(x, y)``, inputs whose
  structure changes, a label outside the classes, a stream that ends before its length (its
  ``len()``, else its first epoch's count).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from wdlab.data.arrays import as_targets, check_labels, check_values
from wdlab.data.batches import (
    Batch,
    Inputs,
    Layout,
    apply,
    as_inputs,
    batch_of,
    rows,
    to_device,
)
from wdlab.data.loaders import FactorySource, LoaderSource, known_length
from wdlab.data.seeds import GlobalRandom, derive
from wdlab.progress import progress_bar

_END = object()


class StreamError(ValueError):
    """A stream's data went wrong while it was read; its message is one line.

    Raised for a bad batch, a label outside the classes, a stream that ended early. A sweep then
    stores nothing of the batch it was training (its runs go back to pending)."""


# -- streams --------------------------------------------------------------------------------------


class Stream:
    """One split as mini-batches ``(x, y)``, afresh each epoch (see the module docstring).

    ``layout``, ``targets`` (the targets' dtype) and ``n_classes`` are the data facts each batch
    is checked against and converted to; left ``None`` a batch is only checked to be ``(x, y)``.
    """

    def __init__(
        self,
        split: str,
        source: LoaderSource | FactorySource,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        layout: Layout | None = None,
        targets: torch.dtype | None = None,
        n_classes: int | None = None,
        progress: bool = False,
    ) -> None:
        self.split, self.source, self.seed = split, source, seed
        self.device = torch.device(device)
        self.layout, self.targets, self.n_classes = layout, targets, n_classes
        self.progress = progress
        self.classes_why = ""  # where n_classes came from, when the labels cannot say it
        self._seen: dict[str, int] = {}  # batches of the first full pass, where len() is unknown

    def __repr__(self) -> str:
        return f"Stream({self.split!r}, {self.batches or '?'} batches per epoch)"

    def to(self, device: torch.device | str) -> Stream:
        """The same stream with its batches on ``device`` (pinned first when it is CUDA)."""
        device = torch.device(device)
        source = self.source.pinned(device.type == "cuda")
        kw = {"layout": self.layout, "targets": self.targets, "n_classes": self.n_classes}
        copy = Stream(
            self.split, source, seed=self.seed, device=device, **kw, progress=self.progress
        )
        copy.classes_why = self.classes_why
        return copy

    def with_classes(self, n_classes: int, why: str = "") -> Stream:
        """The same stream, its labels checked against ``n_classes`` (``why``: where that
        count came from, said with a label outside it)."""
        copy = self.to(self.device)
        copy.n_classes, copy.classes_why = n_classes, why
        return copy

    @property
    def batch_size(self) -> int | None:
        """Examples per batch, when the stream has one size."""
        return self.source.batch_size

    @property
    def batches(self) -> int | None:
        """Mini-batches per training epoch, when known (``len()``, else a full epoch's count)."""
        return known_length(self.source.build(0)) or self._seen.get("epoch")

    @property
    def exact(self) -> bool:
        """Whether ``len()`` gives every epoch's batches exactly (an IterableDataset read by W
        workers may give up to W - 1 more or fewer: each ends its share with its own batch)."""
        return _worker_slack(self.source.build(0)) == 0

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Epoch ``epoch``'s mini-batches, in its own seeded order, transforms drawn afresh."""
        rng = GlobalRandom(derive(self.seed, self.split, "random", epoch))
        return self._batches(self.source.build(epoch), rng, f"epoch {epoch}", "epoch")

    def evaluation(self) -> Iterator[Batch]:
        """Every example once, in the same order and random state each time."""
        rng = GlobalRandom(derive(self.seed, self.split, "random", "evaluation"))
        return self._batches(self.source.build(None), rng, "evaluation", "evaluation")

    def _batches(
        self, iterable: Iterable[Any], rng: GlobalRandom, what: str, key: str
    ) -> Iterator[Batch]:
        expected = known_length(iterable) or self._seen.get(key)
        slack, items, seen = _worker_slack(iterable), _items(iterable), 0
        most = None if expected is None or self.split != "train" else expected + slack
        with rng.active():
            it = iter(iterable)
        bar = _bar(self.progress, expected, f"{self.split} {what}")
        n = 0
        try:
            while True:
                with rng.active():  # a sampler runs here, workers or not
                    raw = _next(it, f"data[{self.split!r}] batch {n} ({what})")
                if raw is _END:
                    break
                if most is not None and n == most:  # before training it (an endless stream)
                    raise _too_many(most, expected, what, slack)
                try:
                    batch = self._prepared(raw, f"data[{self.split!r}] batch {n} ({what})")
                except ValueError as exc:
                    raise StreamError(str(exc)) from None
                if items is not None:  # more: a dataset read once per worker
                    seen += rows(batch[0])
                    if seen > items:
                        raise _too_many_items(self.split, items, what)
                yield batch
                n += 1
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        self._ended(n, expected, what, key, slack)

    def _prepared(self, raw: object, where: str) -> Batch:
        x, y = batch_of(raw, where)
        if self.layout is not None:
            self.layout.check(x, where, None if self.split == "train" else "train")
        row = "row {} of that batch (a DataLoader's rows are not the dataset's indices)"
        check_values(f"{where} inputs", x, row)  # before float64 is rounded to float32
        x = as_inputs(x)
        if self.targets is not None:
            y = as_targets(where, y, self.targets)
        if self.n_classes is not None and y.device.type == "cpu":
            check_labels(where, y, self.n_classes, self.classes_why)  # binary: 2, in [0, 1]
        return to_device((x, y), self.device)

    def _ended(self, n: int, expected: int | None, what: str, key: str, slack: int) -> None:
        """``slack``: batches a length may miscount (an IterableDataset's workers each end
        their share with a batch of their own, which ``len(DataLoader)`` does not count)."""
        if n == 0:
            loader = getattr(self.source, "template", None)
            why = ""
            if getattr(loader, "drop_last", False):  # fewer examples than one batch
                why = f": drop_last=True dropped its one batch (< {loader.batch_size} examples)"
            raise StreamError(f"data[{self.split!r}] gave no batches ({what}){why}")
        if expected is not None and n < expected - slack:
            raise StreamError(
                f"data[{self.split!r}] ended early: {n} of {expected} batches ({what})"
            )
        self._seen.setdefault(key, n)


def _too_many(most: int, expected: int, what: str, slack: int) -> StreamError:
    """The refusal of a training stream giving more batches than its length says (the steps of
    an epoch, for lr schedules and ``steps=``, count from it), before the extra one trains."""
    shard = (
        f" (+{slack} for its workers' last batches); with workers, an IterableDataset must "
        "give each its own share of the items (torch.utils.data.get_worker_info()), or every "
        "worker yields them all"
        if slack
        else ""
    )
    return StreamError(
        f"data['train'] gave more than {most} batches, while its length (or its first epoch) "
        f"says {expected}{shard} ({what}): the schedule and steps count from that length; "
        "make len() match what it yields (an endless stream: end each epoch after len() "
        "batches, e.g. itertools.islice)"
    )


def _too_many_items(split: str, items: int, what: str) -> StreamError:
    """The refusal of an IterableDataset giving more items than its ``len()`` says."""
    return StreamError(
        f"data[{split!r}] gave more than the {items} items its IterableDataset's len() says "
        f"({what}): with workers, it must give each its own share of the items "
        "(torch.utils.data.get_worker_info()), or every worker yields them all; make len() "
        "match what it yields"
    )


def _iterable_dataset(iterable: Iterable[Any]) -> torch.utils.data.IterableDataset | None:
    """The IterableDataset a DataLoader reads, if it reads one."""
    ds = getattr(iterable, "dataset", None)
    return ds if isinstance(ds, torch.utils.data.IterableDataset) else None


def _items(iterable: Iterable[Any]) -> int | None:
    """The items a DataLoader over an IterableDataset with a ``len()`` gives an epoch."""
    ds = _iterable_dataset(iterable)
    return None if ds is None else known_length(ds)


def _worker_slack(iterable: Iterable[Any]) -> int:
    """How many batches more or fewer than ``len()`` a DataLoader over an IterableDataset with
    W workers may give: W - 1 (each worker's last batch is partial, or dropped); else 0."""
    if _iterable_dataset(iterable) is None:
        return 0
    return max(0, getattr(iterable, "num_workers", 0) - 1)


def _bar(progress: bool, total: int | None, desc: str) -> Any:
    if not progress:
        return None
    return progress_bar(total, desc, "batch")


class TensorStream:
    """A split held as tensors ``X`` and ``y``: the in-memory fast path.

    ``X`` is a tensor, a tuple or a dict of tensors. Each epoch is a permutation from one
    generator seeded once with ``seed``, epochs drawn in turn; ``batch_size=None`` gives the
    whole split as one batch."""

    def __init__(
        self,
        split: str,
        X: Inputs,
        y: Tensor,
        *,
        batch_size: int | None,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.split, self.seed, self.batch_size = split, seed, batch_size
        self.device = torch.device(device)
        self.X = apply(lambda t: t.to(self.device), as_inputs(X))
        self.y = y.to(self.device)
        self.layout = Layout.of(self.X)
        self.n = len(y)
        self._gen = torch.Generator(device="cpu").manual_seed(seed)
        self._next, self._perm = 0, torch.arange(0)

    def __repr__(self) -> str:
        return f"TensorStream({self.split!r}, {self.n} rows)"

    def to(self, device: torch.device | str) -> TensorStream:
        """The same split with its tensors on ``device`` (a fresh generator: the same orders)."""
        kw = {"batch_size": self.batch_size, "seed": self.seed, "device": device}
        return TensorStream(self.split, self.X, self.y, **kw)

    def with_classes(self, n_classes: int, why: str = "") -> TensorStream:
        """The same split, its labels checked against ``n_classes`` (all of them, at once)."""
        where = f"data[{self.split!r}]"
        check_labels(where, self.y.cpu(), n_classes, why or f"{n_classes} classes")
        return self

    @property
    def batches(self) -> int:
        """Mini-batches per epoch."""
        return 1 if self.batch_size is None else math.ceil(self.n / self.batch_size)

    def permutation(self, epoch: int) -> Tensor:
        """Epoch ``epoch``'s order of the rows (on the CPU: the same on every device)."""
        if epoch < self._next - 1 or epoch < 0:
            self._gen.manual_seed(self.seed)
            self._next = 0
        while self._next <= epoch:
            self._perm = torch.randperm(self.n, generator=self._gen)
            self._next += 1
        return self._perm

    def indices(self, epoch: int) -> Iterator[Tensor]:
        """Epoch ``epoch``'s mini-batches as row indices on the device (pinned, asynchronous)."""
        perm = self.permutation(epoch)
        if self.device.type == "cuda":
            perm = perm.pin_memory().to(self.device, non_blocking=True)
        size = self.batch_size or self.n
        for i in range(0, self.n, size):
            yield perm[i : i + size]

    exact = True  # a permutation of held rows: its length is every epoch's

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Epoch ``epoch``'s mini-batches ``(X[idx], y[idx])``."""
        if self.batch_size is None:
            yield self.X, self.y
            return
        for idx in self.indices(epoch):
            yield apply(lambda t, i=idx: t[i], self.X), self.y[idx]

    def evaluation(self) -> Iterator[Batch]:
        """The whole split as one batch (the trainer chunks large ones itself)."""
        yield self.X, self.y


def _next(it: Iterator[Any], where: str) -> Any:
    """The stream's next batch (``_END`` at its end); what the user's Dataset, sampler or
    collate_fn raises (in this process or a worker) is one :class:`StreamError` line."""
    try:
        return next(it, _END)
    except Exception as exc:
        raise StreamError(f"{where}: the data raised {raised(exc)}") from None


def raised(exc: Exception) -> str:
    """``Type: message`` (its first line) of what the user's data code raised; for a
    DataLoader worker's ("Caught Type in DataLoader worker process N." and the worker's
    traceback), the worker's own last line."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if lines and lines[0].startswith("Caught ") and "worker" in lines[0] and len(lines) > 1:
        return lines[-1]  # "ValueError: corrupt jpeg at 150"
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
