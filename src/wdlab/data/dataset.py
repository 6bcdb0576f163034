"""The in-memory data set: train / validation / test tensors plus the task kind."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


def target_width(y: Tensor | None) -> int:
    """Regression targets per example: 1 for targets of shape ``(n,)`` (or none read), else
    the product of their trailing dimensions (``(n, t)``: t)."""
    return 1 if y is None or y.dim() < 2 else math.prod(y.shape[1:])


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
    def in_shape(self) -> tuple[int, ...]:
        """One example's shape: ``(d,)`` for tables, ``(C, L)`` or ``(C, H, W)`` otherwise."""
        return tuple(self.X_train.shape[1:])

    @property
    def in_dim(self) -> int:
        """Number of input features (all of an example's values, for signals and images)."""
        return int(math.prod(self.in_shape))

    def __repr__(self) -> str:
        splits = ", ".join(f"{k} {len(v[1])}" for k, v in self.splits().items())
        shape = "x".join(map(str, self.in_shape))
        classes = f", {self.n_classes} classes" if self.task == "multiclass" else ""
        return f"Dataset({self.name!r}: {self.task}{classes}, inputs {shape}, rows {splits})"

    @property
    def out_dim(self) -> int:
        """Model outputs: the class count for multiclass, else the targets per example (1 for
        binary; several for regression targets of shape ``(n, t)``)."""
        return self.n_classes if self.task == "multiclass" else target_width(self.y_train)

    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """The available splits by name: train, val (if any), test."""
        out = {"train": (self.X_train, self.y_train)}
        if self.X_val is not None and self.y_val is not None:
            out["val"] = (self.X_val, self.y_val)
        out["test"] = (self.X_test, self.y_test)
        return out

    def with_train_rows(self, rows: Tensor, **facts: object) -> Dataset:
        """A copy that trains on the given training rows only (validation and test unchanged);
        ``facts`` are added to its ``meta``."""
        return Dataset(
            name=self.name,
            task=self.task,
            X_train=self.X_train[rows],
            y_train=self.y_train[rows],
            X_test=self.X_test,
            y_test=self.y_test,
            X_val=self.X_val,
            y_val=self.y_val,
            n_classes=self.n_classes,
            meta=self.meta | {"n_train": len(rows), **facts},
        )

    def flattened(self) -> Dataset:
        """A copy whose inputs are flat rows (n, d): what the built-in MLPs read."""
        moved = {
            k: (v.flatten(1) if k.startswith("X_") and isinstance(v, Tensor) else v)
            for k, v in self.__dict__.items()
        }
        return Dataset(**moved)

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor on ``device``."""
        moved = {
            k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in self.__dict__.items()
        }
        return Dataset(**moved)
