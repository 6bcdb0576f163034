"""A streamed data's fingerprint, the data's part of a study's identity (see
:mod:`wdlab.data.streamed`): each split's kind, settings and length, and sampled examples;
tensors held by a ``TensorDataset`` (also under ``Subset``, with the rows it takes) are hashed
whole, so a label fixed anywhere is other data."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Subset, TensorDataset

from wdlab.data.batches import Batch, parts


def fingerprint(
    sources: Mapping[str, Any], samples: Mapping[str, Batch], sizes: Mapping[str, int | None]
) -> str:
    """16 hex digits over each split's ``describe()``, size, sampled examples and held tensors."""
    digest = hashlib.sha256()
    for split, src in sources.items():
        digest.update(repr((split, src.describe(), sizes[split])).encode())
        x, y = samples[split]
        for t in [*parts(x), y, *held_tensors(getattr(src, "dataset", None))]:
            t = t.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # no copy: the buffer
    return digest.hexdigest()[:16]


def held_tensors(dataset: object) -> list[Tensor]:
    """A ``TensorDataset``'s tensors and, under ``Subset``\\ s, the rows each takes; none for
    any other dataset (it is sampled)."""
    taken: list[Tensor] = []
    while isinstance(dataset, Subset):
        taken.append(torch.as_tensor(dataset.indices, dtype=torch.long))
        dataset = dataset.dataset
    return [*dataset.tensors, *taken] if isinstance(dataset, TensorDataset) else []
