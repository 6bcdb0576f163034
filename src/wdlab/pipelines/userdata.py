"""A user's data in a sweep: splits streamed or held, the facts a model spec and a study's
identity take from them (sizes, fingerprint), and the classes of streamed data found without
a full read where the model can tell."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

from wdlab.data import Dataset, Stream, StreamedData, stream_splits
from wdlab.data.batches import call
from wdlab.data.streamed import count_classes
from wdlab.inputs import shapes
from wdlab.models import ModelSpec


def streamed_splits(
    splits: Mapping[str, Any], batch_size: int | None, n_classes: int | None, progress: bool
) -> StreamedData:
    """:func:`wdlab.data.stream_splits` for a sweep (the data seed 0); the classes are left
    unknown when they would need a full read (:func:`with_classes` finds them)."""
    if batch_size is None:
        raise ValueError(
            "batch_size=None (full batch) needs the splits as (X, y) tensors; give a batch "
            "size for Datasets and DataLoaders"
        )
    return stream_splits(
        splits, batch_size=batch_size, n_classes=n_classes, progress=progress, count_classes=False
    )


def with_classes(
    ds: Dataset | StreamedData, model: Any, timeout: float | None, resolve: Callable[..., Any]
) -> Any:
    """Streamed classification data whose classes are unknown: the model's output width (one
    build, one forward on the sample rows), unless the model needs the count to be built (a
    built-in kind, a factory with an ``out_dim`` parameter): then one counting pass.
    ``resolve(model, ds, timeout)`` gives the model's spec."""
    if not isinstance(ds, StreamedData) or ds.task != "multiclass" or ds.n_classes:
        return ds
    factory = model if callable(model) and not isinstance(model, ModelSpec) else None
    if factory is None or "out_dim" in _parameters(factory):
        counted = max(
            count_classes(k, s.source, s.seed, s.progress)
            if isinstance(s, Stream)
            else int(s.y.max()) + 1
            for k, s in ds.streams.items()
        )
        return ds.with_classes(max(counted, 1))
    spec, _ = resolve(model, ds, timeout)
    model, x = spec.build(0).eval(), ds.probe[0] if ds.probe else ds.example
    try:
        with torch.no_grad():
            out = call(model, x)
    except Exception as exc:  # the user's module on the user's data: one line
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(
            f"the model fails on inputs of shape {shapes(x)}: {type(exc).__name__}: {first}"
        ) from None
    width = out.shape[-1] if isinstance(out, torch.Tensor) and out.dim() else 0
    if width < 1:
        raise ValueError(f"the model's outputs have shape {tuple(out.shape)}: no classes")
    return ds.with_classes(int(width))


def _parameters(fn: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def data_sizes(ds: Dataset | StreamedData, builtin: bool = False) -> dict[str, Any]:
    """``in_dim``, ``out_dim`` and ``in_shape`` of a model spec for ``ds`` (inputs that are
    several tensors: ``in_dim`` 0, ``in_shape`` empty; a built-in kind refuses them in one
    line)."""
    if isinstance(ds, StreamedData) and ds.layout.kind != "tensor":
        if builtin:
            ds.layout.in_shape  # noqa: B018 - the one-line refusal
        return {"in_dim": 0, "out_dim": ds.out_dim, "in_shape": ()}
    return {"in_dim": ds.in_dim, "out_dim": ds.out_dim, "in_shape": ds.in_shape}


def data_identity(ds: Dataset | StreamedData) -> dict[str, Any]:
    """The data's part of a study's identity: its name, fingerprint and shape (streams: the
    seeded-sample fingerprint of :func:`wdlab.data.stream_splits`; tensors: hashed whole)."""
    if isinstance(ds, StreamedData):
        return {"name": ds.name, "fingerprint": ds.fingerprint, "shape": str(ds.layout)}
    digest = hashlib.sha256()
    for split, (X, y) in ds.splits().items():
        digest.update(split.encode())
        digest.update(X.detach().cpu().float().numpy().tobytes())
        digest.update(y.detach().cpu().numpy().tobytes())
    return {"name": ds.name, "fingerprint": digest.hexdigest()[:16], "shape": ds.in_shape}


def data_fingerprint(ds: Dataset | StreamedData) -> str:
    """The data's fingerprint (see :func:`data_identity`)."""
    return data_identity(ds)["fingerprint"]
