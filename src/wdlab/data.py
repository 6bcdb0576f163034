"""Data sets → train / validation / test tensors plus the task kind.

Every draw takes an explicit seed; nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

TASKS = ("binary", "multiclass", "regression")


@dataclass
class Dataset:
    """Splits as float32 tensors. ``y`` is float for binary/regression, long for multiclass.

    ``X_val``/``y_val`` may be ``None`` (the article's experiment has only train and test);
    ``meta`` carries facts about the data worth storing (e.g. the Bayes-optimal penalty).
    """

    name: str
    task: str
    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    X_val: Tensor | None = None
    y_val: Tensor | None = None
    n_classes: int = 1
    meta: dict = field(default_factory=dict)

    @property
    def in_dim(self) -> int:
        """Number of input features."""
        return int(self.X_train.shape[1])

    @property
    def out_dim(self) -> int:
        """Model outputs: 1 for binary and regression, the class count for multiclass."""
        return self.n_classes if self.task == "multiclass" else 1

    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The available splits by name: train, val (if any), test."""
        out = {"train": (self.X_train, self.y_train)}
        if self.X_val is not None and self.y_val is not None:
            out["val"] = (self.X_val, self.y_val)
        out["test"] = (self.X_test, self.y_test)
        return out

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor on ``device``."""
        moved = {
            k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()
        }
        return Dataset(**moved)


def shuffle_split(n: int, test_size: float = 0.33, random_state: int = 42) -> tuple[Tensor, Tensor]:
    """(train, test) indices exactly as ``sklearn.model_selection.train_test_split`` draws them.

    sklearn's ShuffleSplit takes ``RandomState(random_state).permutation(n)``, the first
    ``ceil(test_size·n)`` for test and the rest for train. Doing the same here keeps scikit-learn
    (and SciPy, ~60 MiB of resident memory) out of the demo; a test checks the equality.
    """
    n_test = math.ceil(test_size * n)
    perm = np.random.RandomState(random_state).permutation(n)
    return torch.from_numpy(perm[n_test:]), torch.from_numpy(perm[:n_test])


def seed_noise_tensors(dim: int = 1000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The article's X and y, drawn exactly as it draws them from torch's global RNG.

    ``torch.manual_seed(seed)`` then ``X = torch.randn((dim, dim), dtype=float64)``; y is
    ``dim//2`` zeros then ``dim - dim//2`` ones. The global RNG is left as the article leaves
    it, so a model built right after gets the article's initial weights.
    """
    torch.manual_seed(seed)
    X = torch.randn((dim, dim), dtype=torch.float64)
    y = torch.cat(
        (
            torch.zeros(dim // 2, dtype=torch.float64),
            torch.ones(dim - dim // 2, dtype=torch.float64),
        )
    )
    return X, y


def seed_noise(dim: int = 1000, seed: int = 0, test_size: float = 0.33) -> Dataset:
    """The article's data: a dim×dim N(0,1) matrix, half-0/half-1 labels, a 67/33 split.

    The split is ``train_test_split(test_size=0.33, random_state=42)`` as in the article; the
    labels are random with respect to X, so nothing can be learnt, only memorised.
    """
    if dim < 4:
        raise ValueError(f"dim must be >= 4, got {dim}")
    with torch.random.fork_rng(devices=[]):
        X, y = seed_noise_tensors(dim, seed)
    train, test = shuffle_split(dim, test_size, 42)
    return Dataset(
        name="seed-noise",
        task="binary",
        X_train=X[train].float(),
        y_train=y[train].float(),
        X_test=X[test].float(),
        y_test=y[test].float(),
        meta={"dim": dim, "seed": seed, "labels": "random (nothing to learn)"},
    )
