"""A user's own data: torch Datasets, DataLoaders, tensors or arrays, split by split.

``from_splits({"train": ..., "val": ..., "test": ...})`` reads each split once into memory (a
sweep trains every configuration on the same mini-batches, drawn from these tensors by a seeded
permutation: each mini-batch is loaded once and used by every configuration of a batch). A split
may be a map-style ``torch.utils.data.Dataset`` whose items are ``(x, y)``, a ``DataLoader`` (read
once, in its order), or an ``(X, y)`` pair of tensors or arrays. Without a validation split,
one is drawn from the training rows (seeded, 20%) and the data facts say so: weight decay is
never chosen on test.

Targets of an integer dtype are classes (multiclass: cross-entropy over the model's outputs);
floating targets are regression (MSE), unless ``task`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wdlab.data.arrays import check_values
from wdlab.data.dataset import Dataset
from wdlab.tasks import TASKS

MAX_BYTES = 8 << 30  # refuse to read more than 8 GiB of inputs into memory


def _pair(split: str, obj: Any) -> tuple[Tensor, Tensor]:
    """(X, y) of one split, from a Dataset, a DataLoader or an (X, y) pair."""
    if isinstance(obj, tuple | list) and len(obj) == 2:
        return _item(split, obj, 0)  # the whole split as one (X, y) pair
    if isinstance(obj, torch.utils.data.DataLoader):
        items = [_item(split, b, i) for i, b in enumerate(obj)]
        return torch.cat([x for x, _ in items]), torch.cat([y for _, y in items])
    if not hasattr(obj, "__getitem__") or not hasattr(obj, "__len__"):
        raise ValueError(
            f"data[{split!r}]: expected a map-style Dataset of (x, y), a DataLoader or an (X, y) "
            f"pair, got {type(obj).__name__}"
        )
    n = len(obj)
    if n == 0:
        raise ValueError(f"data[{split!r}] is empty")
    xs, ys = zip(*(_item(split, obj[i], i) for i in range(n)), strict=True)
    return torch.stack(xs), torch.stack(ys)


def _item(split: str, item: Any, i: int) -> tuple[Tensor, Tensor]:
    if not (isinstance(item, tuple | list) and len(item) == 2):
        raise ValueError(f"data[{split!r}] item {i} is {type(item).__name__}, not an (x, y) pair")
    x, y = (a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a)) for a in item)
    return x, y


def from_splits(
    splits: Mapping[str, Any], *, task: str | None = None, name: str = "data", seed: int = 0
) -> Dataset:
    """A Dataset from the user's train / val / test splits (see the module docstring)."""
    unknown = sorted(set(splits) - {"train", "val", "test"})
    if unknown or "train" not in splits or "test" not in splits:
        raise ValueError(
            "data must map 'train' and 'test' (and optionally 'val') to Datasets or (X, y); "
            f"got keys {sorted(splits)}"
        )
    pairs = {k: _pair(k, v) for k, v in splits.items()}
    for k, (X, y) in pairs.items():  # NaN, inf or beyond float32: refused, never trained on
        check_values(f"data[{k!r}] inputs", X)
        check_values(f"data[{k!r}] targets", y)
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
    size = sum(X.numel() * 4 for X, _ in pairs.values())
    if size > MAX_BYTES:
        raise ValueError(
            f"the inputs take {size / 2**30:.1f} GiB as float32; wdlab reads at most 8"
        )
    y_train = pairs["train"][1]
    task = task or ("regression" if y_train.is_floating_point() else "multiclass")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    as_y = (lambda y: y.long()) if task == "multiclass" else (lambda y: y.float())
    ys = {k: as_y(y) for k, (_, y) in pairs.items()}
    n_classes = int(max(int(y.max()) for y in ys.values()) + 1) if task == "multiclass" else 1
    return Dataset(
        name=name,
        task=task,
        X_train=pairs["train"][0].float(),
        y_train=ys["train"],
        X_val=pairs["val"][0].float(),
        y_val=ys["val"],
        X_test=pairs["test"][0].float(),
        y_test=ys["test"],
        n_classes=n_classes,
        meta=facts | {f"n_{k}": len(y) for k, y in ys.items()},
    )
