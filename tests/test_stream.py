"""Streams (wdlab.data.stream, wdlab.data.streamed): a user's splits as mini-batches produced
afresh each epoch, seeded by wdlab, memory independent of the data's size."""

import random
import warnings
from collections import Counter, namedtuple

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

import wdlab
from wdlab.data import from_splits, stream_splits
from wdlab.data.batches import call, rows
from wdlab.data.seeds import derive
from wdlab.data.stream import TensorStream

# -- datasets written the way users write them ----------------------------------------------------


class Augmented(Dataset):
    """(x + noise, y): the noise is a fresh draw from torch's global RNG on every call (a random
    transform); ``calls`` counts __getitem__ per index."""

    def __init__(self, n: int = 40, d: int = 6, noise: float = 0.1, offset: int = 0) -> None:
        g = torch.Generator().manual_seed(offset)
        self.X = torch.randn(n, d, generator=g)
        self.y = (self.X[:, 0] > 0).long()
        self.noise = noise
        self.calls: Counter = Counter()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        self.calls[i] += 1
        return self.X[i] + self.noise * torch.randn(self.X.shape[1]), self.y[i]


class Lazy(Dataset):
    """n 3x32x32 images made in __getitem__ from the index (nothing held but 10 prototypes)."""

    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.offset, self.calls = n, offset, 0
        self.protos = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.calls += 1
        g = torch.Generator().manual_seed(self.offset + i)
        y = int(torch.randint(0, 10, (), generator=g))
        return self.protos[y] + 2.0 * torch.randn(3, 32, 32, generator=g), y


class Noisy(IterableDataset):
    """An IterableDataset of n examples with random noise (``length``: what __len__ claims)."""

    def __init__(self, n: int = 30, length: int | None = None) -> None:
        self.n, self.length = n, length

    def __iter__(self):
        for i in range(self.n):
            yield torch.full((4,), float(i)) + torch.rand(4), i % 3


class Claims(Noisy):
    def __len__(self) -> int:
        return self.length


def splits(train, n_val: int = 12, n_test: int = 12) -> dict:
    return {"train": train, "val": Augmented(n_val, offset=1), "test": Augmented(n_test, offset=2)}


def collect(batches) -> list[tuple]:
    return [(x.clone() if isinstance(x, torch.Tensor) else x, y.clone()) for x, y in batches]


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


# -- fresh augmentation, one read per example per epoch --------------------------------------------


def test_getitem_is_called_once_per_example_per_epoch():
    ds = Augmented(40)
    data = stream_splits(splits(ds), batch_size=8, n_classes=2)
    ds.calls.clear()
    for e in range(3):
        seen = sum(rows(x) for x, _ in data.streams["train"].epoch(e))
        assert seen == 40 and ds.calls == Counter(dict.fromkeys(range(40), e + 1))
    ds.calls.clear()
    assert sum(rows(x) for x, _ in data.streams["train"].evaluation()) == 40
    assert ds.calls == Counter(dict.fromkeys(range(40), 1))


class Indexed(Augmented):
    """Augmented, labelled with the example's index."""

    def __getitem__(self, i: int):
        return super().__getitem__(i)[0], i


def test_two_epochs_see_different_augmented_inputs():
    """Every example in epochs 0 and 1 gets another random transform: its noise differs."""
    ds = Indexed(32)
    stream = stream_splits(splits(ds), batch_size=8, n_classes=32).streams["train"]
    noise = []
    for e in range(2):
        x, i = (torch.cat(t) for t in zip(*stream.epoch(e), strict=True))
        assert sorted(i.tolist()) == list(range(32))
        noise.append((x - ds.X[i])[i.argsort()])
    assert noise[0].abs().max() < 1 and (noise[0] - noise[1]).abs().min() > 0


def test_same_seed_same_batches_whatever_the_caller_draws_between_them():
    """A stream's batches depend on (seed, split, epoch) only: the caller may draw any amount
    from torch's, Python's and NumPy's global RNGs between batches (K configurations' Dropout
    masks, or one), and its own RNG state is left as it was."""

    def run(draws: int) -> list[tuple]:
        data = stream_splits(splits(Augmented(50)), batch_size=8, seed=3, n_classes=2)
        out = []
        for e in range(2):
            for batch in data.streams["train"].epoch(e):
                out.append(batch)
                torch.randn(draws), random.random(), np.random.rand(draws)
        return out

    assert same(run(1), run(1000))
    torch.manual_seed(0)
    before = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    stream = stream_splits(splits(Augmented(50)), batch_size=8, n_classes=2).streams["train"]
    list(stream.epoch(0))
    after = torch.get_rng_state(), random.getstate(), np.random.get_state()[1]
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    assert np.array_equal(before[2], after[2])
    other = stream_splits(splits(Augmented(50)), batch_size=8, seed=4, n_classes=2)
    assert not same(run(1)[:7], collect(other.streams["train"].epoch(0)))


class DrawsEverywhere(Augmented):
    """Augmented, its transform drawing from torch's, Python's and NumPy's global RNGs."""

    def __getitem__(self, i: int):
        x, y = super().__getitem__(i)
        return x + random.random() + float(np.random.rand()), y


def test_the_readmes_recipe_replays_a_stream_in_a_plain_loop():
    """The README says how to replay epoch e of a split in one's own loop: the sampler's
    generator from derive(seed, split, "order", e), the global random state from
    derive(seed, split, "random", e) (NumPy's mod 2**32)."""
    ds = DrawsEverywhere(40)
    stream = stream_splits(splits(ds), batch_size=8, seed=3, n_classes=2).streams["train"]
    for e in (0, 2):
        r = derive(3, "train", "random", e)
        torch.manual_seed(r), random.seed(r), np.random.seed(r % 2**32)
        order = torch.Generator().manual_seed(derive(3, "train", "order", e))
        plain = collect(DataLoader(ds, batch_size=8, shuffle=True, generator=order))
        assert same(collect(stream.epoch(e)), plain)


def test_a_copy_for_another_device_gives_the_same_batches():
    data = stream_splits(splits(Augmented(30)), batch_size=8, n_classes=2)
    moved = data.to("cpu")
    for k in ("train", "val"):
        assert same(collect(data.streams[k].epoch(1)), collect(moved.streams[k].epoch(1)))
    assert data.example.shape == (1, 6) and data.streams["train"].batch_size == 8
    X, y = torch.randn(20, 2), torch.arange(20) % 2
    tensors = stream_splits({"train": (X, y), "test": (X, y)}).to("cpu")
    assert tensors.streams["train"].batch_size == 128 and tensors.meta["n_train"] == 16


def test_shuffled_multiworker_dataloader_gives_the_same_batches_twice():
    """DataLoader(shuffle=True, num_workers=2), no generator: re-seeded by wdlab (one warning
    line), the same batches from two separate calls, another order in the next epoch."""

    def run() -> list[list[tuple]]:
        loader = DataLoader(Augmented(48), batch_size=8, shuffle=True, num_workers=2)
        with pytest.warns(UserWarning, match=r"no generator; wdlab re-seeds its order") as w:
            data = stream_splits(splits(loader), n_classes=2)
        assert len([m for m in w if "re-seeds" in str(m.message)]) == 1
        return [collect(data.streams["train"].epoch(e)) for e in range(2)]

    torch.manual_seed(1)
    first = run()
    torch.manual_seed(2)  # the caller's RNG state does not matter
    second = run()
    assert same(first[0], second[0]) and same(first[1], second[1])
    assert not same(first[0], first[1])
    assert all(len(y) == 8 for _, y in first[0]) and len(first[0]) == 6


def test_the_dataloaders_settings_are_kept():
    """Batch size, drop_last and collate_fn come from the user's DataLoader."""
    seen = []

    def collate(items):
        seen.append(len(items))
        return torch.stack([x for x, _ in items]) * 2, torch.stack([y for _, y in items])

    ds = Augmented(30, noise=0.0)
    loader = DataLoader(ds, batch_size=7, drop_last=True, collate_fn=collate)
    stream = stream_splits(splits(loader), n_classes=2).streams["train"]
    batches = collect(stream.epoch(0))
    assert [len(y) for _, y in batches] == [7, 7, 7, 7] and stream.batches == 4
    assert torch.equal(batches[0][0], ds.X[:7] * 2)  # sequential sampler kept, collate used
    assert [len(y) for _, y in stream.evaluation()] == [7, 7, 7, 7, 2]  # evaluation: all


def test_make_loader_factory():
    calls = []

    def make_loader(split, seed, epoch):
        calls.append((split, seed, epoch))
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        return DataLoader(Augmented(20, offset=1), batch_size=5, shuffle=True, generator=g)

    data = stream_splits({"train": make_loader, "val": make_loader, "test": make_loader}, seed=7)
    assert data.task == "multiclass" and data.n_classes == 2
    first = collect(data.streams["train"].epoch(3))
    calls.clear()
    assert same(first, collect(data.streams["train"].epoch(3)))
    assert calls == [("train", 7, 3)]


def _every_split_loader(split, seed, epoch):
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    offset = {"train": 1, "val": 2, "test": 3}[split]
    return DataLoader(Augmented(20, offset=offset), batch_size=5, shuffle=True, generator=g)


def test_one_make_loader_is_the_factory_of_every_split():
    """``stream_splits(make_loader)`` and ``from_splits(make_loader)`` give what the same
    factory given for train, val and test gives; another callable is one line naming the
    factory form (it was ``TypeError: 'function' object is not iterable``)."""
    every = {k: _every_split_loader for k in ("train", "val", "test")}
    one, mapped = stream_splits(_every_split_loader, seed=7), stream_splits(every, seed=7)
    assert one.fingerprint == mapped.fingerprint and one.meta == mapped.meta
    for k in ("train", "val", "test"):
        assert same(collect(one.streams[k].epoch(1)), collect(mapped.streams[k].epoch(1)))
    held_one, held_mapped = from_splits(_every_split_loader), from_splits(every)
    assert torch.equal(held_one.X_val, held_mapped.X_val)
    assert torch.equal(held_one.y_test, held_mapped.y_test)
    _one_line(
        r"^data is make_data, a callable that does not take \(split, seed, epoch\): a callable "
        r"given as data is make_loader\(split, seed, epoch\), the factory of every split",
        lambda: stream_splits(make_data),
    )


def make_data():
    return {}


def test_evaluation_is_in_a_fixed_order_and_the_same_every_time():
    ds = Augmented(30)
    loader = DataLoader(ds, batch_size=8, shuffle=True, drop_last=True)
    with pytest.warns(UserWarning):
        stream = stream_splits(splits(loader), n_classes=2).streams["train"]
    a, b = collect(stream.evaluation()), collect(stream.evaluation())
    assert same(a, b)
    assert torch.equal(torch.cat([y for _, y in a]), ds.y)  # every example once, in order


@pytest.mark.parametrize(
    "sampler",
    [
        lambda ds: torch.utils.data.WeightedRandomSampler(torch.linspace(0.1, 1.0, len(ds)), 50),
        lambda ds: torch.utils.data.RandomSampler(ds, replacement=True),
        lambda ds: torch.utils.data.RandomSampler(ds, num_samples=12),
    ],
    ids=["weighted", "replacement", "num_samples"],
)
def test_evaluation_reads_every_example_once_whatever_torchs_sampler_draws(sampler):
    """Before: a WeightedRandomSampler's evaluation read 50 rows (a weighted resample), and
    ``num_samples=12`` evaluated 12 of 30 examples; the README says every example once."""
    ds = Augmented(30)
    loader = DataLoader(ds, batch_size=8, sampler=sampler(ds))
    stream = stream_splits(splits(loader), n_classes=2).streams["train"]
    ds.calls.clear()
    ys = torch.cat([y for _, y in stream.evaluation()])
    assert torch.equal(ys, ds.y) and ds.calls == Counter(dict.fromkeys(range(30), 1))


class LazyRandomBatches(torch.utils.data.Sampler):
    """Batches of indices drawn with Python's ``random`` when the loader asks for the next."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __iter__(self):
        for _ in range(len(self)):
            yield random.sample(range(self.n), self.size)

    def __len__(self) -> int:
        return self.n // self.size


def test_a_sampler_drawing_from_pythons_random_is_seeded_with_workers_too():
    """Before: with ``num_workers=2`` only torch's generator was the stream's own around each
    read, so a batch sampler drawing from ``random`` followed the caller's state (the same
    sweep gave other numbers; batched and ``max_batch=1`` differed)."""

    def run(caller: int) -> list[tuple]:
        random.seed(caller)
        loader = DataLoader(Augmented(48), batch_sampler=LazyRandomBatches(48, 8), num_workers=2)
        data = stream_splits(splits(loader), n_classes=2)
        return collect(data.streams["train"].epoch(0))

    first, second = run(1), run(2)
    assert same(first, second) and len(first) == 6


class Sharded(IterableDataset):
    """n examples with a length, each worker yielding its own share (or all, ``shard=False``)."""

    def __init__(self, n: int, shard: bool = True) -> None:
        self.n, self.shard = n, shard

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        start, step = (info.id, info.num_workers) if info and self.shard else (0, 1)
        for i in range(start, self.n, step):
            yield torch.full((4,), float(i)), i % 3


def test_a_sharded_iterable_dataset_may_give_a_partial_batch_per_worker():
    """Before: 160 items in 2 workers' shares of 80, batches of 32, gave 6 batches where
    ``len(DataLoader)`` says 5 and were refused ("make len() match what it yields"): each
    worker ends its share with a partial batch, as a plain loop trains them. Every item is read
    once; an IterableDataset that does not shard is still refused, and told why."""
    loader = DataLoader(Sharded(160), batch_size=32, num_workers=2)
    stream = stream_splits(splits(loader), n_classes=3).streams["train"]
    batches = collect(stream.epoch(0))
    assert len(batches) == 6 and sorted(torch.cat([x[:, 0] for x, _ in batches]).tolist()) == [
        float(i) for i in range(160)
    ]
    said = r"gave more than the 160 items its IterableDataset's len\(\) says .*get_worker_info"
    for size in (32, 160):  # one batch in all: the batches' count could not tell
        twice = DataLoader(Sharded(160, shard=False), batch_size=size, num_workers=2)
        stream = stream_splits(splits(twice), n_classes=3).streams["train"]
        with pytest.raises(ValueError, match=said):
            collect(stream.epoch(0))
        with pytest.raises(ValueError, match=said):
            collect(stream.evaluation())  # evaluation too: each example once
    data = {"train": loader, "val": Sharded(30), "test": Sharded(30)}
    kw = {"weight_decay": [0.0], "n_classes": 3}
    (run,) = wdlab.sweep(lambda: nn.Linear(4, 3), data, epochs=2, **kw).runs
    assert run.status == "done" and run.epochs == 2
    with pytest.raises(ValueError, match=r"steps= counts an epoch's steps from len\(DataLoader\)"):
        wdlab.sweep(lambda: nn.Linear(4, 3), data, steps=8, **kw)  # it went 2 epochs past 8


class Endless(IterableDataset):
    """A stream that never ends (bounded here only as a safety net), claiming 40 items."""

    def __init__(self) -> None:
        self.read = 0

    def __len__(self) -> int:
        return 40

    def __iter__(self):
        for i in range(10**6):
            self.read += 1
            yield torch.full((4,), float(i % 7)), i % 3


def test_an_endless_stream_is_refused_at_the_batch_past_its_length():
    """Before: the refusal came when the epoch ended, so an endless stream with a length trained
    forever, silently. Now the batch past the length is refused before it trains."""
    ds = Endless()
    stream = stream_splits(splits(DataLoader(ds, batch_size=8)), n_classes=3).streams["train"]
    with pytest.raises(ValueError, match=r"gave more than 5 batches, .*itertools\.islice"):
        collect(stream.epoch(0))
    assert ds.read <= 6 * 8 + 32  # the sample read first, then 6 batches


# -- inputs as the model wants them --------------------------------------------------------------


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 3)

    def forward(self, ids, scale):
        return self.lin(self.emb(ids).mean(1) * scale)


def test_integer_tuple_and_dict_inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10, (24, 5), generator=g)
    scale = torch.rand(24, 1, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=g)
    as_tuple = [((ids[i], scale[i]), y[i]) for i in range(24)]
    as_dict = [({"ids": ids[i], "scale": scale[i]}, y[i]) for i in range(24)]
    model = TwoInputs()
    for items, kind in [(as_tuple, "tuple"), (as_dict, "dict")]:
        data = stream_splits({"train": items, "val": items[:8], "test": items[:8]}, batch_size=6)
        assert data.layout.kind == kind and data.n_classes == 3
        x, yb = next(iter(data.streams["train"].epoch(0)))
        parts = list(x.values()) if kind == "dict" else list(x)
        assert parts[0].dtype == torch.int64 and parts[1].dtype == torch.float32
        assert call(model, x).shape == (6, 3) and yb.dtype == torch.int64
    tokens = stream_splits({"train": (ids, y), "test": (ids, y)}, batch_size=8)
    assert isinstance(tokens.streams["train"], TensorStream)
    assert next(iter(tokens.streams["train"].epoch(0)))[0].dtype == torch.int64
    floats = stream_splits(splits(TensorDataset(ids.double(), y)), batch_size=8)
    assert next(iter(floats.streams["train"].epoch(0)))[0].dtype == torch.float32


def test_from_splits_keeps_integer_inputs_and_reads_independently_of_the_callers_rng():
    g = torch.Generator().manual_seed(0)
    ids, y = torch.randint(0, 10, (30, 5), generator=g), torch.randint(0, 3, (30,), generator=g)
    assert from_splits({"train": TensorDataset(ids, y), "test": (ids, y)}).X_train.dtype == (
        torch.int64
    )
    read = []
    for state in (1, 2):
        torch.manual_seed(state)
        read.append(from_splits(splits(Augmented(20))).X_train)
    assert torch.equal(read[0], read[1])  # same tensors: the same study fingerprint


def test_an_iterable_dataset_streams_and_needs_a_validation_split():
    data = stream_splits({"train": Noisy(30), "val": Noisy(9), "test": Noisy(9)}, batch_size=8)
    stream = data.streams["train"]
    assert data.n_classes == 3 and data.meta["n_train"] is None
    assert same(collect(stream.epoch(1)), collect(stream.epoch(1)))
    assert not same(collect(stream.epoch(0)), collect(stream.epoch(1)))  # fresh noise
    assert [len(y) for _, y in stream.epoch(2)] == [8, 8, 8, 6] and stream.batches == 4
    with pytest.raises(ValueError, match=r"data\['val'\] is needed"):
        stream_splits({"train": Noisy(30), "test": Noisy(9)})


def test_without_validation_split_the_rows_from_splits_would_pick():
    ds = Augmented(50, noise=0.0)
    data = stream_splits({"train": ds, "test": ds}, batch_size=50)
    held = from_splits({"train": ds, "test": ds})
    x_val = torch.cat([x for x, _ in data.streams["val"].evaluation()])
    assert "no validation split" in data.meta["val"] and data.meta["n_val"] == 10
    assert torch.equal(x_val, held.X_val) and data.meta["n_train"] == 40


# -- facts without a full read ---------------------------------------------------------------------


def test_facts_read_a_sample_unless_classes_must_be_counted():
    ds = Augmented(200)
    stream_splits(splits(ds), n_classes=2)
    assert sum(ds.calls.values()) == 32  # the sample, nothing more
    ds.calls.clear()
    ds.targets = ds.y  # declared, as torchvision's datasets do
    assert stream_splits(splits(ds)).n_classes == 2 and sum(ds.calls.values()) == 32
    del ds.targets
    ds.calls.clear()
    assert stream_splits(splits(ds)).n_classes == 2 and sum(ds.calls.values()) == 232
    reg = TensorDataset(torch.randn(20, 3), torch.randn(20))
    data = stream_splits({"train": reg, "test": reg})
    assert data.task == "regression" and data.out_dim == 1 and data.in_shape == (3,)


def test_fingerprint_ignores_the_callers_rng_and_follows_the_data():
    prints = []
    for state in (1, 2):
        torch.manual_seed(state)
        prints.append(stream_splits(splits(Augmented(40)), n_classes=2).fingerprint)
    assert prints[0] == prints[1]
    assert stream_splits(splits(Augmented(41)), n_classes=2).fingerprint != prints[0]
    shifted = Augmented(40)
    shifted.X = shifted.X + 1
    assert stream_splits(splits(shifted), n_classes=2).fingerprint != prints[0]
    batched = DataLoader(Augmented(40), batch_size=5)
    assert stream_splits(splits(batched), n_classes=2).fingerprint != prints[0]


def test_a_tensordatasets_fingerprint_reads_every_row():
    """A new-user trial: one training label fixed in a 200-row TensorDataset left its
    fingerprint (32 sampled rows) as it was, so the same command into the same folder showed
    the old study's numbers as this data's."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 4, generator=g), torch.randint(0, 2, (200,), generator=g)
    fixed = y.clone()
    fixed[7] = 1 - fixed[7]

    def fp(labels, loader=False):
        ds = TensorDataset(x, labels)
        train = DataLoader(ds, batch_size=16) if loader else ds
        return stream_splits({"train": train, "val": ds, "test": ds}).fingerprint

    assert fp(y) == fp(y.clone()) and fp(y, True) == fp(y.clone(), True)
    assert fp(fixed) != fp(y) and fp(fixed, True) != fp(y, True)


@pytest.mark.parametrize("given", ["auto val", "subset"])
def test_a_tensordataset_under_subset_is_fingerprinted_whole(given):
    """The final review: the rows of a TensorDataset under ``Subset`` (the user's, or the 20%
    validation split wdlab takes without ``val``) were sampled, not hashed whole: a label fixed
    at an unsampled row was the same data."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 4, generator=g), torch.randint(0, 2, (200,), generator=g)

    test = TensorDataset(x, y)  # the same whatever the training labels

    def fp(labels, rows=range(200)):
        ds = TensorDataset(x, labels)
        if given == "auto val":
            return stream_splits({"train": ds, "test": test}).fingerprint
        return stream_splits({"train": Subset(ds, list(rows)), "test": test}).fingerprint

    for row in range(0, 200, 37):
        fixed = y.clone()
        fixed[row] = 1 - fixed[row]
        assert fp(fixed) != fp(y), row
    assert fp(y) == fp(y.clone())
    if given == "subset":
        assert fp(y, range(150)) != fp(y, range(1, 151))


def test_concatenated_tensordatasets_and_a_samplers_rows_are_fingerprinted():
    """The final review: a label fixed in a ConcatDataset of TensorDatasets (also under
    Subset), or another SubsetRandomSampler's rows or WeightedRandomSampler's weights, left
    the fingerprint as it was: another training resumed this one's study."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 4, generator=g), torch.randint(0, 2, (200,), generator=g)
    test = TensorDataset(x, y)

    def fp(train):
        return stream_splits({"train": train, "val": test, "test": test}).fingerprint

    def concat(labels):
        return ConcatDataset(
            [TensorDataset(x[:100], labels[:100]), TensorDataset(x[100:], labels[100:])]
        )

    fixed = y.clone()
    fixed[151] = 1 - fixed[151]
    assert fp(concat(fixed)) != fp(concat(y)) == fp(concat(y.clone()))
    assert fp(Subset(concat(fixed), range(200))) != fp(Subset(concat(y), range(200)))
    ds = TensorDataset(x, y)
    rows = [DataLoader(ds, 8, sampler=SubsetRandomSampler(r)) for r in (range(150), range(50, 200))]
    assert fp(rows[0]) != fp(rows[1])
    w = torch.ones(200)
    weighted = [DataLoader(ds, 8, sampler=WeightedRandomSampler(v, 200)) for v in (w, w.cumsum(0))]
    assert fp(weighted[0]) != fp(weighted[1])


def test_tensor_stream_keeps_the_trainers_order():
    """Epoch e's order is the e-th permutation of one generator seeded once (the trainer's fast
    path), in any order of access."""
    X, y = torch.randn(20, 3), torch.arange(20) % 2
    stream = TensorStream("train", X, y, batch_size=6, seed=5)
    g = torch.Generator().manual_seed(5)
    perms = [torch.randperm(20, generator=g) for _ in range(3)]
    for e in (2, 0, 1, 1, 2):
        assert torch.equal(stream.permutation(e), perms[e])
        assert torch.equal(torch.cat([y for _, y in stream.epoch(e)]), y[perms[e]])
    assert stream.batches == 4


# -- memory independent of the data's size --------------------------------------------------------


def _kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def test_a_100k_lazily_generated_dataset_streams_in_bounded_memory():
    """100,000 3x32x32 examples (1.2 GB as float32): 20 steps of 256 read 5,120 of them, and
    the process's peak resident memory grows by less than 100 MiB.

    The bound: one batch is 3 MiB; the stream holds the batch being collated, the one yielded
    and its items (under 10 MiB), and glibc/torch keep freed chunks for reuse; 100 MiB is 12x
    below the 1.2 GB that stacking the split takes (the peak today's in-memory read reaches).
    The peak is read from /proc/self/status (VmHWM, reset through /proc/self/clear_refs; where
    that is not allowed, the largest VmRSS seen after each step)."""
    train = Lazy(100_000)
    data = {"train": train, "val": Lazy(2_000, 10**6), "test": Lazy(2_000, 2 * 10**6)}
    streams = stream_splits(data, batch_size=256, n_classes=10)
    assert train.calls == 32  # the facts read a sample, not the split
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := VmRSS
        field = "VmHWM"
    except OSError:
        field = "VmRSS"
    start, peak = _kib("VmRSS"), 0
    for step, (x, _) in enumerate(streams.streams["train"].epoch(0)):
        assert x.shape == (256, 3, 32, 32)
        peak = max(peak, _kib(field))
        if step == 19:
            break
    assert train.calls == 32 + 20 * 256
    assert (peak - start) / 1024 < 100, f"peak RSS grew by {(peak - start) / 1024:.0f} MiB"


def test_from_splits_refuses_more_than_8_gib_before_reading():
    huge = Lazy(3_000_000)  # 36.6 GB as float32
    with pytest.raises(ValueError, match=r"the inputs take 34\.3 GiB in memory; wdlab reads"):
        from_splits({"train": huge, "test": Lazy(10)})
    assert huge.calls == 1


# -- bad input: one line --------------------------------------------------------------------------


def _one_line(match: str, fn) -> None:
    with pytest.raises(ValueError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_bad_streams_are_one_line():
    ds = Augmented(20)
    bad_collate = DataLoader(ds, batch_size=4, collate_fn=lambda items: {"x": 1})
    _one_line(
        r"data\['train'\]: the collate_fn's batch is dict, not an \(x, y\) pair",
        lambda: stream_splits(splits(bad_collate), n_classes=2),
    )
    triples = [(torch.zeros(2), torch.zeros(2), 0)] * 4
    _one_line(
        r"item 0 is a tuple of 3, not an \(x, y\) pair: a model with several inputs takes",
        lambda: stream_splits(splits(triples)),
    )
    Ex = namedtuple("Ex", "x y w")  # said as a tuple, its class beside ("is a Ex of 3" before)
    _one_line(
        r"item 0 is a tuple of 3 \(Ex\), not an \(x, y\) pair",
        lambda: stream_splits(splits([Ex(torch.zeros(2), 0, 1.0)] * 4)),
    )
    claims = {"train": Claims(30, length=50), "val": Noisy(9), "test": Noisy(9)}
    short = stream_splits(claims, batch_size=8, n_classes=3)
    _one_line(
        r"data\['train'\] ended early: 4 of 7 batches \(epoch 0\)",
        lambda: list(short.streams["train"].epoch(0)),
    )
    _one_line(
        r"data\['train'\] batch 0 \(epoch 0\): label 1 is outside 0\.\.0",
        lambda: list(stream_splits(splits(ds), n_classes=1).streams["train"].epoch(0)),
    )
    _one_line(r"data\['train'\]: expected a map-style Dataset", lambda: stream_splits(splits(5)))
    _one_line(r"data: the train split is empty", lambda: stream_splits(splits([])))
    for d in (6, 1):  # a new-user trial: "6 inputs but 1 targets" said nothing of why, and
        # a checking helper: one feature passed as "1 input", to fail in the model
        one = DataLoader(Augmented(20, d=d), batch_size=None)
        _one_line(
            r"data\['train'\] batch 0: its target is one number \(one example, not a batch: a "
            r"DataLoader with batch_size=None\?\)$",
            lambda one=one: stream_splits(splits(one), n_classes=2),
        )


def test_items_of_different_shapes_are_one_line_naming_the_split():
    """Items the default collate_fn cannot stack (a RuntimeError of torch's) are one line
    naming the split and what torch said, for a Dataset and for a user's DataLoader."""
    ragged = [(torch.zeros(8 if i < 10 else 4), i % 2) for i in range(20)]
    for train in (ragged, DataLoader(ragged, batch_size=16)):
        _one_line(
            r"^data\['train'\]: its collate_fn raised RuntimeError: stack expects each tensor",
            lambda t=train: stream_splits(splits(t), batch_size=16, n_classes=2),
        )


def test_nan_in_a_streamed_batch_names_its_row_of_that_batch():
    """A NaN in a streamed batch is named by its row of that batch (the dataset's index is not
    known there), and said to be a row, not an item. (Here item 5 turns NaN after its first
    read: read among the sample of each split, NaN is refused there, naming the item.)"""

    class LaterNaN(Dataset):
        def __init__(self) -> None:
            self.reads: Counter = Counter()

        def __len__(self) -> int:
            return 12

        def __getitem__(self, i: int):
            self.reads[i] += 1
            bad = i == 5 and self.reads[i] > 1
            return torch.full((3,), float("nan") if bad else 1.0), i % 2

    data = stream_splits(splits(DataLoader(LaterNaN(), batch_size=4)), n_classes=2)
    _one_line(
        r"^data\['train'\] batch 1 \(epoch 0\) inputs: 1 items hold NaN or infinite values "
        r"\(the first is row 1 of that batch \(a DataLoader's rows are not the dataset's",
        lambda: list(data.streams["train"].epoch(0)),
    )


def test_nan_read_first_through_a_collate_that_changes_the_rows_names_a_row():
    """A collate_fn that concatenates items of 3 rows each: a row of the sample is not an item,
    so the message names the row (it raised IndexError mapping rows to items)."""

    class Triples(Dataset):
        def __len__(self) -> int:
            return 20

        def __getitem__(self, i: int):
            x = torch.ones(3, 4)
            if i == 0:
                x[2, 1] = float("nan")
            return x, torch.full((3,), i % 2)

    def cat(items):
        return torch.cat([x for x, _ in items]), torch.cat([y for _, y in items])

    loader = DataLoader(Triples(), batch_size=4, collate_fn=cat)
    _one_line(
        r"^data\['train'\] \(20 items read first\) inputs: 1 items hold NaN or infinite values "
        r"\(the first is row 2 of the sample\)",
        lambda: stream_splits(splits(loader), n_classes=2),
    )


def test_a_sampler_with_a_generator_of_its_own_is_said_to_change_the_order():
    """A sampler wdlab cannot re-seed (not torch's, holding its own torch.Generator) is named
    in a warning, once: its order changes from run to run; torch's are re-seeded (said so)."""

    class OwnGen(torch.utils.data.Sampler):
        def __init__(self, n):
            self.n, self.g = n, torch.Generator()

        def __len__(self):
            return self.n

        def __iter__(self):
            return iter(torch.randperm(self.n, generator=self.g).tolist())

    items = [(torch.ones(3), i % 2) for i in range(12)]
    with pytest.warns(UserWarning, match=r"the DataLoader's sampler \(OwnGen\) draws from a gen"):
        stream_splits(splits(DataLoader(items, batch_size=4, sampler=OwnGen(12))), n_classes=2)
    g = torch.Generator().manual_seed(0)  # torch's sampler: re-seeded, said as replaced
    with pytest.warns(UserWarning, match="a generator of its own, which wdlab replaces"):
        stream_splits(splits(DataLoader(items, batch_size=4, shuffle=True, generator=g)),
                      n_classes=2)  # fmt: skip


def test_a_batch_size_a_dataloader_does_not_use_is_said():
    """``batch_size=`` batches Datasets and tensors; a DataLoader keeps its own: given another,
    it was dropped silently. Not given (the default), nothing is said."""
    import wdlab

    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 3, generator=g)
    items = [(X[i], int(X[i, 0] > 0)) for i in range(60)]
    y = (X[:, 0] > 0).long()
    data = {"train": DataLoader(items[:40], batch_size=10), "val": (X[40:50], y[40:50]),
            "test": (X[50:], y[50:])}  # fmt: skip
    kw = dict(weight_decay=[0.0], epochs=1, n_classes=2)
    unused = r"batch size 16 \(batch_size=, --batch-size\) is not used for data\['train'\]"
    with pytest.warns(UserWarning, match=unused + r": a DataLoader batches as it was made "
                      r"\(batch_size=10\)"):  # fmt: skip
        wdlab.sweep(lambda seed: nn.Linear(3, 2), data, batch_size=16, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wdlab.sweep(lambda seed: nn.Linear(3, 2), data, **kw)  # the default: nothing said
        wdlab.sweep(lambda seed: nn.Linear(3, 2), data, batch_size=10, **kw)


LOADERS = """
import torch
from torch.utils.data import DataLoader, TensorDataset

def make_data():
    X = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    y = (X[:, 0] > 0).long()
    part = lambda a, b: DataLoader(TensorDataset(X[a:b], y[a:b]), batch_size=10)
    return {"train": part(0, 40), "val": part(40, 50), "test": part(50, 60)}
"""


def test_the_command_line_says_a_batch_size_its_dataloaders_do_not_use(tmp_path, capsys):
    """``--batch-size 16`` with ``--data file.py:make_data`` returning DataLoaders: said, as
    ``wdlab.sweep`` says it (it was dropped without a word, and stored); not given, nothing."""
    from wdlab.cli import main

    (tmp_path / "loaders.py").write_text(LOADERS)
    flags = ["sweep", "--data", f"{tmp_path}/loaders.py:make_data", "--epochs", "1"]
    flags += ["--wd", "0", "--seeds", "1", "--json"]
    with pytest.warns(
        UserWarning,
        match=r"batch size 16 \(batch_size=, --batch-size\) is not used for data\['train'\]",
    ):
        assert main([*flags, "--out", str(tmp_path / "a"), "--batch-size", "16"]) == 0
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main([*flags, "--out", str(tmp_path / "b")]) == 0
    assert not [w for w in said if "is not used" in str(w.message)]


def test_inputs_that_change_structure_mid_stream_are_one_line():
    def make_loader(split, seed, epoch):
        return [(torch.zeros(2, 3), torch.zeros(2).long()), ((torch.zeros(2, 3),), torch.zeros(2))]

    data = stream_splits({"train": make_loader, "val": make_loader, "test": make_loader})
    _one_line(
        r"batch 1 \(epoch 0\): inputs are tuple \(3 float32\), the first were tensor 3 float32",
        lambda: list(data.streams["train"].epoch(0)),
    )
    _one_line(  # another split is held to the training split's inputs, and says so
        r"^data\['val'\] batch 1 \(evaluation\): inputs are tuple \(3 float32\), data\['train'\]'s "
        r"were tensor 3 float32: every split must give its inputs the same way",
        lambda: list(data.streams["val"].evaluation()),
    )


def test_splits_whose_inputs_come_differently_name_the_split_they_differ_from():
    """Only the training DataLoader's collate_fn makes a dict: the line names data['train'] as
    the split whose inputs were a dict (it said 'the first were'), and asks for one way."""

    def as_dict(items):
        xs, ys = zip(*items, strict=True)
        return {"x": torch.stack(xs)}, torch.stack(ys)

    train = DataLoader(Augmented(20), batch_size=5, collate_fn=as_dict)
    _one_line(
        r"^data\['val'\]: inputs are tensor 6 float32, data\['train'\]'s were dict \{x: 6 "
        r"float32\}: every split must give its inputs the same way \(the same collate_fn\)$",
        lambda: stream_splits(splits(train), n_classes=2),
    )


# -- CUDA ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_are_pinned_copies_without_a_host_sync():
    data = stream_splits(splits(Augmented(64)), batch_size=16, n_classes=2).to("cuda")
    stream = data.streams["train"]
    assert stream.source.build(0).pin_memory
    torch.cuda.set_sync_debug_mode("error")
    try:
        batches = list(stream.epoch(0))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(x.is_cuda and y.is_cuda for x, y in batches)


def test_an_empty_tensor_split_beside_datasets_is_refused_in_one_line(tmp_path):
    """Found by a new-user trial: an empty ``(X, y)`` split beside Dataset splits (streamed)
    reached training and failed in its evaluation ("cannot reshape tensor of 0 elements",
    "unexpected"); ``wdlab.sweep`` refused it only where every split was tensors."""
    X, y = torch.randn(10, 6), torch.zeros(10, dtype=torch.long)
    for split in ("train", "val", "test"):
        data = splits(Augmented()) | {split: (X[:0], y[:0])}
        with pytest.raises(ValueError, match=rf"^data: the {split} split is empty$"):
            stream_splits(data, batch_size=8)
    with pytest.raises(ValueError, match=r"^data: the val split is empty$"):
        wdlab.sweep("mlp", splits(Augmented()) | {"val": (X[:0], y[:0])}, out=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_a_drop_last_split_smaller_than_a_batch_is_evaluated_or_named(tmp_path):
    """Found by a checking helper: a DataLoader over 3 rows with ``batch_size=8,
    drop_last=True`` as the val split was "empty" to ``wdlab.sweep`` (its batches were
    counted) and was evaluated on its 3 rows from the command line. It holds examples, and
    evaluation reads every one; as the training split (no batch to train on) it is one line
    naming ``drop_last``, with nothing stored."""
    small = DataLoader(Augmented(3, offset=5), batch_size=8, drop_last=True)
    result = wdlab.sweep("mlp", splits(Augmented()) | {"val": small}, batch_size=8, epochs=1)
    assert all(r.status == "done" for r in result.runs)
    assert {round(r.final["val_acc"] * 3, 3) for r in result.runs} <= {0, 1, 2, 3}  # 3 rows
    said = r"^data\['train'\] gave no batches \(epoch 0\): drop_last=True dropped its one"
    with pytest.raises(ValueError, match=said):
        wdlab.sweep("mlp", splits(small), batch_size=8, epochs=1, out=tmp_path / "s")
    assert not (tmp_path / "s").exists()  # a new study that trained nothing is not left


def test_an_empty_dataloader_split_beside_datasets_is_refused_in_one_line(tmp_path):
    """Found by a checking helper: a DataLoader over an empty Dataset (beside Dataset splits)
    failed in ``torch.randperm(-1)`` while its sample was read ("unexpected") where the
    splits reached :func:`stream_splits` unchecked; an empty Dataset was refused there. Both
    are one line naming the split, and a sweep stores nothing."""
    for split in ("train", "val", "test"):
        for empty in ([], DataLoader([], batch_size=4)):
            with pytest.raises(ValueError, match=rf"^data: the {split} split is empty$"):
                stream_splits(splits(Augmented()) | {split: empty}, batch_size=8)
    for empty in (DataLoader([], batch_size=4), Subset(Augmented(), [])):  # a Subset's own length
        with pytest.raises(ValueError, match=r"^data: the val split is empty$"):
            data = splits(Augmented()) | {"val": empty}
            wdlab.sweep("mlp", data, out=tmp_path / "s", batch_size=8)
    assert not (tmp_path / "s").exists()
