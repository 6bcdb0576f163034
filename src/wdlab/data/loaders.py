"""What a split gives for an epoch: a user's DataLoader rebuilt with wdlab's generator
(:class:`LoaderSource`; a bare Dataset is wrapped in one), or the user's own
``make_loader(split, seed, epoch)`` (:class:`FactorySource`). See :mod:`wdlab.data.stream` for
the seeding they take part in."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from wdlab.data.seeds import derive
from wdlab.warn import warn_user

LoaderFactory = Callable[[str, int, int], Iterable[Any]]


# -- a user's DataLoader, rebuilt with wdlab's generator -----------------------------------------

_LOADER_PARAMS = set(inspect.signature(DataLoader).parameters)
_KEPT = (
    "num_workers",
    "collate_fn",
    "timeout",
    "worker_init_fn",
    "multiprocessing_context",
    "prefetch_factor",
    "pin_memory_device",
    "in_order",
)


def _settings(loader: DataLoader, generator: torch.Generator | None, pin: bool) -> dict:
    kw = {k: getattr(loader, k) for k in _KEPT if k in _LOADER_PARAMS and hasattr(loader, k)}
    return kw | {"generator": generator, "pin_memory": bool(loader.pin_memory or pin)}


def _seeded(sampler: Any, g: torch.Generator, evaluation: bool) -> Any:
    """torch's random samplers rebuilt with ``g``; for evaluation every example once in the
    plain order (a subset's in its own), whatever they draw (a shuffle, with replacement,
    weighted, ``num_samples``); any other sampler as it is."""
    kind = type(sampler)
    if kind is BatchSampler:
        inner = _seeded(sampler.sampler, g, evaluation)
        return BatchSampler(inner, sampler.batch_size, sampler.drop_last and not evaluation)
    if evaluation and kind is RandomSampler:
        return SequentialSampler(sampler.data_source)
    if evaluation and kind is WeightedRandomSampler:  # one weight per example
        return SequentialSampler(range(len(sampler.weights)))
    if kind is RandomSampler:
        n = getattr(sampler, "_num_samples", None)
        return RandomSampler(sampler.data_source, sampler.replacement, n, generator=g)
    if kind is SubsetRandomSampler:
        if evaluation:
            return [int(i) for i in sampler.indices]
        return SubsetRandomSampler(sampler.indices, generator=g)
    if kind is WeightedRandomSampler:
        return WeightedRandomSampler(
            sampler.weights, sampler.num_samples, sampler.replacement, generator=g
        )
    return sampler


def rebuild(
    loader: DataLoader, generator: torch.Generator, *, evaluation: bool = False, pin: bool = False
) -> DataLoader:
    """``loader`` anew with ``generator``: its dataset, batch size, sampler (re-seeded), collate_fn,
    workers, pin_memory and drop_last; ``evaluation``: every example once, in a fixed order;
    ``pin``: pinned batches (the device is CUDA)."""
    kw = _settings(loader, generator, pin)
    ds = loader.dataset
    drop_last = loader.drop_last and not evaluation
    if isinstance(ds, IterableDataset):
        return DataLoader(ds, batch_size=loader.batch_size, drop_last=drop_last, **kw)
    if loader.batch_size is None and loader.batch_sampler is not None:  # the user's own
        batches = _seeded(loader.batch_sampler, generator, evaluation)
        return DataLoader(ds, batch_sampler=batches, **kw)
    sampler = _seeded(loader.sampler, generator, evaluation)
    return DataLoader(ds, batch_size=loader.batch_size, sampler=sampler, drop_last=drop_last, **kw)


def over(loader: DataLoader, dataset: Any) -> DataLoader:
    """A DataLoader with ``loader``'s settings over another map-style ``dataset`` (shuffled when
    ``loader`` shuffles); a ``ValueError`` for a sampler it cannot carry over."""
    inner = loader.sampler
    if loader.batch_size is None or type(inner) not in (RandomSampler, SequentialSampler):
        raise ValueError(
            f"a DataLoader with a {type(inner).__name__} cannot lend 20% of its rows to "
            "validation: give data['val']"
        )
    kw = _settings(loader, loader.generator, False) | {"pin_memory": loader.pin_memory}
    shuffle = type(inner) is RandomSampler
    return DataLoader(
        dataset, batch_size=loader.batch_size, shuffle=shuffle, drop_last=loader.drop_last, **kw
    )


_RANDOM = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)  # torch's: re-seeded
_RESEEDED = (BatchSampler, *_RANDOM)


def own_generator(loader: DataLoader) -> str | None:
    """The class name of ``loader``'s sampler where it is not one of torch's that wdlab
    re-seeds and holds a ``torch.Generator`` of its own (its order then changes from run to
    run: wdlab seeds torch's global RNG, not that generator); else None."""
    sampler = loader.sampler if loader.batch_size is not None else loader.batch_sampler
    if type(sampler) is BatchSampler:
        sampler = sampler.sampler
    if type(sampler) in (*_RESEEDED, SequentialSampler):
        return None
    held = vars(sampler).values() if hasattr(sampler, "__dict__") else ()
    return type(sampler).__name__ if any(isinstance(v, torch.Generator) for v in held) else None


def inner_sampler(loader: DataLoader) -> Any:
    """The sampler ``loader`` draws its examples' order from (under its batch sampler)."""
    sampler = loader.sampler if loader.batch_size is not None else loader.batch_sampler
    return getattr(sampler, "sampler", sampler)


def warn_about_order(loader: DataLoader, seed: int) -> None:
    """Say how the training DataLoader's order is seeded where the user may not expect it: a
    shuffle with or without a generator (wdlab re-seeds it), a sampler wdlab cannot re-seed."""
    sampler = inner_sampler(loader)
    if type(sampler) is RandomSampler and sampler.generator is None:
        warn_user(
            "data['train']: the DataLoader's RandomSampler (shuffle=True) has no generator; "
            f"wdlab re-seeds its order every epoch from the data seed ({seed})"
        )
    elif type(sampler) in _RANDOM and sampler.generator is not None:  # the user's: replaced
        warn_user(
            f"data['train']: the DataLoader's {type(sampler).__name__} has a generator of its "
            "own, which wdlab replaces: its order is re-seeded every epoch from the data seed "
            f"({seed}), whatever that generator's seed (a make_loader(split, seed, epoch) "
            "factory keeps your own)"
        )
    own = own_generator(loader)
    if own:
        warn_user(
            f"data['train']: the DataLoader's sampler ({own}) draws from a generator of its "
            "own, which wdlab cannot re-seed: its order changes from run to run (and between "
            "configurations trained apart); draw from torch's global RNG (wdlab seeds it) or "
            "give a make_loader(split, seed, epoch) factory"
        )


def wrap(dataset: Any, batch_size: int | None, num_workers: int = 0) -> DataLoader:
    """A bare Dataset as a DataLoader: shuffled each epoch when map-style."""
    iterable = isinstance(dataset, IterableDataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=not iterable, num_workers=num_workers)


# -- sources: what a split gives for an epoch -----------------------------------------------------


class LoaderSource:
    """A split given as a DataLoader (a Dataset is wrapped in one): rebuilt each epoch with
    wdlab's generator."""

    def __init__(self, split: str, template: DataLoader, seed: int, pin: bool = False) -> None:
        self.split, self.template, self.seed, self.pin = split, template, seed, pin

    @property
    def dataset(self) -> Any:
        """The DataLoader's dataset."""
        return self.template.dataset

    @property
    def batch_size(self) -> int | None:
        """Examples per batch (``None``: the user's batch sampler decides)."""
        return self.template.batch_size

    def pinned(self, pin: bool) -> LoaderSource:
        """The same source, its batches pinned (for a CUDA device) or not."""
        return LoaderSource(self.split, self.template, self.seed, pin)

    def build(self, epoch: int | None) -> Iterable[Any]:
        """Epoch ``epoch``'s DataLoader (``None``: evaluation's)."""
        which = "evaluation" if epoch is None else epoch
        g = torch.Generator().manual_seed(derive(self.seed, self.split, "order", which))
        return rebuild(self.template, g, evaluation=epoch is None, pin=self.pin)

    def describe(self) -> dict[str, Any]:
        """The settings that change the batches (for the fingerprint)."""
        t = self.template
        sampler = t.batch_sampler if t.batch_size is None else t.sampler
        return {
            "dataset": _qualname(t.dataset),
            "batch_size": t.batch_size,
            "drop_last": t.drop_last,
            "sampler": _qualname(getattr(sampler, "sampler", sampler)),
            "collate_fn": _qualname(t.collate_fn),
            "num_workers": t.num_workers,
        }


def every_split(data: Any, what: str = "data") -> Any:
    """``data`` as splits: one ``make_loader(split, seed, epoch)`` is the factory of every split
    (train, val, test); any other callable (a class, a function of other arguments) is one
    ``ValueError`` line naming ``what`` it is; anything else is returned as it is."""
    if not callable(data) or isinstance(data, Mapping) or hasattr(data, "__getitem__"):
        return data
    if isinstance(data, type) or not _takes_split_seed_epoch(data):
        name = getattr(data, "__qualname__", type(data).__name__)
        raise ValueError(
            f"{what} is {name}, a callable that does not take (split, seed, epoch): a callable "
            "given as data is make_loader(split, seed, epoch), the factory of every split; "
            "else give {'train': ..., 'val': ..., 'test': ...}"
        )
    return {split: data for split in ("train", "val", "test")}


def _takes_split_seed_epoch(fn: Callable[..., Any]) -> bool:
    """Whether ``fn(split, seed, epoch)`` binds (a signature that cannot be read: assumed)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind("train", 0, 0)
    except TypeError:
        return False
    return True


class FactorySource:
    """A split given by the user's ``make_loader(split, seed, epoch)``."""

    dataset = None
    batch_size = None  # the factory's loaders decide

    def __init__(self, split: str, make_loader: LoaderFactory, seed: int) -> None:
        self.split, self.make, self.seed = split, make_loader, seed

    def pinned(self, pin: bool) -> FactorySource:
        """The same source (the factory's loaders pin, or not, as they were made)."""
        return self

    def build(self, epoch: int | None) -> Iterable[Any]:
        """What ``make_loader`` gives for ``epoch`` (evaluation: epoch 0)."""
        return self.make(self.split, self.seed, 0 if epoch is None else epoch)

    def describe(self) -> dict[str, Any]:
        """The factory's name (for the fingerprint)."""
        return {"make_loader": _qualname(self.make)}


def _qualname(obj: object) -> str:
    """A function's or class's dotted name; for any other object, its class's."""
    named = obj if isinstance(obj, type) or inspect.isroutine(obj) else type(obj)
    return f"{named.__module__}.{named.__qualname__}"


def known_length(iterable: Iterable[Any]) -> int | None:
    """``len(iterable)``, or ``None`` where it has no length."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


class BatchSize(int):
    """The default ``batch_size=`` of :func:`wdlab.sweep` and :func:`wdlab.optuna.optimize`:
    an int that says it was not given (a DataLoader's own batch size then says nothing)."""


#: 128, not given.
DEFAULT_BATCH_SIZE = BatchSize(128)


def unused_batch_size(data: object, size: object) -> None:
    """Warn where ``batch_size=`` was given and a split is a DataLoader of another batch size:
    a DataLoader batches as it was made (``batch_size=`` batches Datasets and tensors)."""
    if not isinstance(data, Mapping) or isinstance(size, BatchSize) or not size:
        return
    for split, loader in data.items():
        made = getattr(loader, "batch_size", None) if isinstance(loader, DataLoader) else None
        if made is not None and made != size:
            warn_user(
                f"batch size {size} (batch_size=, --batch-size) is not used for data[{split!r}]: "
                f"a DataLoader batches as it was made (batch_size={made}); the batch size "
                "batches Datasets and tensors"
            )
            return
