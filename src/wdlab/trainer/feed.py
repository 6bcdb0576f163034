"""The trainer's data path: how a training step gets its batch, and how evaluation iterates.

One interface, two feeds (:func:`make_feed` picks by the data given):

* :class:`TensorFeed`: a :class:`~wdlab.data.Dataset` held in memory on the device, the fast
  path for tensors: a step names its rows by index (one permutation per epoch from a generator
  seeded with the data seed, epochs drawn in turn), a full batch holds them all, and each split
  is evaluated in one pass (the engine chunks it). The Gram fast path and the hand-written
  engines read their held splits as before.
* :class:`StreamFeed`: a :class:`~wdlab.data.StreamedData` (Datasets, DataLoaders, iterables,
  factories): each epoch's mini-batches come from the training stream, read afresh (fresh
  augmentation), seeded by ``(seed, split, epoch)`` and with the model's random draws kept
  apart (:mod:`wdlab.data.stream`); each batch is read once and fed to every configuration of
  the batch; evaluation iterates each split's stream, so memory does not grow with the data.

Either way a step is given a :class:`Rows` and evaluation a sequence of them; :func:`evaluate`
turns a split's batches into each configuration's loss and metrics: the batches' means
weighted by their rows when the task's values are means (one batch: its values as they are),
else every output kept and the metrics computed once over the split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from wdlab.data import Dataset, StreamedData
from wdlab.inputs import Inputs, apply, rows, take
from wdlab.models import ModelSpec
from wdlab.tasks import Task
from wdlab.trainer.plan import Plan

Data = Dataset | StreamedData


@dataclass
class Rows:
    """One batch as an engine takes it: rows ``idx`` of the held split ``split`` (``None``: all
    of it), or the inputs ``x`` themselves (streamed); ``y`` its targets, ``n`` its rows."""

    split: str
    idx: Tensor | None
    x: Inputs | None
    y: Tensor
    n: int


class TensorFeed:
    """A Dataset in memory on ``device`` (see the module docstring)."""

    def __init__(
        self,
        data: Dataset,
        device: torch.device,
        flat: bool,
        floats: bool,
        batch_size: int | None,
        seed: int,
    ) -> None:
        self.device = device
        self.data = data.to(device)
        if flat and self.data.X_train.dim() > 2:
            self.data = self.data.flattened()  # built-in MLPs read signals and images flat
        if floats and not self.data.X_train.is_floating_point():  # built-in kinds: features
            self.data = _float_copy(self.data)
        self.y = self.data.y_train
        self.n = len(self.y)
        self.size = batch_size
        self.minibatch = batch_size is not None and batch_size < self.n
        self.shuffle = torch.Generator(device="cpu").manual_seed(seed)
        held = self.data.splits()
        self.splits = [k for k in held if k != "train"]
        self.X, self.eval_X = self.data.X_train, {k: held[k][0] for k in self.splits}
        self.targets = {k: v[1] for k, v in held.items()}

    def epoch(self, epoch: int) -> Iterator[Rows]:
        """Epoch ``epoch``'s batches: the whole split, or shuffled mini-batches (one
        permutation per epoch, drawn in turn from the generator seeded with the data seed; on
        the CPU, so every device trains on the same order)."""
        if not self.minibatch:
            yield Rows("train", None, None, self.y, self.n)
            return
        perm = torch.randperm(self.n, generator=self.shuffle)
        if self.device.type == "cuda":  # pinned and asynchronous: no host sync
            perm = perm.pin_memory().to(self.device, non_blocking=True)
        for i in range(0, self.n, self.size):
            idx = perm[i : i + self.size]
            yield Rows("train", idx, None, self.y[idx], min(self.size, self.n - i))

    def evaluation(self, split: str) -> Iterator[Rows]:
        """The whole split in one batch (the engine runs it in chunks)."""
        y = self.targets[split]
        yield Rows(split, None, None, y, len(y))

    def probe_batches(self, count: int = 64) -> list[tuple[Inputs, Tensor]]:
        """Two disjoint batches of training rows (one when there are fewer than 4 rows)."""
        return _two(self.X, self.y, count)

    def target_var(self, split: str) -> Tensor:
        """The variance of a split's targets (for R²; several targets: each about its mean)."""
        ys = self.targets[split]
        return (ys - ys.mean(0)).pow(2).mean()


def _float_copy(data: Dataset) -> Dataset:
    """``data`` with integer inputs as float32 (built-in engines read features as floats)."""
    moved = {
        k: (v.float() if k.startswith("X_") and isinstance(v, Tensor) else v)
        for k, v in data.__dict__.items()
    }
    return Dataset(**moved)


def _two(X: Inputs, y: Tensor, count: int) -> list[tuple[Inputs, Tensor]]:
    n = len(y)
    b = max(2, min(count, n // 2))
    if n < 4:
        return [(X, y)]
    return [(take(X, slice(0, b)), y[:b]), (take(X, slice(b, 2 * b)), y[b : 2 * b])]


class StreamFeed:
    """A StreamedData's streams, their batches on ``device`` (see the module docstring).
    ``flat``: inputs flattened per example (built-in MLPs); ``floats``: the engine reads one
    floating tensor (built-in kinds: integer inputs become float32, several are refused)."""

    minibatch = True

    def __init__(self, data: StreamedData, device: torch.device, flat: bool, floats: bool) -> None:
        self.device, self.flat, self.floats = device, flat, floats
        self.data = data.to(device)
        self.streams = self.data.streams
        self.splits = [k for k in self.streams if k != "train"]
        x, y = data.probe if data.probe is not None else (data.example, None)
        self.X = self._prepared(apply(lambda t: t.to(device), x))
        self.y = y.to(device) if y is not None else None
        self.eval_X: dict[str, Inputs] = {}
        self._moments: dict[str, list] = {}  # per split: [rows, Σy, Σy²] of its first pass
        self._done: set[str] = set()

    def _prepared(self, x: Inputs) -> Inputs:
        if not self.floats:
            return x
        if not isinstance(x, Tensor):
            raise ValueError(
                f"inputs are {self.data.layout}: built-in model kinds take one tensor; give a "
                "model factory for a model with several inputs"
            )
        x = x if x.is_floating_point() else x.float()
        return x.flatten(1) if self.flat and x.dim() > 2 else x

    def epoch(self, epoch: int) -> Iterator[Rows]:
        """Epoch ``epoch``'s mini-batches from the training stream, each read once."""
        for x, y in self.streams["train"].epoch(epoch):
            yield Rows("train", None, self._prepared(x), y, rows(x))

    def evaluation(self, split: str) -> Iterator[Rows]:
        """A split's batches: every example once, in a fixed order and random state."""
        first = split not in self._done
        for x, y in self.streams[split].evaluation():
            if first:
                self._moments_of(split, y)
            yield Rows(split, None, self._prepared(x), y, rows(x))
        self._done.add(split)

    def _moments_of(self, split: str, y: Tensor) -> None:
        m = self._moments.setdefault(split, [0, 0.0, 0.0])
        y64 = y.double().reshape(len(y), -1)  # one column per target
        m[0] += len(y)
        m[1] = m[1] + y64.sum(0)
        m[2] = m[2] + y64.pow(2).sum(0)

    def probe_batches(self, count: int = 64) -> list[tuple[Inputs, Tensor]]:
        """Batches of the training sample (the rows the stream's facts were read from)."""
        if self.y is None:
            return []
        return _two(self.X, self.y, count)

    def target_var(self, split: str) -> Tensor:
        """The variance of a split's targets, from its first evaluation pass (for R²)."""
        n, s1, s2 = self._moments.get(split, [0, 0.0, 0.0])
        if not n:
            return torch.tensor(math.nan, device=self.device)
        mean = s1 / n
        return torch.as_tensor(s2 / n - mean * mean, device=self.device).mean().float()


Feed = TensorFeed | StreamFeed


def make_feed(
    data: Data,
    device: torch.device,
    *,
    flat: bool,
    floats: bool,
    batch_size: int | None,
    seed: int,
) -> Feed:
    """The feed for ``data``: held tensors, or streams (see the module docstring)."""
    if isinstance(data, StreamedData):
        return StreamFeed(data, device, flat, floats)
    return TensorFeed(data, device, flat, floats, batch_size, seed)


class _Mean:
    """A mean over batches, weighted by their rows; one batch: its values as they are."""

    def __init__(self) -> None:
        self.first: Tensor | None = None
        self.total: Tensor | None = None
        self.n = 0

    def add(self, value: Tensor, n: int) -> None:
        if self.first is None:
            self.first, self.n = value, n
            return
        if self.total is None:
            self.total = self.first * self.n
        self.total = self.total + value * n
        self.n += n

    def value(self) -> Tensor:
        return self.first if self.total is None else self.total / self.n  # type: ignore[return-value]


def evaluate(
    batches: Iterable[Rows], forward: Callable[[Rows], Tensor], task: Task
) -> dict[str, Tensor]:
    """Each configuration's ``loss`` and metrics (K,) over one split, from its batches (see the
    module docstring)."""
    means: dict[str, _Mean] = {}
    outs: list[Tensor] = []
    ys: list[Tensor] = []
    for b in batches:
        out = forward(b)
        if not task.means:
            outs.append(out)
            ys.append(b.y)
            continue
        for name, v in _values(task, out, b.y).items():
            means.setdefault(name, _Mean()).add(v, b.n)
    if not task.means:
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return _values(task, out, ys[0] if len(ys) == 1 else torch.cat(ys))
    return {name: m.value() for name, m in means.items()}


def _values(task: Task, out: Tensor, y: Tensor) -> dict[str, Tensor]:
    values = {"loss": task.loss(out, y)}
    if task.eval_metrics is not None:
        values |= task.eval_metrics(out, y)
    return values


def in_dims(data: Data) -> tuple[int, int]:
    """(in_dim, out_dim) of the data for a model spec (in_dim 0 for several inputs)."""
    if isinstance(data, StreamedData) and data.layout.kind != "tensor":
        return 0, data.out_dim
    return data.in_dim, data.out_dim


def feed_for(plan: Plan, device: torch.device) -> tuple[ModelSpec, Feed]:
    """The plan's model spec sized to its data (where it has no sizes), and the feed its
    engine reads (flat or float inputs as the engine wants them)."""
    spec = plan.spec
    if spec.in_dim == 0:
        in_dim, out_dim = in_dims(plan.data)
        spec = replace(spec, in_dim=in_dim, out_dim=out_dim)
    kind = spec.model_kind.engine
    feed = make_feed(
        plan.data,
        device,
        flat=kind.flat_inputs,
        floats=kind.float_inputs,
        batch_size=plan.batch_size,
        seed=plan.shuffle_seed,
    )
    return spec, feed
