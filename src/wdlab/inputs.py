"""A model's inputs: one tensor, a tuple of tensors (``model(*x)``) or a dict of tensors
(``model(**x)``), and how to call a model on them, count their rows, take some of them.

The leaf every layer shares (the data streams make such inputs, the engines run models on them,
:mod:`wdlab.func` calls a module on them under vmap); :mod:`wdlab.data.batches` checks them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

Inputs = Tensor | tuple[Tensor, ...] | dict[str, Tensor]


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


def rows(x: Inputs) -> int:
    """The number of examples in a batch of inputs (the first dimension of its tensors)."""
    first = parts(x)[0]
    return int(first.shape[0]) if first.dim() else 1


def take(x: Inputs, index: Any) -> Inputs:
    """Rows ``index`` (a slice or an index tensor) of every tensor of ``x``."""
    return apply(lambda t: t[index], x)


def shapes(x: Inputs) -> str:
    """One example's shape, for messages: ``(1, 16)``, or ``((8,), (8, 4))`` for several."""
    each = [tuple(t.shape[1:]) for t in parts(x)]
    return str(each[0]) if isinstance(x, Tensor) else str(tuple(each))
