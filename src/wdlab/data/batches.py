"""One mini-batch ``(x, y)``: what ``x`` may be, how it reaches the model and the device.

``x`` is a tensor, a tuple of tensors (a model with several inputs: ``model(*x)``) or a dict of
tensors (``model(**x)``); ``y`` holds the targets. Inputs reach the model as it wants them:
integer inputs stay integer (token ids for an ``nn.Embedding``), floating inputs become
float32. Every check here reads shapes and types on the host, before a batch is copied to the
device, so none of them costs a device sync.

The structure itself (``parts``, ``apply``, ``call``, ``rows``…) is :mod:`wdlab.inputs`, shared
with the engines; it is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wdlab.inputs import Inputs, apply, call, model_args, parts, rows, take

Batch = tuple[Inputs, Tensor]
__all__ = [
    "Batch",
    "Inputs",
    "Layout",
    "apply",
    "as_inputs",
    "batch_of",
    "call",
    "model_args",
    "pair",
    "parts",
    "rows",
    "take",
    "to_device",
]


def as_inputs(x: Inputs) -> Inputs:
    """Floating inputs as float32; integer and boolean inputs unchanged."""
    return apply(lambda t: t.float() if t.is_floating_point() else t, x)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch on ``device``; asynchronous (``non_blocking``) from pinned memory on CUDA."""
    if device.type == "cpu":
        return batch
    x, y = batch
    move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    return apply(move, x), move(y)


@dataclass(frozen=True)
class Layout:
    """The structure of a split's inputs: a tensor, a tuple or a dict, each part's shape per
    example and dtype (read from one batch)."""

    kind: str  # "tensor", "tuple" or "dict"
    names: tuple[str, ...]  # the dict's keys, or "0", "1"… for a tuple; () for a tensor
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @classmethod
    def of(cls, x: Inputs) -> Layout:
        """The layout of a batch of inputs ``x`` (shapes without the batch dimension)."""
        kind = "tensor" if isinstance(x, Tensor) else "dict" if isinstance(x, dict) else "tuple"
        names = tuple(map(str, x)) if kind == "dict" else tuple(map(str, range(len(parts(x)))))
        ps = parts(x)
        return cls(
            kind,
            names if kind != "tensor" else (),
            tuple(tuple(p.shape[1:]) for p in ps),
            tuple(p.dtype for p in ps),
        )

    def check(self, x: Inputs, where: str, split: str | None = None) -> None:
        """A one-line ``ValueError`` when ``x`` is not structured like the first batch, or like
        split ``split``'s inputs, which this layout was read from (shapes may vary: sequences
        of another length)."""
        other = Layout.of(x)
        if (other.kind, other.names) == (self.kind, self.names):
            return
        if split is None:
            raise ValueError(f"{where}: inputs are {other.describe()}, the first were {self}")
        raise ValueError(
            f"{where}: inputs are {other.describe()}, data[{split!r}]'s were {self}: every split "
            "must give its inputs the same way (the same collate_fn)"
        )

    @property
    def in_shape(self) -> tuple[int, ...]:
        """One example's shape, for inputs that are a single tensor."""
        if self.kind != "tensor":
            raise ValueError(f"inputs are {self}: built-in model kinds take one tensor")
        return self.shapes[0]

    def describe(self) -> str:
        """E.g. ``tensor 3x32x32 float32`` or ``tuple (16 int64, 8 float32)``."""
        each = [
            "x".join(map(str, s)) + " " + str(d).removeprefix("torch.")
            for s, d in zip(self.shapes, self.dtypes, strict=True)
        ]
        if self.kind == "tensor":
            return f"tensor {each[0]}"
        if self.kind == "dict":
            each = [f"{k}: {e}" for k, e in zip(self.names, each, strict=True)]
            return "dict {" + ", ".join(each) + "}"
        return "tuple (" + ", ".join(each) + ")"

    __str__ = describe


def _what(obj: object) -> str:
    if type(obj) in (tuple, list):
        return f"a {type(obj).__name__} of {len(obj)}"
    if isinstance(obj, tuple | list):  # a namedtuple, a list subclass: named beside
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return f"a {kind} of {len(obj)} ({type(obj).__name__})"
    return type(obj).__name__


def pair(obj: object, where: str) -> tuple[Any, Any]:
    """``(x, y)`` from an item or a batch, else a one-line ``ValueError`` that says what it
    was (a tuple of the wrong arity: how several inputs are given)."""
    if isinstance(obj, tuple | list) and len(obj) == 2:
        return obj[0], obj[1]
    hint = ""
    if isinstance(obj, tuple | list) and len(obj) > 2:
        hint = ": a model with several inputs takes ((x1, x2, ...), y)"
    elif isinstance(obj, Mapping):
        hint = ": return (x, y), with x a dict for a model that takes keywords"
    raise ValueError(f"{where} is {_what(obj)}, not an (x, y) pair{hint}")


def _tensor(value: object, where: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray | int | float | bool | np.generic):
        return torch.as_tensor(np.asarray(value))
    raise ValueError(f"{where} holds {type(value).__name__}, not a tensor")


def batch_of(obj: object, where: str) -> Batch:
    """A checked batch ``(x, y)``: ``x`` a tensor, a tuple of tensors (lists become tuples) or
    a dict of tensors, ``y`` a tensor, every part with the same number of examples."""
    x, y = pair(obj, where)
    if isinstance(x, Mapping):
        x = {str(k): _tensor(v, f"{where}: x[{k!r}]") for k, v in x.items()}
    elif isinstance(x, tuple | list):
        x = tuple(_tensor(v, f"{where}: x[{i}]") for i, v in enumerate(x))
    else:
        x = _tensor(x, f"{where}: x")
    y = _tensor(y, f"{where}: y")
    if not parts(x):
        raise ValueError(f"{where}: x is an empty {type(x).__name__}")
    if not y.dim():
        hint = "one example, not a batch: a DataLoader with batch_size=None?"
        raise ValueError(f"{where}: its target is one number ({hint})")
    size = lambda t: int(t.shape[0]) if t.dim() else 1  # noqa: E731
    inputs = sorted({size(t) for t in parts(x)})
    if len(inputs) > 1 or inputs[0] != size(y):
        n_x = " or ".join(map(str, inputs))
        raise ValueError(f"{where}: {n_x} inputs but {size(y)} targets")
    return x, y
