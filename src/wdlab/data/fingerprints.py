"""A streamed data's fingerprint, the data's part of a study's identity (see
:mod:`wdlab.data.streamed`): each split's kind, settings and length, and sampled examples;
tensors held by a ``TensorDataset`` (also under ``Subset``, with the rows it takes, and
``ConcatDataset``) and a sampler's rows and weights are hashed whole, so a label fixed anywhere
is other data."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Subset, TensorDataset

from wdlab.data.batches import Batch, parts
from wdlab.data.loaders import inner_sampler


def fingerprint(
    sources: Mapping[str, Any], samples: Mapping[str, Batch], sizes: Mapping[str, int | None]
) -> str:
    """16 hex digits over each split's ``describe()``, size, sampled examples and held tensors."""
    digest = hashlib.sha256()
    for split, src in sources.items():
        digest.update(repr((split, src.describe(), sizes[split])).encode())
        x, y = samples[split]
        held = held_tensors(getattr(src, "dataset", None)) + _sampler_tensors(src)
        for t in [*parts(x), y, *held]:
            t = t.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy())  # no copy: the buffer
    return digest.hexdigest()[:16]


def held_tensors(dataset: object) -> list[Tensor]:
    """The tensors a dataset holds, hashed whole: a ``TensorDataset``'s, under ``Subset``.

    Under ``Subset`` the rows it takes join them; under ``ConcatDataset``, each part's. None
    for any other dataset (it is sampled)."""
    if isinstance(dataset, Subset):
        inner = held_tensors(dataset.dataset)
        return [*inner, torch.as_tensor(dataset.indices, dtype=torch.long)] if inner else []
    if isinstance(dataset, ConcatDataset):
        return [t for part in dataset.datasets for t in held_tensors(part)]
    return list(dataset.tensors) if isinstance(dataset, TensorDataset) else []


def _sampler_tensors(src: object) -> list[Tensor]:
    """The rows a DataLoader's sampler draws from (``SubsetRandomSampler``'s indices) and
    their weights (``WeightedRandomSampler``'s): other rows or weights are other training."""
    loader = getattr(src, "template", None)
    if loader is None:
        return []
    sampler = inner_sampler(loader)
    said = [getattr(sampler, k, None) for k in ("indices", "weights")]
    return [torch.as_tensor(v) for v in said if v is not None]
