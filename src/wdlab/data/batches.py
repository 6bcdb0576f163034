"""One mini-batch ``(x, y)``: what ``x`` may be, how it reaches the model and the device.

``x`` is a tensor, a tuple of tensors (a model with several inputs: ``model(*x)``) or a dict of
tensors (``model(**x)``); ``y`` holds the targets. Inputs reach the model as it wants them:
integer inputs stay integer (token ids for an ``nn.Embedding``), floating inputs become
float32. Every check here reads shapes and types on the host, before a batch is copied to the
device, so none of them costs a device sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

Inputs = Tensor | tuple[Tensor, ...] | dict[str, Tensor]
Batch = tuple[Inputs, Tensor]


def parts(x: Inputs) -> list[Tensor]:
    """The tensors of ``x`` in order (one for a tensor, each element of a tuple or dict)."""
    if isinstance(x, Tensor):
        return [x]
    return list(x.values()) if isinstance(x, dict) else list(x)


def apply(fn: Callable[[Tensor], Tensor], x: Inputs) -> Inputs:
    """``fn`` applied to every tensor of ``x``, keeping its structure."""
    if isinstance(x, Tensor):
        return fn(x)
    if isinstance(x, dict):
        return {k: fn(v) for k, v in x.items()}
    return tuple(fn(v) for v in x)


def model_args(x: Inputs) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
    """(args, kwargs) that call a model on ``x``: ``model(x)``, ``model(*x)`` or ``model(**x)``."""
    if isinstance(x, Tensor):
        return (x,), {}
    if isinstance(x, dict):
        return (), dict(x)
    return tuple(x), {}


def call(model: Callable[..., Any], x: Inputs) -> Any:
    """``model`` on ``x``, a tensor, a tuple (``model(*x)``) or a dict (``model(**x)``)."""
    args, kwargs = model_args(x)
    return model(*args, **kwargs)


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


def rows(x: Inputs) -> int:
    """The number of examples in a batch of inputs (the first dimension of its tensors)."""
    first = parts(x)[0]
    return int(first.shape[0]) if first.dim() else 1


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

    def check(self, x: Inputs, where: str) -> None:
        """A one-line ``ValueError`` when ``x`` is not structured like the first batch (shapes
        may vary: sequences of another length)."""
        other = Layout.of(x)
        if (other.kind, other.names) != (self.kind, self.names):
            raise ValueError(f"{where}: inputs are {other.describe()}, the first were {self}")

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
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {len(obj)}"
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
    size = lambda t: int(t.shape[0]) if t.dim() else 1  # noqa: E731
    inputs = sorted({size(t) for t in parts(x)})
    if len(inputs) > 1 or inputs[0] != size(y):
        n_x = " or ".join(map(str, inputs))
        raise ValueError(f"{where}: {n_x} inputs but {size(y)} targets")
    return x, y
